//! A cluster's circuit breakers, shared by every worker as Envoy's are, one set per
//! routing priority: upstream connections (`max_connections`), requests waiting for a
//! connection (`max_pending_requests`), outstanding requests (`max_requests`),
//! concurrent retries (`max_retries`, or a `retry_budget` over the active requests) and
//! connection pools (unlimited: `max_connection_pools` is refused; counted for the
//! `remaining_cx_pools` gauge). A slot is taken with `try_*` and given back when its
//! guard drops; the `circuit_breakers.<priority>.*` gauges follow.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::config::circuit_breakers::{CircuitBreakers, Priority, Thresholds};
use crate::stats::{self, Gauge, Store};

#[derive(Debug)]
pub struct Breakers {
    limits: Thresholds,
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
    /// Connection pools (a worker's connections to one host at this priority), while
    /// they have a connection open or opening.
    pools: AtomicU32,
    stats: BreakerStats,
}

/// A cluster's circuit breakers for each routing priority.
#[derive(Debug)]
pub struct ClusterBreakers {
    default: Arc<Breakers>,
    high: Arc<Breakers>,
}

impl ClusterBreakers {
    pub fn new(config: &CircuitBreakers, store: &Store, cluster: &str) -> ClusterBreakers {
        ClusterBreakers {
            default: Breakers::new(config.default, store, cluster, Priority::Default),
            high: Breakers::new(config.high, store, cluster, Priority::High),
        }
    }

    /// The breakers that requests routed at priority `p` count against.
    pub fn at(&self, p: Priority) -> &Arc<Breakers> {
        match p {
            Priority::Default => &self.default,
            Priority::High => &self.high,
        }
    }
}

/// `circuit_breakers.<priority>.*`
#[derive(Debug)]
struct BreakerStats {
    cx_open: Gauge,
    /// Always 0: pools are not limited.
    cx_pool_open: Gauge,
    rq_pending_open: Gauge,
    rq_open: Gauge,
    rq_retry_open: Gauge,
    /// The `remaining_*` gauges, with `track_remaining`.
    remaining: Option<Remaining>,
}

#[derive(Debug)]
struct Remaining {
    cx: Gauge,
    pending: Gauge,
    rq: Gauge,
    retries: Gauge,
    /// `u64::MAX` (Envoy's unlimited `max_connection_pools`) less the pools open.
    cx_pools: Gauge,
}

/// `circuit_breakers.<priority>.*`; the `remaining_*` gauges (the last five) only with
/// `track_remaining`.
static BREAKER_STATS: [stats::Def; 10] = [
    stats::gauge("cx_open"),
    stats::gauge("cx_pool_open"),
    stats::gauge("rq_pending_open"),
    stats::gauge("rq_open"),
    stats::gauge("rq_retry_open"),
    stats::gauge("remaining_cx"),
    stats::gauge("remaining_pending"),
    stats::gauge("remaining_rq"),
    stats::gauge("remaining_retries"),
    stats::gauge("remaining_cx_pools"),
];

/// What kind of slot.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Pending,
    Request,
    Retry,
    Pool,
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
        b.counter(self.kind).fetch_sub(1, Ordering::AcqRel);
        b.publish(self.kind);
    }
}

