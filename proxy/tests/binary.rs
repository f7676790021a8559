//! The `remora` binary starts and answers `--version`. (Having an integration test here
//! also makes `cargo test --workspace` build the binary that the end-to-end tests run.)

#[test]
fn version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_remora"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("remora  version: {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}
