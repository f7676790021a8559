//! istio-iptables for tests: the injector's default command line, `iptables-init` run
//! inside a network namespace, and the cases of
//! `../shared/testdata/istio-iptables/cases.json` turned into settings.

use std::path::PathBuf;
use std::process::Output;

use clap::Parser;
use iptables_init::{Args, Host, Settings};
use serde_json::Value;

use crate::netns::Netns;
use crate::process::iptables_init_bin;

/// The sidecar injector's default istio-init arguments.
pub const INJECTOR_ARGS: &[&str] = &[
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

/// Runs `wrapper... iptables-init INJECTOR_ARGS extra...` inside `ns` (`wrapper`: e.g.
/// `env PATH=...` or `setpriv ...`, or nothing).
pub fn run_init(ns: &Netns, wrapper: &[&str], extra: &[&str]) -> Output {
    let bin = iptables_init_bin();
    let mut cmd = match wrapper.split_first() {
        None => ns.command(bin.to_str().expect("utf-8 path")),
        Some((program, args)) => {
            let mut c = ns.command(program);
            c.args(args).arg(&bin);
            c
        }
    };
    cmd.args(INJECTOR_ARGS)
        .args(extra)
        .output()
        .expect("run iptables-init")
}

/// [`run_init`] without a wrapper, asserting it succeeds.
pub fn apply(ns: &Netns, extra: &[&str]) {
    let out = run_init(ns, &[], extra);
    assert!(
        out.status.success(),
        "iptables-init {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file under `../shared/testdata/istio-iptables`.
pub fn testdata(rel: &str) -> PathBuf {
    crate::testdata(&format!("istio-iptables/{rel}"))
}

/// Splits a shell command line (quotes as the injector writes them) from the program
/// name on.
pub fn argv(line: &str) -> Vec<String> {
    let words = shlex::split(line).unwrap_or_else(|| panic!("unbalanced quotes: {line}"));
    let start = words
        .iter()
        .position(|w| w == "istio-iptables")
        .expect("an istio-iptables command line");
    words[start..].to_vec()
}

pub fn parse(words: &[String], env: &dyn Fn(&str) -> Option<String>, host: Host) -> Settings {
    let args = Args::try_parse_from(words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
    Settings::new(&args, env, host).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| Some(x.as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The cases of `cases.json`.
pub fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(testdata("cases.json")).expect("cases.json");
    let cases: Value = serde_json::from_str(&text).expect("json");
    cases["cases"].as_array().expect("cases").clone()
}

/// A case's settings: its equivalent command line and environment, and the host facts
/// (IPv6, DNS servers) no flag sets.
pub fn case_settings(case: &Value) -> Settings {
    let env = case["env"].as_object().cloned().unwrap_or_default();
    let lookup = move |k: &str| env.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let want = &case["effective_config"];
    let host = Host {
        ipv6: want["EnableIPv6"].as_bool().unwrap_or(false),
        dns_v4: strings(&want["DNSServersV4"]),
        dns_v6: strings(&want["DNSServersV6"]),
    };
    parse(
        &argv(case["equivalent_cli"].as_str().expect("cli")),
        &lookup,
        host,
    )
}