impl Breakers {
    fn new(limits: Thresholds, store: &Store, cluster: &str, p: Priority) -> Arc<Breakers> {
        let defs: &'static [stats::Def] = if limits.track_remaining {
            &BREAKER_STATS
        } else {
            &BREAKER_STATS[..5]
        };
        let b = store.block(
            &format!("cluster.{cluster}.circuit_breakers.{}.", p.name()),
            defs,
        );
        let g = |s: &str| b.gauge(s);
        let b = Arc::new(Breakers {
            limits,
            connections: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            pools: AtomicU32::new(0),
            stats: BreakerStats {
                cx_open: g("cx_open"),
                cx_pool_open: g("cx_pool_open"),
                rq_pending_open: g("rq_pending_open"),
                rq_open: g("rq_open"),
                rq_retry_open: g("rq_retry_open"),
                remaining: limits.track_remaining.then(|| Remaining {
                    cx: g("remaining_cx"),
                    pending: g("remaining_pending"),
                    rq: g("remaining_rq"),
                    retries: g("remaining_retries"),
                    cx_pools: g("remaining_cx_pools"),
                }),
            },
        });
        // Gauges change as slots are taken and given back, as Envoy's do: a limit of
        // zero that nothing ever takes reads as closed.
        for g in [
            &b.stats.cx_open,
            &b.stats.cx_pool_open,
            &b.stats.rq_pending_open,
            &b.stats.rq_open,
            &b.stats.rq_retry_open,
        ] {
            g.set(0);
        }
        if let Some(r) = &b.stats.remaining {
            r.cx.set(i64::from(limits.max_connections));
            r.pending.set(i64::from(limits.max_pending_requests));
            r.rq.set(i64::from(limits.max_requests));
            r.retries.set(i64::from(b.retry_limit()));
        }
        // No pool is open: the remainder is the whole (unlimited) pool count.
        b.publish(Kind::Pool);
        b
    }

    /// A connection pool's slot, held while the pool has a connection open or opening.
    pub fn pool(self: &Arc<Self>) -> Slot {
        self.pools.fetch_add(1, Ordering::AcqRel);
        self.publish(Kind::Pool);
        Slot {
            breakers: self.clone(),
            kind: Kind::Pool,
        }
    }

    /// A connection slot, or `None` at `max_connections` (overflow).
    pub fn try_connection(self: &Arc<Self>) -> Option<Slot> {
        self.take(Kind::Connection)
    }

    /// A connection slot past the limit (Envoy opens a pool's first connection even
    /// when the cluster is at its limit, so that its waiting requests can proceed).
    pub fn force_connection(self: &Arc<Self>) -> Slot {
        self.connections.fetch_add(1, Ordering::AcqRel);
        self.publish(Kind::Connection);
        Slot {
            breakers: self.clone(),
            kind: Kind::Connection,
        }
    }

    /// A slot for a request waiting for a connection, or `None` at
    /// `max_pending_requests` (overflow).
    pub fn try_pending(self: &Arc<Self>) -> Option<Slot> {
        self.take(Kind::Pending)
    }

    /// An outstanding-request slot, or `None` at `max_requests` (overflow).
    pub fn try_request(self: &Arc<Self>) -> Option<Slot> {
        self.take(Kind::Request)
    }

    /// A retry slot, or `None` when the retry limit (or budget) is reached.
    pub fn try_retry(self: &Arc<Self>) -> Option<Slot> {
        self.take(Kind::Retry)
    }

    fn counter(&self, kind: Kind) -> &AtomicU32 {
        match kind {
            Kind::Connection => &self.connections,
            Kind::Pending => &self.pending,
            Kind::Request => &self.requests,
            Kind::Retry => &self.retries,
            Kind::Pool => &self.pools,
        }
    }

    /// The limit; pools are unlimited, which Envoy counts as 2^64−1.
    fn limit(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Connection => u64::from(self.limits.max_connections),
            Kind::Pending => u64::from(self.limits.max_pending_requests),
            Kind::Request => u64::from(self.limits.max_requests),
            Kind::Retry => u64::from(self.retry_limit()),
            Kind::Pool => u64::MAX,
        }
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

    fn take(self: &Arc<Self>, kind: Kind) -> Option<Slot> {
        let limit = self.limit(kind);
        let taken = self
            .counter(kind)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (u64::from(n) < limit).then_some(n + 1)
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
        let n = u64::from(self.counter(kind).load(Ordering::Acquire));
        let max = self.limit(kind);
        let open = match kind {
            Kind::Connection => &self.stats.cx_open,
            Kind::Pending => &self.stats.rq_pending_open,
            Kind::Request => &self.stats.rq_open,
            Kind::Retry => &self.stats.rq_retry_open,
            Kind::Pool => &self.stats.cx_pool_open,
        };
        open.set(i64::from(n >= max));
        if let Some(r) = &self.stats.remaining {
            let g = match kind {
                Kind::Connection => &r.cx,
                Kind::Pending => &r.pending,
                Kind::Request => &r.rq,
                Kind::Retry => &r.retries,
                Kind::Pool => &r.cx_pools,
            };
            // The gauge keeps the u64's bits (rendered unsigned, as Envoy's gauges are).
            g.set(max.saturating_sub(n) as i64);
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
        let b = Breakers::new(limits, &store, "c", Priority::Default);
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
    fn connections_may_be_forced_past_the_limit_and_pending_is_limited() {
        let store = Store::default();
        let limits = Thresholds {
            max_connections: 1,
            max_pending_requests: 1,
            track_remaining: true,
            ..Thresholds::default()
        };
        let b = Breakers::new(limits, &store, "c", Priority::Default);
        let gauge = |n: &str| {
            store
                .gauge(&format!("cluster.c.circuit_breakers.default.{n}"))
                .get()
        };
        let c1 = b.try_connection().expect("first connection");
        assert!(b.try_connection().is_none());
        let forced = b.force_connection();
        assert_eq!((gauge("cx_open"), gauge("remaining_cx")), (1, 0));
        drop((c1, forced));
        assert_eq!((gauge("cx_open"), gauge("remaining_cx")), (0, 1));
        let p = b.try_pending().expect("pending");
        assert!(b.try_pending().is_none());
        assert_eq!(gauge("rq_pending_open"), 1);
        drop(p);
        assert_eq!(gauge("remaining_pending"), 1);
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
        let b = Breakers::new(limits, &store, "c", Priority::Default);
        let held: Vec<Slot> = (0..6).filter_map(|_| b.try_request()).collect();
        let retries: Vec<Slot> = (0..10).filter_map(|_| b.try_retry()).collect();
        assert_eq!((held.len(), retries.len()), (6, 3), "50% of 6 active");
    }
}
