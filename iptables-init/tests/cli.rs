//! The `iptables-init` binary as a process, without privilege: `--dry-run` prints the
//! payload it would load, and bad flags are usage errors (exit 2) naming the flag.
//!
//! Being an integration test of this package also makes `cargo test --workspace` build
//! the binary, which the namespace tests in `tests/` run as a real process.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iptables-init"))
        .args(args)
        .env_remove("ISTIO_DUAL_STACK")
        .output()
        .expect("spawn iptables-init")
}

#[test]
fn dry_run_prints_the_nat_payload_and_applies_nothing() {
    let out = run(&[
        "--dry-run",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    for line in [
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    for (args, names) in [
        (&["--bogus"][..], "--bogus"),
        (&["--dry-run", "-p", "abc"][..], "--envoy-port"),
        (&["--dry-run", "-d", "15020,x"][..], "-d"),
        (&["--dry-run", "-i", "10.0.0.0/33"][..], "-i"),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(names),
            "{args:?} should name {names}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a payload");
    }
}
