//! The markdown report: the targets table (Remora/Envoy ratios against the goals), then
//! one table per scenario with medians and, over several repetitions, the range.

use std::fmt::Write;

use super::{Results, Scenario, Stat};
use crate::targets::Target;

/// Where the generated report goes inside BENCHMARKS.md.
pub const BEGIN: &str =
    "<!-- bench:results:begin (written by `cargo run --release -p benches -- all`) -->";
pub const END: &str = "<!-- bench:results:end -->";

const PROXIES: [Target; 2] = [Target::Remora, Target::Envoy];

pub(super) fn num(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// `median (min–max)` or just the median for a single repetition.
pub(super) fn stat(s: Option<Stat>, digits: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n > 1 => format!(
            "{} ({}–{})",
            num(s.median, digits),
            num(s.min, digits),
            num(s.max, digits)
        ),
        Some(s) => num(s.median, digits),
    }
}

/// One goal: a measured ratio (or value) and whether it meets the bound.
pub(super) struct Goal {
    pub what: String,
    pub measured: String,
    pub bound: &'static str,
    pub met: Option<bool>,
}

pub(super) fn fmt2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| num(v, 2))
}

pub(super) fn ratio(a: Option<Stat>, b: Option<Stat>) -> Option<f64> {
    let (a, b) = (a?.median, b?.median);
    (b != 0.0).then_some(a / b)
}

/// A goal on the ratio of two targets' medians, checked at every point of a scenario.
struct RatioGoal {
    scenario: Scenario,
    metric: &'static str,
    /// The denominator (Remora is always the numerator).
    over: Target,
    what: &'static str,
    /// Whether the row names the point (scenarios with several points).
    name_point: bool,
    bound: &'static str,
    met: fn(f64) -> bool,
}

const CPU: RatioGoal = RatioGoal {
    scenario: Scenario::Peak,
    metric: "cpu_us_per_req",
    over: Target::Envoy,
    what: "CPU per request, Remora/Envoy",
    name_point: true,
    bound: "≤ 0.33",
    met: |m| m <= 1.0 / 3.0,
};
const THROUGHPUT: RatioGoal = RatioGoal {
    scenario: Scenario::Peak,
    metric: "rps",
    over: Target::Envoy,
    what: "peak throughput, Remora/Envoy",
    name_point: true,
    bound: "≥ 3",
    met: |m| m >= 3.0,
};
const BULK: RatioGoal = RatioGoal {
    scenario: Scenario::TcpBulk,
    metric: "gbit_per_s",
    over: Target::Direct,
    what: "TCP bulk throughput, Remora/no proxy",
    name_point: false,
    bound: "≥ 0.90",
    met: |m| m >= 0.9,
};
const PER_CONNECTION: RatioGoal = RatioGoal {
    scenario: Scenario::Connections,
    metric: "bytes_per_connection",
    over: Target::Envoy,
    what: "memory per idle connection, Remora/Envoy",
    name_point: false,
    bound: "≤ 0.25",
    met: |m| m <= 0.25,
};

fn ratio_goals<'a>(r: &'a Results, spec: &'a RatioGoal) -> impl Iterator<Item = Goal> + 'a {
    r.points(spec.scenario).into_iter().map(move |p| {
        let stat = |t| r.stat(spec.scenario, &p, t, spec.metric);
        let m = ratio(stat(Target::Remora), stat(spec.over));
        Goal {
            what: if spec.name_point {
                format!("{} ({p})", spec.what)
            } else {
                spec.what.to_string()
            },
            measured: fmt2(m),
            bound: spec.bound,
            met: m.map(spec.met),
        }
    })
}

