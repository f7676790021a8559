//! Reads a target's resource use over a measured window: CPU time and run-queue delay of
//! all its threads, and the machine's steal time.

use std::time::{Duration, Instant};

use crate::procstat;

/// Reads taken at the start of a window.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu_ns: u64,
    runqueue_ns: u64,
    steal: u64,
    total: u64,
}

/// Samples a process (or nothing, for the no-proxy target) at the window's edges.
pub struct Probe {
    pid: Option<u32>,
    mark: Option<Mark>,
}

/// Resource use over one window.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Usage {
    pub wall: Duration,
    /// CPU time of all the target's threads; `None` without a target process.
    pub cpu_ns: Option<u64>,
    /// Time the target's threads were runnable but waiting for a CPU.
    pub runqueue_ns: Option<u64>,
    /// The machine's steal time as a share of all CPU time in the window.
    pub steal_fraction: f64,
}

impl Probe {
    pub fn new(pid: Option<u32>) -> Probe {
        Probe { pid, mark: None }
    }

    fn read(&self) -> Mark {
        let (steal, total) = procstat::steal_and_total_ticks();
        Mark {
            at: Instant::now(),
            cpu_ns: self.pid.map_or(0, procstat::cpu_ns),
            runqueue_ns: self.pid.map_or(0, procstat::runqueue_ns),
            steal,
            total,
        }
    }

    pub fn begin(&mut self) {
        self.mark = Some(self.read());
    }

    pub fn end(&mut self) -> Usage {
        let now = self.read();
        let start = self.mark.unwrap_or(now);
        let total = now.total.saturating_sub(start.total);
        Usage {
            wall: now.at - start.at,
            cpu_ns: self.pid.map(|_| now.cpu_ns.saturating_sub(start.cpu_ns)),
            runqueue_ns: self
                .pid
                .map(|_| now.runqueue_ns.saturating_sub(start.runqueue_ns)),
            steal_fraction: if total == 0 {
                0.0
            } else {
                now.steal.saturating_sub(start.steal) as f64 / total as f64
            },
        }
    }
}

impl Usage {
    /// Steal above this share of the machine's CPU time flags a measurement.
    pub const STEAL_LIMIT: f64 = 0.02;
}
