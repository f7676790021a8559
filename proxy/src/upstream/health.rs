//! Active health checking, as Envoy does it. A cluster with `health_checks` has a
//! [`HealthChecker`]; its task ([`health_loop`]) keeps one session per host, started when
//! the host joins the cluster and stopped when it leaves. A session probes its host
//! (HTTP, gRPC or TCP, see [`probe`]) every interval, and its [`Session`] turns results
//! into the host's `FAILED_ACTIVE_HC` / `DEGRADED_ACTIVE_HC` flags:
//!
//! - a new host is unhealthy until its first check, and the first success makes it
//!   healthy at once;
//! - after that, `healthy_threshold` successes in a row make an unhealthy host healthy;
//! - `unhealthy_threshold` network failures (connect failure, reset, timeout) or a
//!   retriable status in a row make a healthy host unhealthy; any other failing answer
//!   (an unexpected status, a payload mismatch, a gRPC status other than `SERVING`) does
//!   so at once.
//!
//! A flag change rebuilds the cluster's load-balancing view. The next check waits
//! `interval`, `unhealthy_interval` or an edge interval by the last result, or
//! `no_traffic_interval` while the cluster has never carried traffic.

mod http;
pub mod probe;
mod tcp;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::health_check::HealthCheck;
use crate::drain::DrainWatch;
use crate::stats::{self, Counter, Gauge, Store};
use crate::upstream::cluster::ClusterState;
use crate::upstream::host::{flags, HostEntry, HostState};
use probe::{Check, Failure, Probe};

/// `cluster.<name>.health_check.*`.
#[derive(Debug, Clone)]
pub struct HealthStats {
    pub attempt: Counter,
    pub success: Counter,
    pub failure: Counter,
    pub network_failure: Counter,
    pub passive_failure: Counter,
    pub verify_cluster: Counter,
    pub healthy: Gauge,
    pub degraded: Gauge,
}

/// `health_check.*`, in the order [`HealthStats::new`] looks them up.
static HEALTH_STATS: [stats::Def; 8] = [
    stats::counter("attempt"),
    stats::counter("success"),
    stats::counter("failure"),
    stats::counter("network_failure"),
    stats::counter("passive_failure"),
    stats::counter("verify_cluster"),
    stats::gauge("healthy"),
    stats::gauge("degraded"),
];

impl HealthStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let b = store.block(&format!("cluster.{cluster}.health_check."), &HEALTH_STATS);
        let c = |s: &str| b.counter(s);
        let g = |s: &str| b.gauge(s);
        HealthStats {
            attempt: c("attempt"),
            success: c("success"),
            failure: c("failure"),
            network_failure: c("network_failure"),
            passive_failure: c("passive_failure"),
            verify_cluster: c("verify_cluster"),
            healthy: g("healthy"),
            degraded: g("degraded"),
        }
    }
}

/// A cluster's active health checker.
#[derive(Debug)]
pub struct HealthChecker {
    pub config: Arc<HealthCheck>,
    pub stats: HealthStats,
    /// Bumped when the cluster's host set changes (the checker's task then starts and
    /// stops sessions).
    hosts_version: watch::Sender<u64>,
    /// Hosts still waiting for their first result; `None` until the task has started
    /// its first sessions.
    unchecked: watch::Sender<Option<usize>>,
}

impl HealthChecker {
    pub fn new(config: Arc<HealthCheck>, store: &Store, cluster: &str) -> Self {
        HealthChecker {
            config,
            stats: HealthStats::new(store, cluster),
            hosts_version: watch::Sender::new(0),
            unchecked: watch::Sender::new(None),
        }
    }

    /// The cluster's host set changed.
    pub fn hosts_changed(&self) {
        self.hosts_version.send_modify(|v| *v += 1);
    }

