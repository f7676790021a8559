//! Test support for Remora: the proxy started in-process or as a real process, Envoy for
//! differential tests, scripted upstream servers (HTTP/1.1, HTTP/2, gRPC, WebSocket, TCP)
//! and the clients that drive them.

pub mod client;
pub mod control_plane;
pub mod envoy;
pub mod grpc;
pub mod istio_iptables;
pub mod llhttp;
pub mod netns;
pub mod pod;
pub mod process;
pub mod proxy;
pub mod retry;
pub mod sidecar;
pub mod tls;
pub mod upstream;

/// The workspace root (where `Cargo.toml`, `examples/` and `../shared` are found).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

/// A file under `../shared/testdata`; panics with the path when it is missing, so a test
/// can never pass without its data.
pub fn testdata(rel: &str) -> std::path::PathBuf {
    let p = workspace_root().join("../shared/testdata").join(rel);
    assert!(
        p.exists(),
        "test data missing: {} (the shared test data must sit beside the workspace)",
        p.display()
    );
    p
}

/// Replaces `{{name}}` placeholders in a config template.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(
        !out.contains("{{"),
        "unreplaced placeholder in config:\n{out}"
    );
    out
}
