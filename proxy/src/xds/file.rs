//! `path_config_source`: LDS or CDS from a file holding a `DiscoveryResponse` (YAML or
//! JSON), reloaded when the file changes. Like Envoy, the file should be replaced by a
//! rename so that a reader never sees it half written; with `watched_directory`, any
//! change in that directory triggers a reload (Kubernetes ConfigMap symlink swaps).
//! An unchanged file is not applied again.

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use xds_client::ResourceType;

use crate::config::load::{self, UnknownFields};

/// A file's resources, ready to apply as one batch.
#[derive(Debug)]
pub struct FileUpdate {
    pub ty: ResourceType,
    pub path: PathBuf,
    pub version_info: String,
    pub resources: Vec<Any>,
}

/// Reads and decodes one file: every resource must be of type `ty`.
pub fn read(ty: ResourceType, path: &Path) -> Result<FileUpdate, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let value = load::parse_text(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    let (resp, _): (DiscoveryResponse, _) = load::decode(
        value,
        "envoy.service.discovery.v3.DiscoveryResponse",
        UnknownFields::Reject,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(FileUpdate {
        ty,
        path: path.to_owned(),
        version_info: resp.version_info,
        resources: resp.resources,
    })
}

/// Watches `path` (and `watched_directory`) and sends the file's content on `tx` at
/// start and after every change; stops when `tx` closes. Errors reading the file are
/// logged and the last good content stays applied.
pub fn watch(
    ty: ResourceType,
    path: PathBuf,
    watched_directory: Option<PathBuf>,
    tx: mpsc::Sender<FileUpdate>,
) -> Result<(), String> {
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let dir = watched_directory.clone().unwrap_or_else(|| {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let target = path.clone();
    let any_change = watched_directory.is_some();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let ours = ev
                .paths
                .iter()
                .any(|p| p == &target || p.file_name() == target.file_name());
            if any_change || ours {
                let _ = changed_tx.send(());
            }
        }
    })
    .map_err(|e| format!("cannot watch '{}': {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch '{}': {e}", dir.display()))?;
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut last = None;
        loop {
            match read(ty, &path) {
                Ok(update) => {
                    let digest = {
                        use std::hash::{Hash, Hasher};
                        let mut h = std::hash::DefaultHasher::new();
                        update.version_info.hash(&mut h);
                        for r in &update.resources {
                            r.value.hash(&mut h);
                        }
                        h.finish()
                    };
                    if last != Some(digest) {
                        last = Some(digest);
                        if tx.send(update).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot load {} file", ty.short_name()),
            }
            if changed.recv().await.is_none() {
                return;
            }
            // Coalesce the burst of events one replacement makes.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            while changed.try_recv().is_ok() {}
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(name: &str) -> PathBuf {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/envoy-configs/examples")
            .join(name);
        assert!(p.exists(), "shared test data missing: {}", p.display());
        p
    }

    /// Envoy's filesystem xDS example files load and every resource in them converts.
    #[test]
    fn the_envoy_example_files_load() {
        let cds = read(
            ResourceType::Cluster,
            &shared("dynamic-config-fs_configs_cds.yaml"),
        )
        .expect("cds file");
        assert_eq!(cds.resources.len(), 1);
        let c = super::super::convert::cluster(&cds.resources[0], 0).expect("cluster");
        assert_eq!(c.name, "example_proxy_cluster");
        let lds = read(
            ResourceType::Listener,
            &shared("dynamic-config-fs_configs_lds.yaml"),
        )
        .expect("lds file");
        let l = super::super::convert::listener(&lds.resources[0], 0).expect("listener");
        assert_eq!(l.name, "listener_0");
    }

    #[test]
    fn unreadable_and_malformed_files_are_errors_naming_the_file() {
        let e =
            read(ResourceType::Listener, Path::new("/nonexistent/lds.yaml")).expect_err("missing");
        assert!(e.contains("/nonexistent/lds.yaml"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lds.yaml");
        std::fs::write(&p, "resources: 7").expect("write");
        let e = read(ResourceType::Listener, &p).expect_err("malformed");
        assert!(e.contains("resources"), "{e}");
    }
}
