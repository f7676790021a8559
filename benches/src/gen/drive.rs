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
            if due >= w.measure_start {
                tally.record((w.measure_end - due).as_nanos());
                Tally::bump(&tally.unsent);
            }
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
            if due >= w.measure_start {
                tally.record((w.measure_end - due).as_nanos());
                Tally::bump(&tally.unsent);
            }
            return Ok(());
        }
        let ok = worker.call().await;
        let done = Instant::now();
        if !ok {
            Tally::bump(&tally.errors);
            return Ok(());
        }
        if w.measuring(due) {
            tally.record((done - due).as_nanos());
        }
        if w.measuring(done) {
            Tally::bump(&tally.completed);
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
        let ok = worker.call().await;
        let done = Instant::now();
        if !ok {
            Tally::bump(&tally.errors);
            return Ok(());
        }
        if w.measuring(sent) {
            tally.record((done - sent).as_nanos());
        }
        if w.measuring(done) {
            Tally::bump(&tally.completed);
        }
    }
}
