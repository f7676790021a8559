//! The interception scenario in the report: its goals (Remora's CPU per request or
//! connection at most a third of Envoy's, as for the core proxy; added p99 latency at
//! most half of Envoy's at fixed rates) and its table.

use std::fmt::Write;

use super::markdown::{added_p99_goal, flag, fmt2, num, ratio, stat, Goal};
use super::{Results, Scenario};
use crate::targets::Target;

const S: Scenario = Scenario::Interception;

/// Whether a point is open loop (a fixed offered rate, where latency is comparable).
fn fixed_rate(r: &Results, p: &str) -> bool {
    r.samples(S, p, Target::Remora)
        .any(|s| s.get("target_rps").is_some())
}

fn per(p: &str) -> &'static str {
    if p.starts_with("tcp") {
        "connection"
    } else {
        "request"
    }
}

pub(super) fn goals(r: &Results) -> Vec<Goal> {
    let mut g = Vec::new();
    for p in r.points(S) {
        let q = |t| r.stat(S, &p, t, "cpu_us_per_req");
        let m = ratio(q(Target::Remora), q(Target::Envoy));
        g.push(Goal {
            what: format!("interception: CPU per {}, Remora/Envoy ({p})", per(&p)),
            measured: fmt2(m),
            bound: "≤ 0.33",
            met: m.map(|m| m <= 1.0 / 3.0),
        });
    }
    for p in r.points(S).into_iter().filter(|p| fixed_rate(r, p)) {
        let what = format!("interception: added p99 latency, Remora/Envoy ({p})");
        g.push(added_p99_goal(r, S, &p, what));
    }
    g
}

pub(super) fn table(o: &mut String, r: &Results) {
    let points = r.points(S);
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n### Through iptables interception (pod network namespace)\n\nThe application runs in a pod namespace with `iptables-init`'s rules (the injector's default flags) and dials the service's address in another namespace; the kernel redirects each connection to the proxy's virtualOutbound (15001), which hands it off by original destination to the service's listener (`0.0.0.0_80`: TLS and HTTP sniffing, HTTP connection manager; `10.89.0.1_9000`: tcp_proxy). Both proxies run as UID 1337 on the same Istio-shaped config. *No proxy* dials the same service from a namespace without rules over an identical veth pair. TCP points open a connection per call (connect, 64 bytes each way, close); their CPU and latency are per connection. *Added* is the proxy's median minus the no-proxy median.\n\n| point | target | calls/s | p50 µs | p99 µs | added p50 µs | added p99 µs | CPU µs per call | errors | unsent |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in points {
        for t in Target::ALL {
            let m = |k: &str, d| stat(r.stat(S, &p, t, k), d);
            let add = |k: &str| match t {
                Target::Direct => "-".to_string(),
                _ => r.added(S, &p, t, k).map_or("-".into(), |v| num(v, 0)),
            };
            let _ = writeln!(
                o,
                "| {p} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                flag(r, S, &p, t),
                m("rps", 0),
                m("p50_us", 0),
                m("p99_us", 0),
                add("p50_us"),
                add("p99_us"),
                m("cpu_us_per_req", 1),
                m("errors", 0),
                m("unsent", 0),
            );
        }
        let q = |t, k| r.stat(S, &p, t, k);
        let _ = writeln!(
            o,
            "| {p} | Remora/Envoy | {} | | | | | {} | | |",
            fmt2(ratio(q(Target::Remora, "rps"), q(Target::Envoy, "rps"))),
            fmt2(ratio(
                q(Target::Remora, "cpu_us_per_req"),
                q(Target::Envoy, "cpu_us_per_req")
            )),
        );
    }
}