    /// Waits until every host present when checking started has had its first result
    /// (Envoy's cluster warming on initial health checks), at most `limit`.
    pub async fn initialized(&self, limit: Duration) -> bool {
        let mut rx = self.unchecked.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == Some(0)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// An upstream response carried `x-envoy-immediate-health-check-fail`: the host
    /// fails active health checking now, as a passive failure (a host whose checks are
    /// disabled has no session and is left alone). Whether its health changed.
    pub fn immediate_failure(&self, host: &HostEntry) -> bool {
        if host.check.disabled {
            return false;
        }
        host.state.passive_failures.fetch_add(1, Ordering::AcqRel);
        self.stats.failure.inc();
        self.stats.passive_failure.inc();
        let excluded = host.state.set(flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL);
        let failed = host.state.set(flags::FAILED_ACTIVE_HC);
        if failed {
            self.stats.healthy.dec();
        }
        failed || excluded
    }

    /// How long the first round of checks may take (startup waits this long at most).
    pub fn first_round_limit(&self) -> Duration {
        self.config.initial_jitter + self.config.timeout + Duration::from_secs(1)
    }

    fn first_result(&self) {
        self.unchecked
            .send_modify(|n| *n = n.map(|n| n.saturating_sub(1)));
    }

    /// The wait before the next check, from the last result and whether that result
    /// changed the host's health, with the configured jitter.
    pub fn next_interval(&self, healthy: bool, t: Transition, had_traffic: bool) -> Duration {
        let base = base_interval(&self.config, healthy, t, had_traffic);
        with_jitter(
            base,
            self.config.interval_jitter_percent,
            self.config.interval_jitter,
        )
    }
}

/// The interval before jitter (Envoy's rules, including its edge intervals).
pub fn base_interval(c: &HealthCheck, healthy: bool, t: Transition, had_traffic: bool) -> Duration {
    let pending = t == Transition::Pending;
    match (had_traffic, healthy, pending) {
        (true, false, true) => c.unhealthy_edge_interval,
        (true, false, false) => c.unhealthy_interval,
        (true, true, true) => c.healthy_edge_interval,
        (true, true, false) => c.interval,
        (false, true, false) => c.no_traffic_healthy_interval,
        (false, _, _) => c.no_traffic_interval,
    }
}

fn with_jitter(base: Duration, percent: u32, jitter: Duration) -> Duration {
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let mut ms = base_ms;
    let pct_ms = u64::from(percent).saturating_mul(base_ms) / 100;
    if pct_ms > 0 {
        ms = ms.saturating_add(fastrand::u64(..pct_ms));
    }
    let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if jitter_ms > 0 {
        ms = ms.saturating_add(fastrand::u64(..jitter_ms));
    }
    Duration::from_millis(ms.max(1))
}

/// What a check result did to the host's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    Changed,
    /// Counted toward a threshold that is not reached yet.
    Pending,
}

/// One host's run of results.
#[derive(Debug)]
pub struct Session {
    first_check: bool,
    healthy_run: u32,
    unhealthy_run: u32,
    /// The host's count of immediate failures when this session last looked.
    passive_seen: u32,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            first_check: true,
            healthy_run: 0,
            unhealthy_run: 0,
            passive_seen: 0,
        }
    }
}

impl Session {
    /// A session for `host`, counting only the immediate failures still to come.
    pub fn watching(host: &HostState) -> Session {
        Session {
            passive_seen: host.passive_failures.load(Ordering::Acquire),
            ..Session::default()
        }
    }

    pub fn is_first(&self) -> bool {
        self.first_check
    }

    /// Applies one result to the host's flags and the stats.
    pub fn record(
        &mut self,
        check: Check,
        host: &HostState,
        config: &HealthCheck,
        stats: &HealthStats,
    ) -> Transition {
        // A response failed the host at once since the last result: as in Envoy, it now
        // takes `healthy_threshold` successes to come back, the first check included.
        let passive = host.passive_failures.load(Ordering::Acquire);
        if passive != self.passive_seen {
            self.passive_seen = passive;
            self.healthy_run = 0;
            self.first_check = false;
        }
        let t = match check {
            Check::Healthy => self.success(false, host, config, stats),
            Check::Degraded => self.success(true, host, config, stats),
            Check::Failed(f) => self.failure(f, host, config, stats),
        };
        self.first_check = false;
        t
    }

    fn success(
        &mut self,
        degraded: bool,
        host: &HostState,
        config: &HealthCheck,
        stats: &HealthStats,
    ) -> Transition {
        self.unhealthy_run = 0;
        let mut t = Transition::Unchanged;
        if host.has(flags::FAILED_ACTIVE_HC) {
            self.healthy_run = self.healthy_run.saturating_add(1);
            if self.first_check || self.healthy_run >= config.healthy_threshold {
                // Passing again ends an exclusion by an immediate failure.
                host.clear(flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL);
                if host.clear(flags::FAILED_ACTIVE_HC) {
                    stats.healthy.inc();
                }
                t = Transition::Changed;
            } else {
                t = Transition::Pending;
            }
        }
        if degraded != host.has(flags::DEGRADED_ACTIVE_HC) {
            if degraded {
                host.set(flags::DEGRADED_ACTIVE_HC);
                stats.degraded.inc();
            } else {
                host.clear(flags::DEGRADED_ACTIVE_HC);
                stats.degraded.dec();
            }
            if t == Transition::Unchanged {
                t = Transition::Changed;
            }
        }
        stats.success.inc();
        t
    }

    fn failure(
        &mut self,
        failure: Failure,
        host: &HostState,
        config: &HealthCheck,
        stats: &HealthStats,
    ) -> Transition {
        self.healthy_run = 0;
        let mut t = Transition::Unchanged;
        if !host.has(flags::FAILED_ACTIVE_HC) {
            self.unhealthy_run = self.unhealthy_run.saturating_add(1);
            if failure == Failure::Active || self.unhealthy_run >= config.unhealthy_threshold {
                if host.set(flags::FAILED_ACTIVE_HC) {
                    stats.healthy.dec();
                }
                t = Transition::Changed;
            } else {
                t = Transition::Pending;
            }
        }
        stats.failure.inc();
        if matches!(failure, Failure::Network | Failure::Timeout) {
            stats.network_failure.inc();
        }
        t
    }
}

