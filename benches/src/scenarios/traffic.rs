//! Traffic scenarios, all on one started target per repetition: open-loop HTTP/1.1
//! latency at fixed rates, closed-loop peak throughput (HTTP/1.1, HTTP/2), gRPC unary, and
//! TCP bulk transfer.

use super::{load_sample, proto_name, Ctx};
use crate::gen::{self, bulk, Load, Proto};
use crate::measure::Probe;
use crate::report::{Sample, Scenario};
use crate::targets::{Addrs, Target};

/// Connections for the saturation probe and the HTTP/1.1 peak.
const PEAK_H1_CONNECTIONS: usize = 64;
/// HTTP/2 peak: connections × streams each.
const PEAK_H2: (usize, usize) = (4, 32);
/// gRPC: 100 concurrent streams on two connections.
const GRPC: (usize, usize) = (2, 50);

/// The floor scenario's point: the HTTP/1.1 peak load, relayed by `tcp_proxy`.
pub const FLOOR_POINT: &str = "http1 64 conns x 1 streams, relayed by tcp_proxy";

/// The resilience scenario's points (the report's overhead goal compares them).
pub const RESILIENCE_PLAIN: &str = "http1 64 conns, plain route";
pub const RESILIENCE_CONFIGURED: &str =
    "http1 64 conns, retries + circuit breakers + outlier detection + least request";

/// Remora's single-core saturation: closed-loop HTTP/1.1 requests per second, the base of
/// the latency scenario's rates.
pub fn saturation(ctx: &mut Ctx) -> Result<f64, String> {
    ctx.log("saturation probe: remora, closed loop, HTTP/1.1");
    let (p, addrs) = ctx.start(Target::Remora)?;
    let probe = Probe::new(p.as_ref().map(|p| p.pid()));
    let o = gen::run(
        ctx.load_cpu,
        Load {
            addr: addrs.http1,
            proto: Proto::Http1,
            connections: PEAK_H1_CONNECTIONS,
            streams: 1,
            rate: None,
            warmup: ctx.plan.warmup,
            measure: ctx.plan.measure,
            netns: None,
        },
        probe,
    )?;
    if o.completed == 0 {
        return Err("saturation probe: remora answered no requests".into());
    }
    Ok(o.rate())
}

