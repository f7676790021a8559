//! A cluster's circuit breakers, shared by every worker as Envoy's are: outstanding
//! requests (`max_requests`) and concurrent retries (`max_retries`, or a `retry_budget`
//! over the active requests). A slot is taken with `try_*` and given back when its guard
//! drops; the `circuit_breakers.default.*` gauges follow.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::config::circuit_breakers::Thresholds;
use crate::stats::{Gauge, Store};

#[derive(Debug)]
pub struct Breakers {
    limits: Thresholds,
    requests: AtomicU32,
    retries: AtomicU32,
    stats: BreakerStats,
}

/// `circuit_breakers.default.*`
#[derive(Debug)]
struct BreakerStats {
    rq_open: Gauge,
    rq_retry_open: Gauge,
    /// `remaining_rq` / `remaining_retries`, with `track_remaining`.
    remaining: Option<(Gauge, Gauge)>,
}

/// What kind of slot.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Request,
    Retry,
}

/// A held slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    breakers: Arc<Breakers>,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let b = &self.breakers;
        match self.kind {
            Kind::Request => {
                b.requests.fetch_sub(1, Ordering::AcqRel);
            }
            Kind::Retry => {
                b.retries.fetch_sub(1, Ordering::AcqRel);
            }
        }
        b.publish(self.kind);
    }
}

impl Breakers {
    pub fn new(limits: Thresholds, store: &Store, cluster: &str) -> Arc<Breakers> {
        let g = |s: &str| store.gauge(&format!("cluster.{cluster}.circuit_breakers.default.{s}"));
        let b = Arc::new(Breakers {
            limits,
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            stats: BreakerStats {
                rq_open: g("rq_open"),
                rq_retry_open: g("rq_retry_open"),
                remaining: limits
                    .track_remaining
                    .then(|| (g("remaining_rq"), g("remaining_retries"))),
            },
        });
        // The connection and pending-request breakers exist (at their maximum) but never
        // open yet. Gauges change as slots are taken and given back, as Envoy's do: a
        // limit of zero that nothing ever takes reads as closed.
        g("cx_open").set(0);
        g("rq_pending_open").set(0);
        b.stats.rq_open.set(0);
        b.stats.rq_retry_open.set(0);
        if let Some((rq, retries)) = &b.stats.remaining {
            rq.set(i64::from(limits.max_requests));
            retries.set(i64::from(b.retry_limit()));
        }
        b
    }

    /// An outstanding-request slot, or `None` at `max_requests` (overflow).
    pub fn try_request(self: &Arc<Self>) -> Option<Slot> {
        self.take(&self.requests, self.limits.max_requests, Kind::Request)
    }

    /// A retry slot, or `None` when the retry limit (or budget) is reached.
    pub fn try_retry(self: &Arc<Self>) -> Option<Slot> {
        self.take(&self.retries, self.retry_limit(), Kind::Retry)
    }

    fn retry_limit(&self) -> u32 {
        match self.limits.retry_budget {
            None => self.limits.max_retries,
            Some(b) => {
                let active = f64::from(self.requests.load(Ordering::Acquire));
                ((active * b.percent / 100.0) as u32).max(b.min_concurrency)
            }
        }
    }

    fn take(self: &Arc<Self>, counter: &AtomicU32, limit: u32, kind: Kind) -> Option<Slot> {
        let taken = counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if taken {
            self.publish(kind);
        }
        taken.then(|| Slot {
            breakers: self.clone(),
            kind,
        })
    }

    /// Updates the gauges of one resource from its counter (each resource's only, as
    /// Envoy updates them when that resource is taken or given back).
    fn publish(&self, kind: Kind) {
        let remaining = self.stats.remaining.as_ref();
        match kind {
            Kind::Request => {
                let rq = self.requests.load(Ordering::Acquire);
                let max = self.limits.max_requests;
                self.stats.rq_open.set(i64::from(rq >= max));
                if let Some((g, _)) = remaining {
                    g.set(i64::from(max.saturating_sub(rq)));
                }
            }
            Kind::Retry => {
                let retries = self.retries.load(Ordering::Acquire);
                let max = self.retry_limit();
                self.stats.rq_retry_open.set(i64::from(retries >= max));
                if let Some((_, g)) = remaining {
                    g.set(i64::from(max.saturating_sub(retries)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::circuit_breakers::RetryBudget;

    #[test]
    fn slots_are_limited_and_given_back() {
        let store = Store::default();
        let limits = Thresholds {
            max_requests: 2,
            max_retries: 1,
            track_remaining: true,
            ..Thresholds::default()
        };
        let b = Breakers::new(limits, &store, "c");
        let (r1, r2) = (b.try_request().expect("1"), b.try_request().expect("2"));
        assert!(b.try_request().is_none(), "third overflows");
        assert_eq!(
            store
                .gauge("cluster.c.circuit_breakers.default.rq_open")
                .get(),
            1
        );
        drop(r1);
        assert_eq!(
            store
                .gauge("cluster.c.circuit_breakers.default.rq_open")
                .get(),
            0
        );
        assert_eq!(
            store
                .gauge("cluster.c.circuit_breakers.default.remaining_rq")
                .get(),
            1
        );
        let retry = b.try_retry().expect("retry");
        assert!(b.try_retry().is_none());
        drop((retry, r2));
        assert_eq!(
            store
                .gauge("cluster.c.circuit_breakers.default.remaining_retries")
                .get(),
            1
        );
    }

    #[test]
    fn a_retry_budget_scales_with_active_requests() {
        let store = Store::default();
        let limits = Thresholds {
            retry_budget: Some(RetryBudget {
                percent: 50.0,
                min_concurrency: 1,
            }),
            ..Thresholds::default()
        };
        let b = Breakers::new(limits, &store, "c");
        let held: Vec<Slot> = (0..6).filter_map(|_| b.try_request()).collect();
        let retries: Vec<Slot> = (0..10).filter_map(|_| b.try_retry()).collect();
        assert_eq!((held.len(), retries.len()), (6, 3), "50% of 6 active");
    }
}
