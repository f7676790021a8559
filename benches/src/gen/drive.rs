//! The open- and closed-loop drivers.
//!
//! Open loop: request `k` is due at `start + k / rate`. Each worker (one request slot)
//! takes the next due request when it is free, waits for its due time if it is early, and
//! measures latency from the due time. So when the target falls behind, requests queue
//! and their latency grows, as it would for real clients, instead of the generator
//! quietly slowing down.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::client::{self, Worker};
use super::pace::Pacer;
use super::{histogram, Load, Outcome};
use crate::measure::Probe;

struct Window {
    start: Instant,
    measure_start: Instant,
    measure_end: Instant,
}

impl Window {
    fn measuring(&self, t: Instant) -> bool {
        t >= self.measure_start && t < self.measure_end
    }
}

#[derive(Default)]
struct Tally {
    next_slot: Cell<u64>,
    completed: Cell<u64>,
    errors: Cell<u64>,
    unsent: Cell<u64>,
    latency: RefCell<Option<Histogram<u64>>>,
}

impl Tally {
    fn record(&self, ns: u128) {
        if let Some(h) = self.latency.borrow_mut().as_mut() {
            h.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
        }
    }

    fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    /// Sends one request and counts it; latency runs from `from` (its due time, or when
    /// it was sent). False when it failed: the worker stops.
    async fn exchange(&self, worker: &mut Worker, from: Instant, w: &Window) -> bool {
        let ok = worker.call().await;
        let done = Instant::now();
        if !ok {
            Tally::bump(&self.errors);
            return false;
        }
        if w.measuring(from) {
            self.record((done - from).as_nanos());
        }
        if w.measuring(done) {
            Tally::bump(&self.completed);
        }
        true
    }

    /// A request due at `due` that was still waiting when the window closed: counted
    /// with its wait so far.
    fn unsent(&self, due: Instant, w: &Window) {
        if due >= w.measure_start {
            self.record((w.measure_end - due).as_nanos());
            Tally::bump(&self.unsent);
        }
    }
}

pub async fn drive(load: Load, mut probe: Probe) -> Result<Outcome, String> {
    let workers = client::connect(load.addr, load.proto, load.connections, load.streams, 1024)
        .await
        .map_err(|e| format!("connecting to {}: {e}", load.addr))?;
    let start = Instant::now() + Duration::from_millis(2);
    let w = Rc::new(Window {
        start,
        measure_start: start + load.warmup,
        measure_end: start + load.warmup + load.measure,
    });
    let tally = Rc::new(Tally {
        latency: RefCell::new(Some(histogram())),
        ..Tally::default()
    });
    let interval_ns = load.rate.map(|r| (1e9 / r.max(1e-3)) as u64);
    let mut tasks = Vec::new();
    for worker in workers {
        let (w, tally) = (w.clone(), tally.clone());
        tasks.push(tokio::task::spawn_local(async move {
            match interval_ns {
                Some(i) => open_loop(worker, i, &w, &tally).await,
                None => closed_loop(worker, &w, &tally).await,
            }
        }));
    }
    tokio::time::sleep_until(w.measure_start.into()).await;
    probe.begin();
    tokio::time::sleep_until(w.measure_end.into()).await;
    let usage = probe.end();
    for t in tasks {
        t.await.map_err(|e| format!("load worker failed: {e}"))??;
    }
    if let Some(i) = interval_ns {
        // Due in the window but never taken by a worker: waiting since their due time.
        let mut slot = tally.next_slot.get();
        loop {
            let due = w.start + Duration::from_nanos(slot * i);
            if due >= w.measure_end {
                break;
            }
            tally.unsent(due, &w);
            slot += 1;
        }
    }
    let latency = tally.latency.borrow_mut().take().unwrap_or_else(histogram);
    Ok(Outcome {
        latency_ns: latency,
        completed: tally.completed.get(),
        errors: tally.errors.get(),
        unsent: tally.unsent.get(),
        usage,
    })
}

async fn open_loop(
    mut worker: Worker,
    interval_ns: u64,
    w: &Window,
    tally: &Tally,
) -> Result<(), String> {
    let pacer = Pacer::new().map_err(|e| format!("timerfd: {e}"))?;
    loop {
        let slot = tally.next_slot.get();
        tally.next_slot.set(slot + 1);
        let due = w.start + Duration::from_nanos(slot * interval_ns);
        if due >= w.measure_end {
            return Ok(());
        }
        pacer
            .until(due)
            .await
            .map_err(|e| format!("timerfd: {e}"))?;
        if Instant::now() >= w.measure_end {
            // The window closed while this request waited for a free slot.
            tally.unsent(due, w);
            return Ok(());
        }
        if !tally.exchange(&mut worker, due, w).await {
            return Ok(());
        }
    }
}