/// Every traffic scenario against `t`.
pub fn run(ctx: &mut Ctx, t: Target, rep: u32, saturation: f64) -> Result<(), String> {
    let (p, addrs) = ctx.start(t)?;
    let pid = p.as_ref().map(|p| p.pid());
    // (rate, share of Remora's saturation it was derived from)
    let mut rates = vec![(ctx.plan.fixed_rate, None)];
    rates.extend(ctx.plan.load_fractions.iter().map(|&f| {
        (
            ((saturation * f / 100.0).round() * 100.0).max(100.0),
            Some(f),
        )
    }));
    let conn_counts = if ctx.plan.wants(Scenario::Latency) {
        ctx.plan.latency_connections.clone()
    } else {
        Vec::new()
    };
    for &conns in &conn_counts {
        for &(rate, fraction) in &rates {
            let point = format!("http1 {conns} conns @ {rate:.0} rps");
            ctx.log(&format!("rep {rep} {}: latency {point}", t.name()));
            let o = gen::run(
                ctx.load_cpu,
                load(ctx, addrs, Proto::Http1, conns, 1, Some(rate)),
                Probe::new(pid),
            )?;
            let mut s = load_sample(Scenario::Latency, &point, t, rep, &o);
            s.set("target_rps", rate)
                .set("connections", conns as f64)
                .set_opt("load_fraction", fraction);
            ctx.samples.push(s);
        }
    }
    for (proto, conns, streams, scenario) in [
        (Proto::Http1, PEAK_H1_CONNECTIONS, 1, Scenario::Peak),
        (Proto::Http2, PEAK_H2.0, PEAK_H2.1, Scenario::Peak),
        (Proto::Grpc, GRPC.0, GRPC.1, Scenario::Grpc),
    ] {
        if !ctx.plan.wants(scenario) {
            continue;
        }
        let point = format!(
            "{} {conns} conns x {streams} streams, closed loop",
            proto_name(proto)
        );
        ctx.log(&format!("rep {rep} {}: {point}", t.name()));
        let o = gen::run(
            ctx.load_cpu,
            load(ctx, addrs, proto, conns, streams, None),
            Probe::new(pid),
        )?;
        ctx.samples.push(load_sample(scenario, &point, t, rep, &o));
    }
    // No proxy has nothing to relay with; its peak row is the same load without a hop.
    if ctx.plan.wants(Scenario::Floor) && t != Target::Direct {
        ctx.log(&format!("rep {rep} {}: floor, {FLOOR_POINT}", t.name()));
        let mut l = load(ctx, addrs, Proto::Http1, PEAK_H1_CONNECTIONS, 1, None);
        l.addr = addrs.relay;
        let o = gen::run(ctx.load_cpu, l, Probe::new(pid))?;
        ctx.samples
            .push(load_sample(Scenario::Floor, FLOOR_POINT, t, rep, &o));
    }
    if ctx.plan.wants(Scenario::Resilience) {
        // Back to back on the same process: the plain route, then the resilient one.
        for (point, addr) in [
            (RESILIENCE_PLAIN, addrs.http1),
            (RESILIENCE_CONFIGURED, addrs.resilient),
        ] {
            ctx.log(&format!("rep {rep} {}: resilience, {point}", t.name()));
            let mut l = load(ctx, addrs, Proto::Http1, PEAK_H1_CONNECTIONS, 1, None);
            l.addr = addr;
            let o = gen::run(ctx.load_cpu, l, Probe::new(pid))?;
            ctx.samples
                .push(load_sample(Scenario::Resilience, point, t, rep, &o));
        }
    }
    if ctx.plan.wants(Scenario::TcpBulk) {
        bulk_transfer(ctx, t, rep, addrs, pid)?;
    }
    if let Some(p) = p {
        let (_, hwm) = crate::procstat::memory_kib(p.pid());
        let mut s = Sample::new(Scenario::Startup, "after the traffic scenarios", t, rep);
        s.set("peak_rss_mib", hwm as f64 / 1024.0);
        ctx.samples.push(s);
    }
    Ok(())
}

fn bulk_transfer(
    ctx: &mut Ctx,
    t: Target,
    rep: u32,
    addrs: Addrs,
    pid: Option<u32>,
) -> Result<(), String> {
    ctx.log(&format!("rep {rep} {}: tcp bulk", t.name()));
    let b = bulk::run(
        ctx.load_cpu,
        addrs.tcp,
        ctx.up.tcp_received.clone(),
        ctx.plan.warmup,
        ctx.plan.measure,
        Probe::new(pid),
    )?;
    let mut s = Sample::new(
        Scenario::TcpBulk,
        "tcp_proxy, 1 connection, 256 KiB writes",
        t,
        rep,
    );
    let gib = b.bytes as f64 / (1u64 << 30) as f64;
    s.usage(&b.usage)
        .set("gbit_per_s", b.gbit_per_s())
        .set("bytes", b.bytes as f64)
        .set_opt(
            "cpu_ms_per_gib",
            b.usage
                .cpu_ns
                .filter(|_| gib > 0.0)
                .map(|ns| ns as f64 / 1e6 / gib),
        );
    ctx.samples.push(s);
    Ok(())
}

fn load(
    ctx: &Ctx,
    addrs: Addrs,
    proto: Proto,
    connections: usize,
    streams: usize,
    rate: Option<f64>,
) -> Load {
    Load {
        addr: match proto {
            Proto::Http1 => addrs.http1,
            Proto::Http2 | Proto::Grpc => addrs.http2,
            Proto::TcpEcho => addrs.tcp,
        },
        proto,
        connections,
        streams,
        rate,
        warmup: ctx.plan.warmup,
        measure: ctx.plan.measure,
        netns: None,
    }
}
