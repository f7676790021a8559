//! Dynamic configuration: the ADS stream (`xds-client`) and watched files feed one task
//! on the main thread that applies each response as a batch (`apply`), answers ACK or
//! NACK, and tracks warming and start-up.
//!
//! - `convert.rs`: resources (protobuf `Any`) to Remora's config types, errors naming the
//!   resource and field.
//! - `apply.rs` (+ `apply/clusters.rs`, `apply/listeners.rs`): the dynamic state.
//! - `file.rs`: `path_config_source`.
//! - `node.rs`: the `Node` sent to the control plane.
//! - `dump.rs`, `stats.rs`: what `/config_dump` and `/stats` show of it.

pub mod apply;
pub mod convert;
pub mod dump;
pub mod file;
pub mod node;
pub mod stats;
mod wire;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use xds_client::{Event, ResourceType, Target};

use crate::config::common::HostAddress;
use crate::config::dynamic::{AdsApi, ConfigSource, SourceKind};
use crate::server::Server;
use apply::{Applier, Batch, InitialFetch, Subscriber};
use file::FileUpdate;

/// Starts the dynamic sources the bootstrap names, on the current (main) runtime.
/// Returns `None` when the config is static; otherwise a receiver that fires once the
/// first CDS and LDS rounds (with their warming) are applied.
pub fn start(server: &Arc<Server>) -> Option<oneshot::Receiver<()>> {
    let dynamic = server.dynamic.clone()?;
    let (done_tx, done_rx) = oneshot::channel();
    let fetch = |s: &Option<ConfigSource>| s.as_ref().map(|s| s.initial_fetch_timeout);
    let initial = InitialFetch {
        cds: fetch(&dynamic.cds),
        lds: fetch(&dynamic.lds),
    };
    let uses_ads = [&dynamic.cds, &dynamic.lds]
        .iter()
        .any(|s| s.as_ref().is_some_and(|s| s.kind == SourceKind::Ads))
        || server
            .clusters
            .snapshot()
            .values()
            .any(|c| c.config.eds.is_some());
    let mut events = None;
    let mut subscriber: Option<Box<dyn Subscriber>> = None;
    if let (true, Some(ads)) = (uses_ads, &dynamic.ads) {
        match ads_config(server, ads) {
            Ok(config) => {
                let (handle, rx) = xds_client::spawn(config);
                subscriber = Some(Box::new(handle));
                events = Some(rx);
            }
            Err(e) => tracing::error!(error = %e, "cannot start the ADS client"),
        }
    }
    let (files_tx, files_rx) = mpsc::channel(4);
    for (ty, source) in [
        (ResourceType::Cluster, &dynamic.cds),
        (ResourceType::Listener, &dynamic.lds),
    ] {
        if let Some(ConfigSource {
            kind:
                SourceKind::Path {
                    path,
                    watched_directory,
                },
            ..
        }) = source
        {
            if let Err(e) = file::watch(
                ty,
                path.clone(),
                watched_directory.clone(),
                files_tx.clone(),
            ) {
                tracing::error!(error = %e, "cannot watch the {} file", ty.short_name());
            }
        }
    }
    drop(files_tx);
    let applier = Applier::new(server.clone(), subscriber, initial, done_tx);
    tokio::spawn(run(applier, events, files_rx, server.clone()));
    Some(done_rx)
}

fn ads_config(
    server: &Server,
    ads: &crate::config::dynamic::Ads,
) -> Result<xds_client::Config, String> {
    let cluster = server
        .clusters
        .get(&ads.cluster)
        .ok_or_else(|| format!("ADS cluster '{}' is not defined", ads.cluster))?;
    let endpoint = cluster
        .config
        .endpoints
        .first()
        .ok_or_else(|| format!("ADS cluster '{}' has no endpoints", ads.cluster))?;
    let target = match &endpoint.address {
        HostAddress::Ip(a) => Target::Tcp(a.to_string()),
        HostAddress::Unix(p) => Target::Unix(p.clone()),
        HostAddress::Name { host, port } => Target::Tcp(format!("{host}:{port}")),
    };
    Ok(xds_client::Config {
        target,
        api: match ads.api {
            AdsApi::StateOfTheWorld => xds_client::Api::StateOfTheWorld,
            AdsApi::Delta => xds_client::Api::Delta,
        },
        node: node::node(server),
        set_node_on_first_message_only: ads.set_node_on_first_message_only,
        channel: xds_client::transport::ChannelOptions {
            connect_timeout: Some(cluster.config.connect_timeout),
            keepalive: cluster.config.h2_keepalive,
        },
        backoff: xds_client::backoff::Backoff::default(),
        // Warming and start-up waits are timed by the applier, per resource.
        initial_fetch_timeout: None,
        // The applier keeps what it needs (and the config dump its own copy).
        keep_resources: false,
    })
}

async fn run(
    mut applier: Applier,
    mut events: Option<mpsc::Receiver<Event>>,
    mut files: mpsc::Receiver<FileUpdate>,
    server: Arc<Server>,
) {
    let mut quit = server.shutdown.watch();
    let mut files_open = true;
    let mut warmed = applier.take_warmed();
    loop {
        let deadline = applier.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let event = async {
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let file = async {
            if files_open {
                files.recv().await
            } else {
                std::future::pending().await
            }
        };
        let health_warmed = async {
            match warmed.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            w = health_warmed => match w {
                Some((name, state)) => applier.health_warmed(&name, &state),
                None => warmed = None,
            },
            ev = event => match ev {
                Some(ev) => on_event(&mut applier, ev),
                None => events = None,
            },
            f = file => match f {
                Some(f) => on_file(&mut applier, f),
                None => files_open = false,
            },
            _ = sleep => applier.expire(tokio::time::Instant::now()),
            _ = quit.signaled() => return,
        }
    }
}

fn on_event(applier: &mut Applier, ev: Event) {
    match ev {
        Event::Connected => {
            tracing::info!("connected to the control plane");
            applier.connected(true);
        }
        Event::Disconnected { reason, retry_in } => {
            tracing::warn!(%reason, ?retry_in, "control plane stream closed; serving the last good config");
            applier.connected(false);
        }
        Event::Update(u) => {
            let result = applier.apply(Batch {
                ty: u.ty,
                version_info: &u.version_info,
                resources: &u.resources,
                removed: &u.removed,
                complete: u.complete,
            });
            match result {
                Ok(()) => u.accept(),
                Err(message) => {
                    tracing::warn!(ty = u.ty.short_name(), version = %u.version_info, error = %message, "xDS update rejected");
                    u.reject(xds_client::Rejection { message });
                }
            }
        }
        // Fetch timeouts are timed per resource by the applier.
        Event::InitialFetchTimeout(_) => {}
    }
}

fn on_file(applier: &mut Applier, f: FileUpdate) {
    let result = applier.apply(Batch {
        ty: f.ty,
        version_info: &f.version_info,
        resources: &f.resources,
        removed: &[],
        complete: true,
    });
    match result {
        Ok(()) => {
            tracing::info!(path = %f.path.display(), version = %f.version_info, "{} file applied", f.ty.short_name())
        }
        Err(e) => {
            tracing::warn!(path = %f.path.display(), error = %e, "{} file rejected; keeping the last good config", f.ty.short_name())
        }
    }
}
