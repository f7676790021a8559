//! The routing half of interception, done with `ip`: in TPROXY mode, packets marked
//! for the proxy are delivered locally (`ip rule add fwmark MARK lookup TABLE` and a
//! `local default dev lo` route in that table); with IPv6, `::6` on `lo`, the source
//! address of the proxy's inbound passthrough connections (Istio's 127.0.0.6 for IPv6).

use crate::settings::{InboundMode, Settings};
use crate::tools::{self, ToolError};

/// `ip` commands to run, each as its argument list.
pub fn setup_commands(s: &Settings) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let words = |v: &[&str]| v.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let families: &[&str] = if s.host.ipv6 {
        &["inet", "inet6"]
    } else {
        &["inet"]
    };
    if s.inbound_mode == InboundMode::Tproxy {
        for f in families {
            let (mark, table) = (s.tproxy_mark.as_str(), s.tproxy_route_table.as_str());
            out.push(words(&[
                "-f", f, "rule", "add", "fwmark", mark, "lookup", table,
            ]));
            out.push(words(&[
                "-f", f, "route", "add", "local", "default", "dev", "lo", "table", table,
            ]));
        }
    }
    if s.host.ipv6 {
        out.push(words(&["-6", "addr", "add", "::6/128", "dev", "lo"]));
    }
    out
}

/// The commands that undo [`setup_commands`].
pub fn cleanup_commands(s: &Settings) -> Vec<Vec<String>> {
    setup_commands(s)
        .into_iter()
        .map(|mut c| {
            if let Some(w) = c.iter_mut().find(|w| *w == "add") {
                *w = "del".to_owned();
            }
            c
        })
        .collect()
}

/// Runs `ip cmd`; a failure whose message contains one of `tolerate` is success.
fn run(cmd: &[String], tolerate: &[&str]) -> Result<(), ToolError> {
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    match tools::run("ip", &args, None) {
        Ok(_) => Ok(()),
        Err(ToolError::Failed { stderr, .. }) if tolerate.iter().any(|t| stderr.contains(t)) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Adds the routes and address (already present is fine).
pub fn setup(s: &Settings) -> Result<(), ToolError> {
    setup_commands(s)
        .iter()
        .try_for_each(|c| run(c, &["File exists"]))
}

/// Removes them (already absent is fine: `ip route del` says "No such", `ip rule del`
/// "not found", `ip addr del` "Cannot assign").
pub fn cleanup(s: &Settings) -> Result<(), ToolError> {
    cleanup_commands(s)
        .iter()
        .try_for_each(|c| run(c, &["No such", "not found", "Cannot assign"]))
}
