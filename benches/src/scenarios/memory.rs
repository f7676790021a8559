//! Memory scenarios: many idle keep-alive connections, and start-up (time to ready, idle
//! RSS), each on a freshly started proxy.

use std::time::Duration;

use super::Ctx;
use crate::gen::idle;
use crate::procstat;
use crate::report::{Sample, Scenario};
use crate::targets::Target;

/// Opens the plan's number of idle HTTP/1.1 connections (one request each) and reports
/// the proxy's RSS growth per connection.
pub fn connections(ctx: &mut Ctx, t: Target, rep: u32) -> Result<(), String> {
    let n = ctx.plan.idle_connections;
    ctx.log(&format!("rep {rep} {}: {n} idle connections", t.name()));
    let (p, addrs) = ctx.start(t)?;
    let pid = p.as_ref().map(|p| p.pid());
    // One request first, so the upstream connection pool is not counted as growth.
    let _ = idle::run(ctx.load_cpu, addrs.http1, 1, Duration::ZERO, || (0, 0))?;
    std::thread::sleep(Duration::from_millis(200));
    let before = pid.map_or(0, |pid| procstat::memory_kib(pid).0);
    let settle = if ctx.plan.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let o = idle::run(ctx.load_cpu, addrs.http1, n, settle, move || {
        pid.map_or((0, 0), procstat::memory_kib)
    })?;
    let (after, _) = o.measured;
    let mut s = Sample::new(
        Scenario::Connections,
        format!("{n} idle HTTP/1.1 keep-alive connections"),
        t,
        rep,
    );
    s.set("opened", o.opened as f64)
        .set("errors", o.errors as f64);
    if pid.is_some() && o.opened > 0 {
        s.set("rss_before_mib", before as f64 / 1024.0)
            .set("rss_after_mib", after as f64 / 1024.0)
            .set(
                "bytes_per_connection",
                after.saturating_sub(before) as f64 * 1024.0 / o.opened as f64,
            );
    }
    ctx.samples.push(s);
    Ok(())
}

/// A fresh start: time from exec to `/ready` LIVE and RSS 200 ms later.
pub fn startup(ctx: &mut Ctx, t: Target, rep: u32) -> Result<(), String> {
    ctx.log(&format!("rep {rep} {}: start-up", t.name()));
    let (p, _) = ctx.start(t)?;
    let Some(p) = p else {
        return Ok(());
    };
    let mut s = Sample::new(Scenario::Startup, "cold start", t, rep);
    s.set("ready_ms", p.ready_after.as_secs_f64() * 1000.0)
        .set("idle_rss_mib", p.idle_rss_kib as f64 / 1024.0);
    ctx.samples.push(s);
    Ok(())
}
