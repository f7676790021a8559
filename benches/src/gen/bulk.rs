//! TCP bulk transfer: one connection writing as fast as the path takes it; the upstream
//! sink counts what arrives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::measure::{Probe, Usage};

/// Each write hands the kernel this much.
const CHUNK: usize = 256 * 1024;

pub struct BulkOutcome {
    /// Bytes the sink received inside the measured window.
    pub bytes: u64,
    pub usage: Usage,
}

impl BulkOutcome {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.usage.wall.as_secs_f64().max(1e-9)
    }
}

/// Writes to `addr` for `warmup + measure`; `received` is the sink's byte counter.
pub fn run(
    cpu: usize,
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    warmup: Duration,
    measure: Duration,
    mut probe: Probe,
) -> Result<BulkOutcome, String> {
    super::on_load_thread(cpu, move || async move {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let start = Instant::now();
        let (measure_start, measure_end) = (start + warmup, start + warmup + measure);
        let writer = tokio::task::spawn_local(async move {
            let chunk = vec![b'b'; CHUNK];
            while Instant::now() < measure_end {
                if let Err(e) = s.write_all(&chunk).await {
                    return Err(format!("bulk write: {e}"));
                }
            }
            Ok(())
        });
        tokio::time::sleep_until(measure_start.into()).await;
        probe.begin();
        let before = received.load(Ordering::Relaxed);
        tokio::time::sleep_until(measure_end.into()).await;
        let bytes = received.load(Ordering::Relaxed) - before;
        let usage = probe.end();
        writer
            .await
            .map_err(|e| format!("bulk writer failed: {e}"))??;
        Ok(BulkOutcome { bytes, usage })
    })
}