/// Remora adds at most half the p99 latency Envoy adds at `point`. A ratio means nothing
/// when an added latency is within the machine's noise (zero or below): the figure then
/// shows both values and the goal reads as "Remora adds at most half what Envoy adds".
pub(super) fn added_p99_goal(r: &Results, s: Scenario, point: &str, what: String) -> Goal {
    let add = |t| r.added(s, point, t, "p99_us");
    let (a, b) = (add(Target::Remora), add(Target::Envoy));
    Goal {
        what,
        measured: match (a, b) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => {
                format!("{} ({a:.0} vs {b:.0} µs)", num(a / b, 2))
            }
            (Some(a), Some(b)) => format!("{a:.0} vs {b:.0} µs"),
            _ => "-".into(),
        },
        bound: "≤ 0.5",
        met: match (a, b) {
            (Some(a), Some(b)) => Some(a <= 0.5 * b),
            _ => None,
        },
    }
}

const RESILIENCE_CPU: RatioGoal = RatioGoal {
    scenario: Scenario::Resilience,
    ..CPU
};

/// The resilience features cost Remora at most 10% more CPU per request than a plain
/// route (Envoy's own figure alongside, for reference).
fn resilience_goal(r: &Results) -> Option<Goal> {
    use crate::scenarios::traffic::{RESILIENCE_CONFIGURED, RESILIENCE_PLAIN};
    let s = Scenario::Resilience;
    let cpu = |p, t| r.stat(s, p, t, "cpu_us_per_req");
    if r.points(s).is_empty() {
        return None;
    }
    let remora = ratio(
        cpu(RESILIENCE_CONFIGURED, Target::Remora),
        cpu(RESILIENCE_PLAIN, Target::Remora),
    );
    let envoy = ratio(
        cpu(RESILIENCE_CONFIGURED, Target::Envoy),
        cpu(RESILIENCE_PLAIN, Target::Envoy),
    );
    Some(Goal {
        what: "CPU per request with retries, circuit breakers, outlier detection and least request, over a plain route (Remora)".into(),
        measured: format!("{} (Envoy: {})", fmt2(remora), fmt2(envoy)),
        bound: "≤ 1.10",
        met: remora.map(|m| m <= 1.10),
    })
}

fn goals(r: &Results) -> Vec<Goal> {
    let mut g: Vec<Goal> = ratio_goals(r, &CPU)
        .chain(floor_goal(r))
        .chain(ratio_goals(r, &THROUGHPUT))
        .chain(resilience_goal(r))
        .chain(ratio_goals(r, &RESILIENCE_CPU))
        .collect();
    for p in r.points(Scenario::Latency) {
        let fraction = r
            .samples(Scenario::Latency, &p, Target::Remora)
            .find_map(|s| s.get("load_fraction"));
        let label = match fraction {
            None => "fixed rate",
            Some(f) if (f - 0.5).abs() < 1e-9 => "50% load",
            Some(_) => continue,
        };
        g.push(added_p99_goal(
            r,
            Scenario::Latency,
            &p,
            format!("added p99 latency, Remora/Envoy ({p}, {label})"),
        ));
    }
    g.extend(ratio_goals(r, &BULK));
    let idle = r
        .stat(
            Scenario::Startup,
            "cold start",
            Target::Remora,
            "idle_rss_mib",
        )
        .map(|s| s.median * 1024.0 * 1024.0 / 1e6);
    g.push(Goal {
        what: "idle RSS of Remora, MB".into(),
        measured: fmt2(idle),
        bound: "< 10",
        met: idle.map(|m| m < 10.0),
    });
    g.extend(ratio_goals(r, &PER_CONNECTION));
    g.extend(xds_goals(r));
    g.extend(super::interception::goals(r));
    g
}

/// Not a goal but the floor under the CPU goal: Remora relaying the HTTP/1.1 peak load as
/// bytes (`tcp_proxy`, no HTTP processing at all) against Envoy proxying it as HTTP. An
/// HTTP proxy does this socket work and more, so its ratio cannot come out below this one.
fn floor_goal(r: &Results) -> Option<Goal> {
    let peak = r
        .points(Scenario::Peak)
        .into_iter()
        .find(|p| p.starts_with("http1 "))?;
    let relay = r.stat(
        Scenario::Floor,
        crate::scenarios::traffic::FLOOR_POINT,
        Target::Remora,
        "cpu_us_per_req",
    );
    let envoy = r.stat(Scenario::Peak, &peak, Target::Envoy, "cpu_us_per_req");
    let m = ratio(relay, envoy);
    Some(Goal {
        what: format!(
            "floor: Remora relaying the same load as bytes (tcp_proxy) / Envoy proxying it as HTTP ({peak}), CPU per request"
        ),
        measured: match (m, relay, envoy) {
            (Some(m), Some(a), Some(b)) => format!("{} ({:.1} vs {:.1} µs)", num(m, 2), a.median, b.median),
            _ => "-".into(),
        },
        bound: "reference",
        met: None,
    })
}

