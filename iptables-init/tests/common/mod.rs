//! Helpers shared by the iptables-init integration tests: the shared test data and
//! istio-iptables command lines turned into settings.

#![allow(dead_code)]

use std::path::PathBuf;

use clap::Parser;
use iptables_init::{Args, Host, Settings};
use serde_json::Value;

pub fn testdata(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/istio-iptables")
        .join(rel);
    assert!(p.exists(), "shared test data missing: {}", p.display());
    p
}

/// Splits a shell command line (quotes as the injector writes them) and drops the
/// program name.
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

pub fn ips(v: &Value) -> Vec<String> {
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
        dns_v4: ips(&want["DNSServersV4"]),
        dns_v6: ips(&want["DNSServersV6"]),
    };
    parse(
        &argv(case["equivalent_cli"].as_str().expect("cli")),
        &lookup,
        host,
    )
}