/// Keeps one checking session per host of `cluster` until it is retired or `stop`
/// fires.
pub async fn health_loop(cluster: Arc<ClusterState>, mut stop: DrainWatch) {
    let Some(checker) = cluster.health.clone() else {
        return;
    };
    let mut retired = cluster.retired.watch();
    let mut version = checker.hosts_version.subscribe();
    let mut sessions: HashMap<usize, Running> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        version.mark_unchanged();
        reconcile(&cluster, &checker, &mut sessions, &mut tasks);
        tokio::select! {
            r = version.changed() => if r.is_err() { return },
            _ = stop.signaled() => return,
            _ = retired.signaled() => return,
        }
    }
}

/// Identifies a host's state (kept while the host stays in the cluster).
fn state_key(state: &Arc<HostState>) -> usize {
    Arc::as_ptr(state) as usize
}

/// A host's running session.
struct Running {
    state: Arc<HostState>,
    task: tokio::task::AbortHandle,
}

/// Starts sessions for new hosts and stops those of hosts that left.
fn reconcile(
    cluster: &Arc<ClusterState>,
    checker: &Arc<HealthChecker>,
    sessions: &mut HashMap<usize, Running>,
    tasks: &mut JoinSet<()>,
) {
    let view = cluster.hosts();
    let present: Vec<&Arc<HostEntry>> = view.hosts.iter().filter(|e| !e.check.disabled).collect();
    let keys: std::collections::HashSet<usize> =
        present.iter().map(|e| state_key(&e.state)).collect();
    sessions.retain(|key, running| {
        if keys.contains(key) {
            return true;
        }
        running.task.abort();
        let f = running.state.flags();
        if f & flags::FAILED_ACTIVE_HC == 0 {
            checker.stats.healthy.dec();
        }
        if f & flags::DEGRADED_ACTIVE_HC != 0 {
            checker.stats.degraded.dec();
        }
        false
    });
    let mut added = 0;
    let first_round = checker.unchecked.borrow().is_none();
    for entry in present {
        let key = state_key(&entry.state);
        if sessions.contains_key(&key) {
            continue;
        }
        let f = entry.state.flags();
        if f & flags::FAILED_ACTIVE_HC == 0 {
            checker.stats.healthy.inc();
        }
        if f & flags::DEGRADED_ACTIVE_HC != 0 {
            checker.stats.degraded.inc();
        }
        let task = tasks.spawn(run_session(
            cluster.clone(),
            checker.clone(),
            entry.clone(),
            first_round,
        ));
        sessions.insert(
            key,
            Running {
                state: entry.state.clone(),
                task,
            },
        );
        added += 1;
    }
    // Sessions that ended (a host removed before its first check) no longer count.
    while tasks.try_join_next().is_some() {}
    checker.unchecked.send_modify(|n| {
        *n = Some(match *n {
            // The first round: every host present now.
            None => added,
            // Later hosts are not waited for (the cluster is already serving).
            Some(n) => n,
        })
    });
}

/// Checks one host until the session is stopped; `first_round`: startup waits for its
/// first result.
async fn run_session(
    cluster: Arc<ClusterState>,
    checker: Arc<HealthChecker>,
    host: Arc<HostEntry>,
    first_round: bool,
) {
    let config = checker.config.clone();
    let mut probe = Probe::new(&config, &cluster, &host, &checker.stats);
    if !config.initial_jitter.is_zero() {
        let ms = u64::try_from(config.initial_jitter.as_millis()).unwrap_or(u64::MAX);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(..ms.max(1)))).await;
    }
    let mut session = Session::watching(&host.state);
    loop {
        checker.stats.attempt.inc();
        let mut check = match tokio::time::timeout(config.timeout, probe.check()).await {
            Ok(c) => c,
            Err(_) => {
                probe.close();
                Check::Failed(Failure::Timeout)
            }
        };
        // Results that arrive while waiting (a reused TCP connection closing) count too.
        loop {
            let first = session.is_first();
            let t = session.record(check, &host.state, &config, &checker.stats);
            if t == Transition::Changed {
                tracing::debug!(cluster = %cluster.name, host = %host.addr, ?check, "health changed");
                cluster.health_changed();
            }
            if first && first_round {
                checker.first_result();
            }
            let had_traffic = cluster.stats.upstream_cx_total.get() > 0;
            let wait = checker.next_interval(check.is_success(), t, had_traffic);
            match probe.idle(wait).await {
                Some(c) => check = c,
                None => break,
            }
        }
    }
}