/// The xDS goals on the largest push: Remora applies it at least 5x faster than Envoy
/// (push to first request routed) with at most a fifth of Envoy's memory growth; one
/// endpoint change applies in under 10 ms.
fn xds_goals(r: &Results) -> Vec<Goal> {
    let s = Scenario::Xds;
    let points = r.points(s);
    let largest = points
        .iter()
        .filter_map(|p| Some((p.strip_suffix(" clusters")?.parse::<usize>().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone());
    let mut g = Vec::new();
    if let Some(p) = largest {
        let stat = |t, k| r.stat(s, &p, t, k);
        let faster = ratio(
            stat(Target::Envoy, "routed_ms"),
            stat(Target::Remora, "routed_ms"),
        );
        g.push(Goal {
            what: format!("xDS apply speed, Envoy/Remora time to first routed request ({p})"),
            measured: fmt2(faster),
            bound: "≥ 5",
            met: faster.map(|f| f >= 5.0),
        });
        let memory = ratio(
            stat(Target::Remora, "rss_growth_mib"),
            stat(Target::Envoy, "rss_growth_mib"),
        );
        g.push(Goal {
            what: format!("xDS memory for the config, Remora/Envoy RSS growth ({p})"),
            measured: fmt2(memory),
            bound: "≤ 0.2",
            met: memory.map(|m| m <= 0.2),
        });
    }
    for p in points
        .iter()
        .filter(|p| p.starts_with("one endpoint change"))
    {
        let routed = r.stat(s, p, Target::Remora, "routed_ms").map(|s| s.median);
        g.push(Goal {
            what: format!("{p}: push to first routed request, Remora, ms"),
            measured: fmt2(routed),
            bound: "< 10",
            met: routed.map(|m| m < 10.0),
        });
    }
    g
}

pub fn render(r: &Results, command: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Command: `{command}`\n");
    let _ = writeln!(
        o,
        "Machine: {}. Repetitions: {}; figures are medians, with the range (min–max) over repetitions in brackets.",
        r.machine, r.repetitions
    );
    for (k, v) in &r.settings {
        let _ = writeln!(o, "- {k}: {v}");
    }
    let stolen = r.any_stolen();
    if stolen.is_empty() {
        let _ = writeln!(o, "\nNo window saw more than 2% steal time.");
    } else {
        let _ = writeln!(
            o,
            "\n**Warning:** {} measurement windows saw more than 2% steal time (flagged ⚠ below); their figures are disturbed.",
            stolen.len()
        );
    }
    let _ = writeln!(
        o,
        "\n### Targets\n\n| goal | measured | bound | met |\n|---|---|---|---|"
    );
    for g in goals(r) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            g.what,
            g.measured,
            g.bound,
            match g.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }
    latency(&mut o, r);
    closed_loop(
        &mut o,
        r,
        Scenario::Peak,
        "Peak throughput on one core (closed loop)",
    );
    closed_loop(
        &mut o,
        r,
        Scenario::Floor,
        "The socket work alone: the HTTP/1.1 peak load relayed as bytes by tcp_proxy (closed loop)",
    );
    closed_loop(
        &mut o,
        r,
        Scenario::Resilience,
        "Resilience features configured (closed loop, HTTP/1.1)",
    );
    closed_loop(
        &mut o,
        r,
        Scenario::Grpc,
        "gRPC unary, 1 KiB messages (closed loop)",
    );
    bulk(&mut o, r);
    super::interception::table(&mut o, r);
    connections(&mut o, r);
    startup(&mut o, r);
    xds(&mut o, r);
    callgrind(&mut o, r);
    o
}

fn callgrind(o: &mut String, r: &Results) {
    let s = Scenario::Callgrind;
    let points = r.points(s);
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n### Instructions per request (callgrind)\n\nRemora under `valgrind --tool=callgrind`, one HTTP/1.1 connection; (I(2N) − I(N)) / N, so start-up and shutdown cancel. Repeatable whatever the machine's load.\n\n| point | instructions per request |\n|---|---|"
    );
    for p in points {
        let _ = writeln!(
            o,
            "| {p} | {} |",
            stat(r.stat(s, &p, Target::Remora, "instructions_per_request"), 0)
        );
    }
}

