//! iptables-init against the real kernel, each test in network namespaces it creates:
//! every golden case's payload loads with `iptables-restore`; applying is idempotent;
//! `--cleanup` removes exactly what was added; a failure part-way leaves nothing; missing
//! tools, missing privilege and bad flags fail clearly with nothing applied; and
//! `--run-validation` proves redirection (and fails without it). Needs root: see
//! `tests::netns::root_or_skip`.

use std::io::Write;
use std::process::Stdio;

use iptables_init::capture;
use tests::istio_iptables::{case_settings, cases, run_init};
use tests::netns::{root_or_skip, Netns};

/// Feeds `payload` to `tool --noflush` in `ns`, with an /etc/group that also has the
/// group names the cases use (iptables resolves owner names itself).
fn restore_in(
    ns: &Netns,
    tool: &str,
    payload: &str,
    group_file: &std::path::Path,
) -> Result<(), String> {
    let script = format!(
        "mount --bind {} /etc/group && exec {tool} --noflush",
        group_file.display()
    );
    let mut child = ns
        .command("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload.as_bytes())
        .expect("write payload");
    let out = child.wait_with_output().expect("restore");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_golden_case_loads_into_the_kernel() {
    if !root_or_skip("every_golden_case_loads_into_the_kernel") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let group_file = dir.path().join("group");
    let mut groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups.push_str("java:x:4242:\n");
    std::fs::write(&group_file, groups).expect("group file");
    let cases = cases();
    assert_eq!(cases.len(), 14);
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let rules = capture::rules(&case_settings(case));
        let ns = Netns::new("golden");
        restore_in(&ns, "iptables-restore", &rules.v4.restore(), &group_file)
            .unwrap_or_else(|e| panic!("{name}: IPv4 payload refused: {e}"));
        let saved = ns.rules("iptables-save");
        assert!(saved.contains(":ISTIO_OUTPUT"), "{name}: {saved}");
        if rules.ipv6() {
            restore_in(&ns, "ip6tables-restore", &rules.v6.restore(), &group_file)
                .unwrap_or_else(|e| panic!("{name}: IPv6 payload refused: {e}"));
            assert!(
                ns.rules("ip6tables-save").contains(":ISTIO_OUTPUT"),
                "{name}"
            );
        }
    }
}

fn init(ns: &Netns, extra: &[&str]) -> std::process::Output {
    run_init(ns, &[], extra)
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apply_is_idempotent_and_cleanup_removes_exactly_what_it_added() {
    if !root_or_skip("apply_is_idempotent_and_cleanup_removes_exactly_what_it_added") {
        return;
    }
    let ns = Netns::new("apply");
    // Someone else's rules, which must survive everything below.
    ns.ok("iptables", &["-t", "nat", "-N", "KEEP"]);
    ns.ok("iptables", &["-t", "nat", "-A", "OUTPUT", "-j", "KEEP"]);
    ns.ok(
        "iptables",
        &["-t", "nat", "-A", "PREROUTING", "-i", "lo", "-j", "RETURN"],
    );
    let before = ns.rules("iptables-save");

    assert_ok(&init(&ns, &[]), "first apply");
    let once = ns.rules("iptables-save");
    assert!(once.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{once}");
    assert!(
        once.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{once}"
    );
    assert!(once.contains("--dport 15090 -j RETURN"), "{once}");
    assert_ok(&init(&ns, &[]), "second apply");
    assert_eq!(
        ns.rules("iptables-save"),
        once,
        "running twice leaves one set of rules"
    );

    // Changed settings replace the earlier set (no leftovers of the first).
    assert_ok(
        &init(&ns, &["-c", "eth7", "--drop-invalid"]),
        "apply with other flags",
    );
    let changed = ns.rules("iptables-save");
    assert_eq!(
        changed.matches("-A OUTPUT -j ISTIO_OUTPUT").count(),
        1,
        "{changed}"
    );
    assert!(changed.contains("-A OUTPUT -o eth7 -j RETURN"), "{changed}");
    assert!(changed.contains("ISTIO_DROP"), "{changed}");

    assert_ok(
        &init(&ns, &["-c", "eth7", "--drop-invalid", "--cleanup"]),
        "cleanup",
    );
    let after = ns.rules("iptables-save");
    // Cleanup leaves tables it touched present but empty of ours; compare the nat table
    // exactly and check no ISTIO chain remains anywhere.
    let nat = |s: &str| -> String {
        s.split("*nat")
            .nth(1)
            .and_then(|t| t.split("COMMIT").next())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        nat(&after),
        nat(&before),
        "cleanup restores the nat table exactly"
    );
    assert!(!after.contains("ISTIO"), "{after}");
    assert_ok(
        &init(&ns, &["--cleanup"]),
        "cleanup with nothing left is fine",
    );
}

#[test]
fn a_failure_part_way_leaves_nothing_applied() {
    if !root_or_skip("a_failure_part_way_leaves_nothing_applied") {
        return;
    }
    // IPv4 applies, then IPv6 cannot: its tools are missing from PATH. IPv4 is rolled back.
    let ns = Netns::new("rollback");
    ns.ok(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.1.1.1/32",
            "-j",
            "RETURN",
        ],
    );
    let before = ns.rules("iptables-save");
    let bin_dir = tempfile::tempdir().expect("tempdir");
    for tool in ["iptables", "iptables-save", "iptables-restore", "ip"] {
        let real = which(tool);
        std::os::unix::fs::symlink(&real, bin_dir.path().join(tool)).expect("symlink");
    }
    let path = format!("PATH={}", bin_dir.path().display());
    let out = run_init(
        &ns,
        &["env", &path, "ISTIO_DUAL_STACK=true"],
        &["-c", "eth5"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("IPv6 rules were not applied, and the tables were restored as they were")
            && stderr.contains("ip6tables-save was not found in PATH"),
        "{stderr}"
    );
    assert_eq!(ns.rules("iptables-save"), before, "IPv4 rules rolled back");
}

fn which(tool: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

#[test]
fn missing_tools_missing_privilege_and_bad_flags_fail_clearly_with_nothing_applied() {
    if !root_or_skip(
        "missing_tools_missing_privilege_and_bad_flags_fail_clearly_with_nothing_applied",
    ) {
        return;
    }
    let ns = Netns::new("errors");
    let before = ns.rules("iptables-save");
    let empty = tempfile::tempdir().expect("tempdir");
    let path = format!("PATH={}", empty.path().display());
    let out = run_init(&ns, &["env", &path], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("iptables-save was not found in PATH: install the iptables package"),
        "{stderr}"
    );

    // As an unprivileged user (nobody): refused, and said so.
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let out = run_init(&ns, &nobody, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("permission denied (run as root"),
        "{stderr}"
    );

    let bad: [(&[&str], &str); 5] = [
        (&["--bogus"], "--bogus"),
        (
            &["-i", "10.0.0.0/40"],
            "-i/--istio-service-cidr: '10.0.0.0/40' is not a CIDR",
        ),
        (
            &["-b", "80,http"],
            "-b/--istio-inbound-ports: 'http' is not a port",
        ),
        (
            &["-m", "NAT"],
            "-m/--istio-inbound-interception-mode: 'NAT' is not REDIRECT or TPROXY",
        ),
        (
            &["--cleanup", "--skip-rule-apply"],
            "--cleanup: conflicts with --skip-rule-apply",
        ),
    ];
    for (extra, want) in bad {
        let out = init(&ns, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
    assert_eq!(ns.rules("iptables-save"), before, "nothing applied");
}

#[test]
fn validation_proves_redirection_and_fails_without_it() {
    if !root_or_skip("validation_proves_redirection_and_fails_without_it") {
        return;
    }
    let ns = Netns::new("valid");
    let peer = Netns::new("valid-peer");
    // A route for the unroutable probe address, as a pod's default route gives.
    ns.link(&peer, "10.77.0.2/24", "10.77.0.1/24");
    ns.ok("ip", &["route", "add", "default", "via", "10.77.0.1"]);
    let out = init(
        &ns,
        &[
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout",
            "1s",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no rules: validation fails: {stderr}"
    );
    assert!(
        stderr.contains("validation failed: traffic to 192.0.2.1:15002 was not redirected"),
        "{stderr}"
    );

    // Apply and validate in one run (as root: the outbound path).
    let out = init(&ns, &["--run-validation"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("validation passed (192.0.2.1:15002 answered"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" 15002')"),
        "the original port came back: {stderr}"
    );

    // As the proxy's UID, Istio's loopback path (127.0.0.6 to the inbound port).
    let proxy_uid = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"];
    let out = run_init(&ns, &proxy_uid, &["--run-validation", "--skip-rule-apply"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("validation passed (127.0.0.6:15002 answered"),
        "{stderr}"
    );
}

#[test]
fn dry_run_prints_the_payload_and_applies_nothing() {
    if !root_or_skip("dry_run_prints_the_payload_and_applies_nothing") {
        return;
    }
    let ns = Netns::new("dry");
    let before = ns.rules("iptables-save");
    let out = init(&ns, &["--dry-run"]);
    assert_ok(&out, "dry run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("* nat\n-N ISTIO_INBOUND"), "{stdout}");
    assert!(
        stdout.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
        "{stdout}"
    );
    assert_eq!(ns.rules("iptables-save"), before);
}