async fn closed_loop(mut worker: Worker, w: &Window, tally: &Tally) -> Result<(), String> {
    tokio::time::sleep_until(w.start.into()).await;
    loop {
        let sent = Instant::now();
        if sent >= w.measure_end {
            return Ok(());
        }
        if !tally.exchange(&mut worker, sent, w).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::gen::{self, Load, Proto};
    use crate::measure::Probe;

    /// An HTTP/1.1 server that answers every request after `delay`, one at a time per
    /// connection (requests without bodies only).
    fn slow_server(delay: Duration) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                l.set_nonblocking(true).expect("nonblocking");
                let l = tokio::net::TcpListener::from_std(l).expect("listener");
                while let Ok((mut s, _)) = l.accept().await {
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while let Ok(n) = s.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                buf.drain(..end + 4);
                                tokio::time::sleep(delay).await;
                                let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if s.write_all(resp).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        });
        addr
    }

    /// The load tests pin their generator to the same CPU and measure rates: they take
    /// turns, or they slow one another down (the test harness runs tests in parallel).
    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        TURN.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn load(addr: SocketAddr, rate: Option<f64>, measure: Duration) -> Load {
        Load {
            addr,
            proto: Proto::Http1,
            connections: 1,
            streams: 1,
            rate,
            warmup: Duration::from_millis(100),
            measure,
            netns: None,
        }
    }

    #[test]
    fn open_loop_keeps_the_rate_when_the_target_keeps_up() {
        let _turn = one_at_a_time();
        let addr = slow_server(Duration::ZERO);
        let o = gen::run(
            0,
            load(addr, Some(500.0), Duration::from_secs(1)),
            Probe::new(None),
        )
        .expect("run");
        assert_eq!(o.errors, 0);
        // 500 due in the window; allow for a slow CI machine at the edges.
        assert!(
            (400..=520).contains(&o.completed),
            "completed {}",
            o.completed
        );
        assert!(o.latency_ns.len() >= 400);
    }

    /// The open loop over HTTP/2 and gRPC (streams on shared connections) against the
    /// harness's own upstream.
    #[test]
    fn open_loop_over_http2_and_grpc() {
        let _turn = one_at_a_time();
        let up = crate::upstream::start(0, 1024).expect("upstream");
        for proto in [Proto::Http2, Proto::Grpc] {
            let l = Load {
                proto,
                connections: 2,
                streams: 4,
                ..load(up.http, Some(500.0), Duration::from_secs(1))
            };
            let o = gen::run(0, l, Probe::new(None)).expect("run");
            assert_eq!(o.errors, 0, "{proto:?}");
            assert!(
                (400..=520).contains(&o.completed),
                "{proto:?}: completed {}",
                o.completed
            );
        }
    }

    /// A connection per call against the harness's echo upstream, open and closed loop.
    #[test]
    fn tcp_connect_echo_close() {
        let _turn = one_at_a_time();
        let up = crate::upstream::start(0, 1024).expect("upstream");
        for rate in [Some(300.0), None] {
            let l = Load {
                proto: Proto::TcpEcho,
                connections: 4,
                ..load(up.echo, rate, Duration::from_millis(500))
            };
            let o = gen::run(0, l, Probe::new(None)).expect("run");
            assert_eq!(o.errors, 0, "{rate:?}");
            assert!(o.completed >= 100, "{rate:?}: completed {}", o.completed);
            if rate.is_some() {
                assert!(o.completed <= 160, "open loop completed {}", o.completed);
            }
        }
    }

    /// Coordinated omission: a target that needs 20 ms per request, offered 200 req/s on
    /// one connection, serves 50 req/s; the queue grows through the window, and the open
    /// loop must show it (a closed loop would report about 20 ms for every request).
    #[test]
    fn open_loop_shows_the_queue_of_a_slow_target() {
        let _turn = one_at_a_time();
        let addr = slow_server(Duration::from_millis(20));
        let window = Duration::from_millis(800);
        let open = gen::run(0, load(addr, Some(200.0), window), Probe::new(None)).expect("open");
        let closed = gen::run(0, load(addr, None, window), Probe::new(None)).expect("closed");
        assert!(
            closed.quantile_us(0.99) < 100_000.0,
            "closed p99 {}",
            closed.quantile_us(0.99)
        );
        // Requests due late in the window waited most of it.
        assert!(
            open.quantile_us(0.99) > 400_000.0,
            "open p99 {}",
            open.quantile_us(0.99)
        );
        assert!(open.unsent > 50, "unsent {}", open.unsent);
        assert!(open.completed < 60, "completed {}", open.completed);
    }
}