pub(super) fn flag(r: &Results, s: Scenario, p: &str, t: Target) -> &'static str {
    if r.samples(s, p, t).any(|x| x.stolen()) {
        " ⚠"
    } else {
        ""
    }
}

fn latency(o: &mut String, r: &Results) {
    let s = Scenario::Latency;
    let _ = writeln!(
        o,
        "\n### Latency at fixed rates (open loop, HTTP/1.1, 1 KiB responses)\n\nLatency runs from each request's intended send time. *Added* is the proxy's percentile minus the no-proxy percentile of the same repetition. Unsent: requests due in the window that the target's backlog kept from being sent (counted in the percentiles with their wait so far).\n\n| point | target | achieved req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | added p50 µs | added p99 µs | added p99.9 µs | CPU µs/req | errors | unsent |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in r.points(s) {
        for t in Target::ALL {
            let m = |k: &str, d| stat(r.stat(s, &p, t, k), d);
            let add = |k: &str| {
                if t == Target::Direct {
                    "-".to_string()
                } else {
                    r.added(s, &p, t, k).map_or("-".into(), |v| num(v, 0))
                }
            };
            let _ = writeln!(
                o,
                "| {p} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                flag(r, s, &p, t),
                m("rps", 0),
                m("p50_us", 0),
                m("p90_us", 0),
                m("p99_us", 0),
                m("p999_us", 0),
                m("max_us", 0),
                add("p50_us"),
                add("p99_us"),
                add("p999_us"),
                m("cpu_us_per_req", 1),
                m("errors", 0),
                m("unsent", 0),
            );
        }
    }
}

fn closed_loop(o: &mut String, r: &Results, s: Scenario, title: &str) {
    let _ = writeln!(
        o,
        "\n### {title}\n\n| point | target | req/s | CPU µs/req | run-queue µs/req | p50 µs | p99 µs | errors |\n|---|---|---|---|---|---|---|---|"
    );
    for p in r.points(s) {
        for t in Target::ALL {
            // The floor has no row without a proxy.
            if r.samples(s, &p, t).next().is_none() {
                continue;
            }
            let m = |k: &str, d| stat(r.stat(s, &p, t, k), d);
            let _ = writeln!(
                o,
                "| {p} | {}{} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                flag(r, s, &p, t),
                m("rps", 0),
                m("cpu_us_per_req", 1),
                m("runqueue_us_per_req", 2),
                m("p50_us", 0),
                m("p99_us", 0),
                m("errors", 0),
            );
        }
        let q = |t, k| r.stat(s, &p, t, k);
        let _ = writeln!(
            o,
            "| {p} | Remora/Envoy | {} | {} | | | | |",
            ratio(q(Target::Remora, "rps"), q(Target::Envoy, "rps"))
                .map_or("-".into(), |v| num(v, 2)),
            ratio(
                q(Target::Remora, "cpu_us_per_req"),
                q(Target::Envoy, "cpu_us_per_req")
            )
            .map_or("-".into(), |v| num(v, 2)),
        );
    }
}

