//! iptables-init against the real kernel, each test in network namespaces it creates:
//! every golden case's payload loads with `iptables-restore`; applying is idempotent;
//! `--cleanup` removes exactly what was added; a failure part-way leaves nothing; missing
//! tools, missing privilege and bad flags fail clearly with nothing applied; and
//! `--run-validation` proves redirection (and fails without it). Needs root: see
//! `tests::netns::root_or_skip`.

use std::io::Write;
use std::process::Stdio;

use clap::Parser;
use iptables_init::{capture, Args, Host, Settings};
use serde_json::Value;
use tests::netns::{root_or_skip, Netns};
use tests::process::iptables_init_bin;
use tests::testdata;

/// The injector's default command line (Istio's sidecar template).
const INJECTOR: &[&str] = &[
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
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

fn case_settings(case: &Value) -> Settings {
    let cli = case["equivalent_cli"]
        .as_str()
        .expect("cli")
        .replace('\'', "");
    let args = Args::try_parse_from(cli.split_whitespace()).expect("case flags");
    let env = case["env"].as_object().cloned().unwrap_or_default();
    let lookup = move |k: &str| env.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let want = &case["effective_config"];
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| Some(x.as_str()?.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let host = Host {
        ipv6: want["EnableIPv6"].as_bool().unwrap_or(false),
        dns_v4: list(&want["DNSServersV4"]),
        dns_v6: list(&want["DNSServersV6"]),
    };
    Settings::new(&args, &lookup, host).expect("case settings")
}

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
    let text = std::fs::read_to_string(testdata("istio-iptables/cases.json")).expect("cases");
    let cases: Value = serde_json::from_str(&text).expect("json");
    let cases = cases["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 14);
    for case in cases {
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
    let mut args: Vec<&str> = INJECTOR.to_vec();
    args.extend(extra);
    ns.command(iptables_init_bin().to_str().expect("utf-8 path"))
        .args(&args)
        .output()
        .expect("run iptables-init")
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
    let mut args: Vec<&str> = INJECTOR.to_vec();
    args.push("-c");
    args.push("eth5");
    let path = format!("PATH={}", bin_dir.path().display());
    let out = ns
        .command("env")
        .args([path.as_str(), "ISTIO_DUAL_STACK=true"])
        .arg(iptables_init_bin())
        .args(&args)
        .output()
        .expect("run");
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
    let bin = iptables_init_bin();
    let bin = bin.to_str().expect("path");

    let empty = tempfile::tempdir().expect("tempdir");
    let path = format!("PATH={}", empty.path().display());
    let out = ns
        .command("env")
        .args([path.as_str(), bin])
        .args(INJECTOR)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("iptables-save was not found in PATH: install the iptables package"),
        "{stderr}"
    );

    // As an unprivileged user (nobody): refused, and said so.
    let out = ns
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            bin,
        ])
        .args(INJECTOR)
        .output()
        .expect("run setpriv");
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
    let bin = iptables_init_bin();
    let bin = bin.to_str().expect("path");

    let out = ns
        .command(bin)
        .args(INJECTOR)
        .args([
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout",
            "1s",
        ])
        .output()
        .expect("run");
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
    let out = ns
        .command(bin)
        .args(INJECTOR)
        .args(["--run-validation"])
        .output()
        .expect("run");
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
    let out = ns
        .command("setpriv")
        .args(["--reuid=1337", "--regid=1337", "--clear-groups", bin])
        .args(INJECTOR)
        .args(["--run-validation", "--skip-rule-apply"])
        .output()
        .expect("run");
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
