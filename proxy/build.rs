//! Compiles the Envoy v3 API protos into a descriptor set for JSON/YAML config loading.
//!
//! The `.proto` files come from the `envoy-types` crate (the same source its prost types
//! were generated from), so descriptors and Rust types always agree. The crate does not
//! export its directory, so we locate it in Cargo's registry by the version pinned in
//! `Cargo.lock`; `REMORA_ENVOY_PROTO_DIR` overrides this (vendored builds).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=REMORA_ENVOY_PROTO_DIR");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    let proto_root = env::var_os("REMORA_ENVOY_PROTO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(locate_envoy_types_protos);
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "googleapis",
        "protoc-gen-validate",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
        "ratelimit",
    ]
    .iter()
    .map(|p| proto_root.join(p))
    .chain(std::iter::once(PathBuf::from("proto")))
    .collect();

    let mut files = Vec::new();
    collect_protos(&proto_root.join("data-plane-api/envoy"), &mut files);
    // Service protos are skipped (the discovery ones are added below), and so is
    // `envoy/extensions/config/` (config validators): its package name shadows
    // `config.core.v3` for relative references elsewhere in the tree.
    files.retain(|f| {
        let s = f.to_string_lossy();
        !s.contains("/envoy/service/") && !s.contains("/envoy/extensions/config/")
    });
    files.push(PathBuf::from("proto/udpa/type/v1/typed_struct.proto"));
    files.push(PathBuf::from("proto/xds/type/v3/typed_struct.proto"));
    // Service protos carry the discovery request/response types the xDS client needs.
    for svc in ["discovery/v3/discovery.proto", "discovery/v3/ads.proto"] {
        files.push(proto_root.join("data-plane-api/envoy/service").join(svc));
    }
    let files_rel: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            includes
                .iter()
                .find_map(|inc| f.strip_prefix(inc).ok())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| f.clone())
        })
        .collect();

    // A handful of Envoy protos use relative type references (`common.x.v3.T` meaning
    // `envoy.extensions.common.x.v3.T`) that a strict resolver sends to a nearer
    // `...clusters.common` or `...filters.common` package once the whole tree is in one
    // pool. Such files get a build-time copy with those references fully qualified,
    // placed first on the include path.
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let patched = out.join("patched-protos");
    let mut includes = includes;
    includes.insert(0, patched.clone());
    let mut attempts = 0;
    let fds = loop {
        match protox::compile(&files_rel, &includes) {
            Ok(fds) => break fds,
            Err(e) if attempts < 64 => {
                attempts += 1;
                let Some(file) = e.file().map(str::to_string) else {
                    panic!(
                        "compiling Envoy protos from {}: {e:?}",
                        proto_root.display()
                    );
                };
                let src = includes[1..]
                    .iter()
                    .map(|inc| inc.join(&file))
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| panic!("{e:?}"));
                let text = fs::read_to_string(&src).expect("read proto");
                let fixed = qualify_common_refs(&text);
                if fixed == text {
                    panic!(
                        "compiling Envoy protos from {}: {e:?}",
                        proto_root.display()
                    );
                }
                let dest = patched.join(&file);
                fs::create_dir_all(dest.parent().expect("file has a parent")).expect("mkdir");
                fs::write(&dest, fixed).expect("write patched proto");
            }
            Err(e) => panic!(
                "compiling Envoy protos from {}: {e:?}",
                proto_root.display()
            ),
        }
    };
    let bytes = prost::Message::encode_to_vec(&fds);
    fs::write(out.join("envoy_descriptors.bin"), bytes).expect("write descriptor set");
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn locate_envoy_types_protos() -> PathBuf {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let lock = fs::read_to_string(manifest.join("../Cargo.lock")).expect("read Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("envoy-types in Cargo.lock");
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registry = cargo_home.join("registry/src");
    let name = format!("envoy-types-{version}");
    fs::read_dir(&registry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(&name).join("proto"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "cannot find {name}/proto under {}; set REMORA_ENVOY_PROTO_DIR",
                registry.display()
            )
        })
}

/// Rewrites ` common.<pkg>.v3.` type references to `.envoy.extensions.common.<pkg>.v3.`.
fn qualify_common_refs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("common.") {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let preceded_by_space = head.ends_with([' ', '(', '<', ',']);
        let is_ref = tail["common.".len()..]
            .split('.')
            .nth(1)
            .is_some_and(|v| v == "v3");
        if preceded_by_space && is_ref && !head.trim_end().ends_with("import") {
            out.push_str(".envoy.extensions.");
        }
        out.push_str("common.");
        rest = &tail["common.".len()..];
    }
    out.push_str(rest);
    out
}
