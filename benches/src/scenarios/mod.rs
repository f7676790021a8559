//! The scenarios and the order they run in. Targets are interleaved within each
//! repetition (no proxy, Remora, Envoy, then again), so slow drift of the machine spreads
//! over all three instead of favouring one.

mod interception;
mod memory;
pub mod traffic;
mod xds;

use std::time::Duration;

use crate::gen::{Outcome, Proto};
use crate::report::{Sample, Scenario};
use crate::targets::{self, Addrs, Launch, ProxyProc, Target};
use crate::upstream::Upstreams;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub repetitions: u32,
    pub warmup: Duration,
    pub measure: Duration,
    /// Connection counts for the latency scenario.
    pub latency_connections: Vec<usize>,
    /// Fractions of Remora's saturation rate for the latency scenario (besides 1,000 rps).
    pub load_fractions: Vec<f64>,
    pub fixed_rate: f64,
    pub idle_connections: usize,
    /// Cluster counts of the xDS push.
    pub xds_clusters: Vec<usize>,
    /// The scenarios to run (all by default).
    pub only: Vec<Scenario>,
}

impl Plan {
    pub fn full(repetitions: u32) -> Plan {
        Plan {
            quick: false,
            repetitions,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(5),
            latency_connections: vec![4, 16],
            load_fractions: vec![0.25, 0.5, 0.75],
            fixed_rate: 1000.0,
            idle_connections: 10_000,
            xds_clusters: vec![1_000, 10_000],
            only: Scenario::MEASURED.to_vec(),
        }
    }

    /// Every scenario, briefly: checks the harness end to end, not the numbers.
    pub fn wants(&self, s: Scenario) -> bool {
        self.only.contains(&s)
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            repetitions: 1,
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(400),
            idle_connections: 300,
            xds_clusters: vec![50],
            ..Plan::full(1)
        }
    }
}

pub struct Ctx {
    pub plan: Plan,
    pub proxy_cpu: usize,
    pub load_cpu: usize,
    pub up: Upstreams,
    pub cfg: String,
    pub remora: Launch,
    pub envoy: Launch,
    /// Upstream response body size in bytes.
    pub body_bytes: usize,
    pub samples: Vec<Sample>,
    /// Scenarios that could not run here, and why.
    pub skipped: Vec<(Scenario, String)>,
}

impl Ctx {
    fn launch(&self, t: Target) -> Option<&Launch> {
        match t {
            Target::Direct => None,
            Target::Remora => Some(&self.remora),
            Target::Envoy => Some(&self.envoy),
        }
    }

    /// Starts `t` (nothing for the no-proxy target) and returns where to send traffic.
    fn start(&self, t: Target) -> Result<(Option<ProxyProc>, Addrs), String> {
        match self.launch(t) {
            None => Ok((None, Addrs::direct(&self.up))),
            Some(l) => {
                let p = targets::start(l, &self.cfg, self.proxy_cpu)?;
                let a = p.addrs;
                Ok((Some(p), a))
            }
        }
    }

    fn log(&self, what: &str) {
        eprintln!("[bench] {what}");
    }
}

/// Runs every scenario; samples accumulate in `ctx.samples`.
pub fn run_all(ctx: &mut Ctx) -> Result<(), String> {
    let traffic = [
        Scenario::Latency,
        Scenario::Peak,
        Scenario::Floor,
        Scenario::Resilience,
        Scenario::Grpc,
        Scenario::TcpBulk,
    ];
    if traffic.iter().any(|&s| ctx.plan.wants(s)) {
        let saturation = if ctx.plan.wants(Scenario::Latency) {
            traffic::saturation(ctx)?
        } else {
            0.0
        };
        for rep in 0..ctx.plan.repetitions {
            for t in Target::ALL {
                traffic::run(ctx, t, rep, saturation)?;
            }
        }
    }
    if ctx.plan.wants(Scenario::Interception) {
        interception::run_all(ctx)?;
    }
    for rep in 0..ctx.plan.repetitions {
        if ctx.plan.wants(Scenario::Connections) {
            // Without a proxy there is no third process to measure, and this process
            // would hold both ends of every connection.
            for t in [Target::Remora, Target::Envoy] {
                memory::connections(ctx, t, rep)?;
            }
        }
        if ctx.plan.wants(Scenario::Startup) {
            for t in [Target::Remora, Target::Envoy] {
                memory::startup(ctx, t, rep)?;
            }
        }
        if ctx.plan.wants(Scenario::Xds) {
            let sizes = ctx.plan.xds_clusters.clone();
            for t in [Target::Remora, Target::Envoy] {
                xds::run(ctx, t, rep, &sizes)?;
            }
        }
    }
    Ok(())
}

/// The sample for one load run: rate, latency percentiles (µs), and the proxy's CPU and
/// run-queue time per request (µs).
fn load_sample(scenario: Scenario, point: &str, t: Target, rep: u32, o: &Outcome) -> Sample {
    let mut s = Sample::new(scenario, point, t, rep);
    let per_req = |ns: Option<u64>| {
        ns.filter(|_| o.completed > 0)
            .map(|ns| ns as f64 / 1000.0 / o.completed as f64)
    };
    s.usage(&o.usage)
        .set("rps", o.rate())
        .set("completed", o.completed as f64)
        .set("errors", o.errors as f64)
        .set("unsent", o.unsent as f64)
        .set("p50_us", o.quantile_us(0.50))
        .set("p90_us", o.quantile_us(0.90))
        .set("p99_us", o.quantile_us(0.99))
        .set("p999_us", o.quantile_us(0.999))
        .set("max_us", o.latency_ns.max() as f64 / 1000.0)
        .set_opt("cpu_us_per_req", per_req(o.usage.cpu_ns))
        .set_opt("runqueue_us_per_req", per_req(o.usage.runqueue_ns));
    s
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Http1 => "http1",
        Proto::Http2 => "http2",
        Proto::Grpc => "grpc",
        Proto::TcpEcho => "tcp",
    }
}
