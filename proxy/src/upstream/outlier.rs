//! Outlier detection (passive health checking), as Envoy does it. Every upstream result
//! is reported to the host's [`HostMonitor`] (atomics, on the worker); a run of
//! consecutive failures reaching its threshold ejects the host at once, subject to
//! `max_ejection_percent` and the `enforcing_*` chance. Every `interval` the
//! [`Detector`] returns hosts whose ejection time (base time times the ejection count,
//! capped) has passed, and runs the success-rate and failure-percentage checks over the
//! interval's counts.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::outlier::Outlier;
use crate::stats::{self, Counter, Gauge, Store};
use crate::upstream::host::{flags::FAILED_OUTLIER_CHECK, HostEntry};

/// How one upstream attempt ended, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// The connection could not be made.
    ConnectFailed,
    /// No answer in time (route or per-try timeout).
    Timeout,
    /// The connection or stream was reset before an answer.
    Reset,
    /// A TCP proxy connection was made (its only result).
    Connected,
}

/// Why a host was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    LocalOriginSuccessRate,
    FailurePercentage,
    FailurePercentageLocalOrigin,
}

/// Success and total counts of one interval.
#[derive(Debug, Default)]
struct Bucket {
    success: AtomicU64,
    total: AtomicU64,
}

impl Bucket {
    fn record(&self, success: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if success {
            self.success.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The interval's success rate (percent) and volume, resetting the counts.
    fn take(&self) -> Option<(f64, u64)> {
        let total = self.total.swap(0, Ordering::Relaxed);
        let success = self.success.swap(0, Ordering::Relaxed);
        (total > 0).then(|| (success.min(total) as f64 * 100.0 / total as f64, total))
    }
}

/// Per-host detection state.
#[derive(Debug, Default)]
pub struct HostMonitor {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    external: Bucket,
    local: Bucket,
    ejection: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    count: u32,
    /// Multiplier of the base ejection time; grows per ejection, shrinks per quiet
    /// interval.
    backoff: u32,
    last_ejected: Option<Instant>,
    last_unejected: Option<Instant>,
    jitter: Duration,
}

impl HostMonitor {
    fn ejection(&self) -> MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Times the host has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejection().count
    }
}

/// `cluster.<name>.outlier_detection.*`
#[derive(Debug)]
struct Stats {
    active: Gauge,
    overflow: Counter,
    enforced_total: Counter,
    total: Counter,
    consecutive_5xx: Counter,
    success_rate: Counter,
    /// (detected, enforced) per kind, in [`Kind`] order.
    by_kind: [(Counter, Counter); 7],
}

/// `outlier_detection.*`, in the order [`Stats::new`] looks them up.
static OUTLIER_STATS: [stats::Def; 21] = [
    stats::gauge("ejections_active"),
    stats::counter("ejections_overflow"),
    stats::counter("ejections_enforced_total"),
    stats::counter("ejections_total"),
    stats::counter("ejections_consecutive_5xx"),
    stats::counter("ejections_success_rate"),
    stats::counter("ejections_detected_consecutive_5xx"),
    stats::counter("ejections_enforced_consecutive_5xx"),
    stats::counter("ejections_detected_consecutive_gateway_failure"),
    stats::counter("ejections_enforced_consecutive_gateway_failure"),
    stats::counter("ejections_detected_consecutive_local_origin_failure"),
    stats::counter("ejections_enforced_consecutive_local_origin_failure"),
    stats::counter("ejections_detected_success_rate"),
    stats::counter("ejections_enforced_success_rate"),
    stats::counter("ejections_detected_local_origin_success_rate"),
    stats::counter("ejections_enforced_local_origin_success_rate"),
    stats::counter("ejections_detected_failure_percentage"),
    stats::counter("ejections_enforced_failure_percentage"),
    stats::counter("ejections_detected_local_origin_failure_percentage"),
    stats::counter("ejections_enforced_local_origin_failure_percentage"),
    // Envoy lists this (deprecated) counter too; nothing increments it.
    stats::counter("ejections_detected_degradation"),
];

impl Stats {
    fn new(store: &Store, cluster: &str) -> Self {
        let b = store.block(
            &format!("cluster.{cluster}.outlier_detection."),
            &OUTLIER_STATS,
        );
        let c = |s: &str| b.counter(s);
        let pair = |detected: &str, enforced: &str| (c(detected), c(enforced));
        Stats {
            active: b.gauge("ejections_active"),
            overflow: c("ejections_overflow"),
            enforced_total: c("ejections_enforced_total"),
            total: c("ejections_total"),
            consecutive_5xx: c("ejections_consecutive_5xx"),
            success_rate: c("ejections_success_rate"),
            by_kind: [
                pair(
                    "ejections_detected_consecutive_5xx",
                    "ejections_enforced_consecutive_5xx",
                ),
                pair(
                    "ejections_detected_consecutive_gateway_failure",
                    "ejections_enforced_consecutive_gateway_failure",
                ),
                pair(
                    "ejections_detected_consecutive_local_origin_failure",
                    "ejections_enforced_consecutive_local_origin_failure",
                ),
                pair(
                    "ejections_detected_success_rate",
                    "ejections_enforced_success_rate",
                ),
                pair(
                    "ejections_detected_local_origin_success_rate",
                    "ejections_enforced_local_origin_success_rate",
                ),
                pair(
                    "ejections_detected_failure_percentage",
                    "ejections_enforced_failure_percentage",
                ),
                pair(
                    "ejections_detected_local_origin_failure_percentage",
                    "ejections_enforced_local_origin_failure_percentage",
                ),
            ],
        }
    }

