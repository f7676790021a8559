//! Connection scale: many keep-alive HTTP/1.1 connections, each used once and then left
//! idle, while the caller measures the target's memory.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::{self, Proto, Worker};

/// Connections opened at the same time while building up.
const PARALLEL: usize = 64;
/// Longest wait for one connection's connect and first response.
const PER_CONNECTION: Duration = Duration::from_secs(10);

pub struct IdleOutcome {
    pub opened: usize,
    pub errors: usize,
    /// What `measure` returned while all connections were open and idle.
    pub measured: (u64, u64),
}

/// Opens `count` connections to `addr`, sends one request on each, waits `settle`, then
/// calls `measure` (all connections still open) and closes them.
pub fn run(
    cpu: usize,
    addr: SocketAddr,
    count: usize,
    settle: Duration,
    measure: impl FnOnce() -> (u64, u64) + Send + 'static,
) -> Result<IdleOutcome, String> {
    super::on_load_thread(cpu, move || async move {
        let mut held: Vec<Worker> = Vec::with_capacity(count);
        let mut errors = 0;
        while held.len() + errors < count {
            let batch = PARALLEL.min(count - held.len() - errors);
            let mut tasks = Vec::new();
            for _ in 0..batch {
                tasks.push(tokio::task::spawn_local(async move {
                    let one = async {
                        let mut w = client::connect(addr, Proto::Http1, 1, 1, 0).await.ok()?;
                        let mut w = w.pop()?;
                        w.call().await.then_some(w)
                    };
                    tokio::time::timeout(PER_CONNECTION, one)
                        .await
                        .ok()
                        .flatten()
                }));
            }
            for t in tasks {
                match t.await.ok().flatten() {
                    Some(w) => held.push(w),
                    None => errors += 1,
                }
            }
        }
        tokio::time::sleep(settle).await;
        let measured = measure();
        let opened = held.len();
        drop(held);
        Ok(IdleOutcome {
            opened,
            errors,
            measured,
        })
    })
}
