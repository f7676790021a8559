//! A closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending its next
//! request as soon as the previous response is complete (wrk-style; for peak throughput
//! and CPU per request, not for latency under a fixed rate).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Runs `connections` connections against `addr` for `warmup` (not recorded) then
/// `duration`; `on_measure_start` / `on_measure_end` run at the window's edges.
pub fn run(
    cpu: usize,
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    on_measure_start: impl FnOnce() + Send + 'static,
) -> LoadResult {
    let handle = std::thread::spawn(move || {
        crate::procstat::pin_current_thread(cpu);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(drive(addr, connections, warmup, duration, on_measure_start))
    });
    handle.join().expect("load thread")
}

async fn drive(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    on_measure_start: impl FnOnce(),
) -> LoadResult {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (recording, stop, errors) = (recording.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return hist;
            };
            let _ = s.set_nodelay(true);
            let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
            else {
                errors.fetch_add(1, Ordering::Relaxed);
                return hist;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = hyper::Request::get("/bench")
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let t = Instant::now();
                let ok = match send.send_request(req).await {
                    Ok(resp) => {
                        resp.status().is_success() && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if recording.load(Ordering::Relaxed) {
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                }
            }
            hist
        }));
    }
    tokio::time::sleep(warmup).await;
    on_measure_start();
    let started = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = all.add(&h);
        }
    }
    LoadResult {
        requests: all.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
    }
}