    fn kind(&self, k: Kind) -> &(Counter, Counter) {
        &self.by_kind[k as usize]
    }
}

/// A cluster's outlier detector.
#[derive(Debug)]
pub struct Detector {
    cfg: Outlier,
    stats: Stats,
    /// Serializes ejection decisions (the count of ejected hosts must not race).
    decide: Mutex<()>,
}

impl Detector {
    pub fn new(cfg: Outlier, store: &Store, cluster: &str) -> Self {
        let stats = Stats::new(store, cluster);
        stats.active.set(0);
        Detector {
            cfg,
            stats,
            decide: Mutex::new(()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.cfg.interval
    }

    /// Records one result for `host`; returns true when it ejected the host (the caller
    /// rebuilds its load-balancing view). `hosts` is the cluster's current host set.
    pub fn report(&self, host: &HostEntry, outcome: Outcome, hosts: &[Arc<HostEntry>]) -> bool {
        let m = &host.state.outlier;
        let split = self.cfg.split_external_local_origin_errors;
        let status = match (outcome, split) {
            (Outcome::Status(s), _) => {
                if split {
                    self.local_result(m, true);
                }
                s
            }
            (Outcome::Connected, false) => 200,
            (Outcome::Connected, true) => return self.local_result(m, true),
            (Outcome::Timeout, false) => 504,
            (Outcome::ConnectFailed | Outcome::Reset, false) => 503,
            (Outcome::ConnectFailed | Outcome::Timeout | Outcome::Reset, true) => {
                return self.local_result(m, false)
                    && self.on_consecutive(host, Kind::ConsecutiveLocalOriginFailure, hosts);
            }
        };
        let mut ejected = false;
        m.external.record(!(500..600).contains(&status));
        if (500..600).contains(&status) {
            if matches!(status, 502..=504) {
                if bump(&m.consecutive_gateway) == self.cfg.consecutive_gateway_failure {
                    ejected |= self.on_consecutive(host, Kind::ConsecutiveGatewayFailure, hosts);
                }
            } else {
                reset(&m.consecutive_gateway);
            }
            if bump(&m.consecutive_5xx) == self.cfg.consecutive_5xx {
                ejected |= self.on_consecutive(host, Kind::Consecutive5xx, hosts);
            }
        } else {
            reset(&m.consecutive_5xx);
            reset(&m.consecutive_gateway);
        }
        ejected
    }

    /// A local-origin result in split mode; true when the failure run reached its limit.
    fn local_result(&self, m: &HostMonitor, success: bool) -> bool {
        m.local.record(success);
        if success {
            reset(&m.consecutive_local);
            false
        } else {
            bump(&m.consecutive_local) == self.cfg.consecutive_local_origin_failure
        }
    }

    fn on_consecutive(&self, host: &HostEntry, kind: Kind, hosts: &[Arc<HostEntry>]) -> bool {
        let _g = self.decide.lock().unwrap_or_else(|p| p.into_inner());
        if host.state.has(FAILED_OUTLIER_CHECK) {
            return false;
        }
        self.stats.kind(kind).0.inc();
        let ejected = self.eject(host, kind, hosts);
        let m = &host.state.outlier;
        match kind {
            Kind::Consecutive5xx => {
                self.stats.consecutive_5xx.inc();
                reset(&m.consecutive_5xx);
            }
            Kind::ConsecutiveGatewayFailure => reset(&m.consecutive_gateway),
            _ => reset(&m.consecutive_local),
        }
        ejected
    }

    /// Ejects `host` if the ejection limit and the enforcement chance allow it.
    fn eject(&self, host: &HostEntry, kind: Kind, hosts: &[Arc<HostEntry>]) -> bool {
        let active = ejected_count(hosts);
        let percent = 100.0 * (active + 1) as f64 / hosts.len().max(1) as f64;
        let allowed = percent <= f64::from(self.cfg.max_ejection_percent)
            || (self.cfg.always_eject_one_host && active == 0);
        if !allowed {
            self.stats.overflow.inc();
            return false;
        }
        if matches!(kind, Kind::Consecutive5xx | Kind::SuccessRate) {
            self.stats.total.inc();
        }
        if fastrand::u32(0..100) >= self.enforcing(kind) {
            return false;
        }
        self.stats.enforced_total.inc();
        self.stats.kind(kind).1.inc();
        host.state.set(FAILED_OUTLIER_CHECK);
        let mut e = host.state.outlier.ejection();
        e.count += 1;
        e.last_ejected = Some(Instant::now());
        let jitter_ms = self.cfg.max_ejection_time_jitter.as_millis() as u64;
        e.jitter = Duration::from_millis(fastrand::u64(0..=jitter_ms));
        let base = self.cfg.base_ejection_time;
        if base.saturating_mul(e.backoff) < self.cfg.max_ejection_time.saturating_add(base) {
            e.backoff += 1;
        }
        drop(e);
        self.stats.active.set((active + 1) as i64);
        tracing::debug!(host = %host.addr, ?kind, "outlier ejected");
        true
    }

    fn enforcing(&self, kind: Kind) -> u32 {
        let e = &self.cfg.enforcing;
        match kind {
            Kind::Consecutive5xx => e.consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => e.consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => e.consecutive_local_origin_failure,
            Kind::SuccessRate => e.success_rate,
            Kind::LocalOriginSuccessRate => e.local_origin_success_rate,
            Kind::FailurePercentage => e.failure_percentage,
            Kind::FailurePercentageLocalOrigin => e.failure_percentage_local_origin,
        }
    }

    /// The interval sweep: returns ejected hosts whose time is up, runs the success-rate
    /// and failure-percentage checks, eases the back-off of hosts that stayed in. Returns
    /// true when any host's ejection changed.
    pub fn sweep(&self, hosts: &[Arc<HostEntry>]) -> bool {
        let _g = self.decide.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut changed = false;
        let mut external = Vec::with_capacity(hosts.len());
        let mut local = Vec::with_capacity(hosts.len());
        for h in hosts {
            let m = &h.state.outlier;
            if h.state.has(FAILED_OUTLIER_CHECK) {
                let mut e = m.ejection();
                let base = self.cfg.base_ejection_time.saturating_mul(e.backoff);
                let due = base
                    .min(self.cfg.max_ejection_time)
                    .saturating_add(e.jitter);
                if e.last_ejected.is_some_and(|t| now.duration_since(t) >= due) {
                    h.state.clear(FAILED_OUTLIER_CHECK);
                    reset(&m.consecutive_5xx);
                    reset(&m.consecutive_gateway);
                    reset(&m.consecutive_local);
                    e.last_unejected = Some(now);
                    changed = true;
                    tracing::debug!(host = %h.addr, "outlier returned");
                }
            }
            let (ext, loc) = (m.external.take(), m.local.take());
            if !h.state.has(FAILED_OUTLIER_CHECK) {
                external.extend(ext.map(|r| (h.clone(), r)));
                local.extend(loc.map(|r| (h.clone(), r)));
            }
        }
        changed |= self.rates(&external, false, hosts);
        if self.cfg.split_external_local_origin_errors {
            changed |= self.rates(&local, true, hosts);
        }
        for h in hosts {
            if h.state.has(FAILED_OUTLIER_CHECK) {
                continue;
            }
            let mut e = h.state.outlier.ejection();
            if e.last_unejected
                .is_some_and(|t| now.duration_since(t) >= self.cfg.interval)
                && e.backoff > 0
            {
                e.backoff -= 1;
            }
        }
        self.stats.active.set(ejected_count(hosts) as i64);
        changed
    }

    /// Success-rate and failure-percentage ejections over one interval's rates.
    fn rates(
        &self,
        rates: &[(Arc<HostEntry>, (f64, u64))],
        local: bool,
        hosts: &[Arc<HostEntry>],
    ) -> bool {
        let c = &self.cfg;
        if (hosts.len() as u64) < c.success_rate_minimum_hosts
            && (hosts.len() as u64) < c.failure_percentage_minimum_hosts
        {
            return false;
        }
        let sr: Vec<_> = rates
            .iter()
            .filter(|(_, (_, v))| *v >= c.success_rate_request_volume)
            .collect();
        let fp: Vec<_> = rates
            .iter()
            .filter(|(_, (_, v))| *v >= c.failure_percentage_request_volume)
            .collect();
        let mut changed = false;
        if !sr.is_empty() && sr.len() as u64 >= c.success_rate_minimum_hosts {
            let n = sr.len() as f64;
            let mean = sr.iter().map(|(_, (r, _))| r).sum::<f64>() / n;
            let variance = sr.iter().map(|(_, (r, _))| (r - mean).powi(2)).sum::<f64>() / n;
            let threshold = mean - (c.success_rate_stdev_factor as f64 / 1000.0) * variance.sqrt();
            let kind = if local {
                Kind::LocalOriginSuccessRate
            } else {
                Kind::SuccessRate
            };
            for (h, (rate, _)) in &sr {
                if *rate < threshold {
                    self.stats.success_rate.inc();
                    self.stats.kind(kind).0.inc();
                    changed |= self.eject(h, kind, hosts);
                }
            }
        }
        if !fp.is_empty() && fp.len() as u64 >= c.failure_percentage_minimum_hosts {
            let kind = if local {
                Kind::FailurePercentageLocalOrigin
            } else {
                Kind::FailurePercentage
            };
            for (h, (rate, _)) in &fp {
                if h.state.has(FAILED_OUTLIER_CHECK) {
                    continue;
                }
                if 100.0 - rate >= c.failure_percentage_threshold as f64 {
                    self.stats.kind(kind).0.inc();
                    changed |= self.eject(h, kind, hosts);
                }
            }
        }
        changed
    }
}

fn ejected_count(hosts: &[Arc<HostEntry>]) -> usize {
    hosts
        .iter()
        .filter(|h| h.state.has(FAILED_OUTLIER_CHECK))
        .count()
}

/// Adds one failure to a run; returns the run's new length.
fn bump(run: &AtomicU32) -> u32 {
    run.fetch_add(1, Ordering::AcqRel) + 1
}

/// Ends a run (without writing a zero that is already there: no cache-line traffic on the
/// common all-good path).
fn reset(run: &AtomicU32) {
    if run.load(Ordering::Relaxed) != 0 {
        run.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