fn bulk(o: &mut String, r: &Results) {
    let s = Scenario::TcpBulk;
    let _ = writeln!(
        o,
        "\n### TCP bulk transfer (tcp_proxy)\n\n| point | target | Gbit/s | share of no proxy | proxy CPU ms/GiB |\n|---|---|---|---|---|"
    );
    for p in r.points(s) {
        let base = r.stat(s, &p, Target::Direct, "gbit_per_s");
        for t in Target::ALL {
            let g = r.stat(s, &p, t, "gbit_per_s");
            let _ = writeln!(
                o,
                "| {p} | {}{} | {} | {} | {} |",
                t.name(),
                flag(r, s, &p, t),
                stat(g, 2),
                ratio(g, base).map_or("-".into(), |v| num(v, 2)),
                stat(r.stat(s, &p, t, "cpu_ms_per_gib"), 0),
            );
        }
    }
}

fn connections(o: &mut String, r: &Results) {
    let s = Scenario::Connections;
    let _ = writeln!(
        o,
        "\n### Connection scale\n\nEach connection sends one request and then stays open and idle; bytes per connection is the growth of the proxy's RSS divided by the connections.\n\n| point | target | opened | errors | RSS before MiB | RSS after MiB | bytes per connection |\n|---|---|---|---|---|---|---|"
    );
    for p in r.points(s) {
        for t in PROXIES {
            let m = |k: &str, d| stat(r.stat(s, &p, t, k), d);
            let _ = writeln!(
                o,
                "| {p} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                m("opened", 0),
                m("errors", 0),
                m("rss_before_mib", 1),
                m("rss_after_mib", 1),
                m("bytes_per_connection", 0),
            );
        }
    }
}

fn startup(o: &mut String, r: &Results) {
    let s = Scenario::Startup;
    let _ = writeln!(
        o,
        "\n### Start-up and memory\n\n| target | ready ms | idle RSS MiB | peak RSS after the traffic scenarios MiB |\n|---|---|---|---|"
    );
    for t in PROXIES {
        let m = |p: &str, k: &str, d| stat(r.stat(s, p, t, k), d);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            t.name(),
            m("cold start", "ready_ms", 1),
            m("cold start", "idle_rss_mib", 1),
            m("after the traffic scenarios", "peak_rss_mib", 1),
        );
    }
}

fn xds(o: &mut String, r: &Results) {
    let s = Scenario::Xds;
    let points = r.points(s);
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n### xDS apply (delta ADS from the test support's control plane)\n\nThe proxy starts with one cluster; the push brings N EDS clusters (3 endpoints each), their endpoints and one virtual host per cluster. *ACK*: push to the last of the CDS, EDS and RDS ACKs; *routed*: push to the first 200 from the last cluster's virtual host; CPU: the proxy's CPU time from the push to 1 s after it; RSS growth: after minus before.\n\n| point | target | ACK ms | routed ms | CPU ms | RSS before MiB | RSS after MiB | RSS growth MiB |\n|---|---|---|---|---|---|---|---|"
    );
    for p in points {
        for t in PROXIES {
            let m = |k: &str, d| stat(r.stat(s, &p, t, k), d);
            let _ = writeln!(
                o,
                "| {p} | {} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                m("ack_ms", 1),
                m("routed_ms", 1),
                m("cpu_ms", 0),
                m("rss_before_mib", 1),
                m("rss_after_mib", 1),
                m("rss_growth_mib", 1),
            );
        }
    }
}

/// Replaces the generated part of `doc` (between the markers) with `report`, or appends
/// it with markers when there are none yet.
pub fn splice(doc: &str, report: &str) -> String {
    let block = format!("{BEGIN}\n\n{report}\n{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &doc[..a], &doc[b + END.len()..]),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_between_markers_and_appends_otherwise() {
        let doc = format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\nhistory\n");
        let out = splice(&doc, "new");
        assert!(out.contains("intro") && out.contains("history"));
        assert!(out.contains("new") && !out.contains("old"));
        let out = splice("# B\n", "first");
        assert!(
            out.starts_with("# B\n\n") && out.contains(BEGIN) && out.ends_with(&format!("{END}\n"))
        );
    }
}
