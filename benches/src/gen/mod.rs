//! The load generator: open-loop at a fixed rate (latency measured from each request's
//! intended send time, so a stalled target cannot hide its queue: coordinated omission),
//! closed-loop for peak throughput, TCP bulk transfer, and idle connection scale. Each
//! runs on its own single-threaded runtime pinned to the load core.

pub mod bulk;
pub mod client;
mod drive;
pub mod idle;
mod pace;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;

pub use client::Proto;

use crate::measure::{Probe, Usage};

/// One load run.
#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub connections: usize,
    /// Concurrent streams per connection (HTTP/2, gRPC); HTTP/1.1 uses one.
    pub streams: usize,
    /// Requests per second (open loop), or `None` for closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub measure: Duration,
    /// The network namespace the clients run in (`None`: this process's).
    pub netns: Option<String>,
}

/// What a load run saw during its measured window.
pub struct Outcome {
    /// Latency in nanoseconds: from the intended send time (open loop) or the send time
    /// (closed loop) to the end of the response. Requests whose turn came in the window
    /// but that could not be sent before it closed count with their wait so far.
    pub latency_ns: Histogram<u64>,
    /// Responses completed inside the window.
    pub completed: u64,
    pub errors: u64,
    /// Requests scheduled inside the window that were never sent (open loop).
    pub unsent: u64,
    pub usage: Usage,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.usage.wall.as_secs_f64().max(1e-9)
    }

    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 ns to one hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static histogram bounds")
}

/// Runs `load` on a thread pinned to `cpu`; `probe` is read at the window's edges.
pub fn run(cpu: usize, load: Load, probe: Probe) -> Result<Outcome, String> {
    let netns = load.netns.clone();
    on_load_thread_in(cpu, netns, move || drive::drive(load, probe))
}

/// Runs `f`'s future on a fresh single-threaded runtime (with a `LocalSet`) on a thread
/// pinned to `cpu`.
pub fn on_load_thread<F, Fut, T>(cpu: usize, f: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    on_load_thread_in(cpu, None, f)
}

/// [`on_load_thread`] inside network namespace `netns`.
pub fn on_load_thread_in<F, Fut, T>(cpu: usize, netns: Option<String>, f: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    let handle = std::thread::spawn(move || {
        crate::procstat::pin_current_thread(cpu);
        if let Some(ns) = &netns {
            tests::netns::join(ns)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("load runtime: {e}"))?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, f())
    });
    handle
        .join()
        .map_err(|_| "the load thread panicked".to_string())?
}

/// Sends `n` requests one after another on one connection; returns how many succeeded.
/// For instruction counting, where the request count must be exact.
pub fn count(cpu: usize, addr: SocketAddr, proto: Proto, n: u64) -> Result<u64, String> {
    on_load_thread(cpu, move || async move {
        let mut w = client::connect(addr, proto, 1, 1, 1024)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let w = w.first_mut().ok_or("no connection")?;
        let mut ok = 0;
        for _ in 0..n {
            if w.call().await {
                ok += 1;
            }
        }
        Ok(ok)
    })
}
