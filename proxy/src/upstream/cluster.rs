//! Cluster runtime state: the current host set (swapped atomically when DNS answers
//! change), a weighted round-robin schedule, and the cluster's stat handles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::cluster::{Cluster, Discovery};
use crate::config::common::HostAddress;
use crate::drain::Drain;
use crate::stats::{Counter, Gauge, Store};
use crate::upstream::breakers::Breakers;

/// A resolved upstream host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    pub addr: HostAddr,
    /// The DNS name it was resolved from (for `auto_host_rewrite`).
    pub hostname: Option<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAddr::Tcp(a) => write!(f, "{a}"),
            HostAddr::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Hosts plus the round-robin schedule derived from their weights.
#[derive(Debug, Default)]
pub struct HostSet {
    pub hosts: Vec<Host>,
    schedule: Vec<usize>,
}

impl HostSet {
    pub fn new(hosts: Vec<Host>) -> Self {
        let schedule = wrr_schedule(&hosts);
        HostSet { hosts, schedule }
    }
}

/// Interleaved weighted round-robin (smooth WRR, as nginx does): weights are reduced by
/// their GCD and each host appears `weight` times, spread out.
fn wrr_schedule(hosts: &[Host]) -> Vec<usize> {
    let gcd = hosts.iter().map(|h| h.weight.max(1)).fold(0, gcd);
    let weights: Vec<i64> = hosts
        .iter()
        .map(|h| i64::from(h.weight.max(1) / gcd.max(1)))
        .collect();
    let total: i64 = weights.iter().sum();
    // Bound the schedule; beyond this, weights are approximated proportionally.
    let scale = if total > 4096 {
        total as f64 / 4096.0
    } else {
        1.0
    };
    let weights: Vec<i64> = weights
        .iter()
        .map(|w| ((*w as f64 / scale).round() as i64).max(1))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Per-cluster stats (`cluster.<name>.*`).
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_xx: [Counter; 5],
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_retry_overflow: Counter,
    /// `max_requests` reached (Envoy 1.40's name for it).
    pub upstream_rq_active_overflow: Counter,
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_failure: Counter,
    pub update_rejected: Counter,
    pub update_empty: Counter,
}

impl ClusterStats {
    pub fn new(store: &Store, name: &str) -> Self {
        let c = |s: &str| store.counter(&format!("cluster.{name}.{s}"));
        let g = |s: &str| store.gauge(&format!("cluster.{name}.{s}"));
        ClusterStats {
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_active: g("upstream_rq_active"),
            upstream_rq_xx: [
                c("upstream_rq_1xx"),
                c("upstream_rq_2xx"),
                c("upstream_rq_3xx"),
                c("upstream_rq_4xx"),
                c("upstream_rq_5xx"),
            ],
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            upstream_rq_retry_overflow: c("upstream_rq_retry_overflow"),
            upstream_rq_active_overflow: c("upstream_rq_active_overflow"),
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_active: g("upstream_cx_active"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: c("upstream_cx_connect_timeout"),
            upstream_cx_none_healthy: c("upstream_cx_none_healthy"),
            membership_total: g("membership_total"),
            membership_healthy: g("membership_healthy"),
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_failure: c("update_failure"),
            update_rejected: c("update_rejected"),
            update_empty: c("update_empty"),
        }
    }

    pub fn response(&self, status: u16) {
        if let Some(c) = self
            .upstream_rq_xx
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
    }
}

#[derive(Debug)]
pub struct ClusterState {
    pub config: Cluster,
    pub name: Arc<str>,
    hosts: ArcSwap<HostSet>,
    rr: AtomicUsize,
    pub stats: ClusterStats,
    pub breakers: Arc<Breakers>,
    /// Fired when the cluster is removed or replaced (stops its DNS refresh).
    pub retired: Drain,
}

impl ClusterState {
    pub fn new(config: Cluster, store: &Store) -> Self {
        let stats = ClusterStats::new(store, &config.name);
        let breakers = Breakers::new(config.breakers, store, &config.name);
        let initial = match config.discovery {
            Discovery::Static => config.endpoints.iter().filter_map(static_host).collect(),
            Discovery::StrictDns
            | Discovery::LogicalDns
            | Discovery::Eds
            | Discovery::OriginalDst => Vec::new(),
        };
        let state = ClusterState {
            name: config.name.as_str().into(),
            config,
            hosts: ArcSwap::from_pointee(HostSet::default()),
            rr: AtomicUsize::new(0),
            stats,
            breakers,
            retired: Drain::default(),
        };
        state.set_hosts(initial);
        state
    }

    pub fn set_hosts(&self, hosts: Vec<Host>) {
        self.stats.membership_total.set(hosts.len() as i64);
        self.stats.membership_healthy.set(hosts.len() as i64);
        self.hosts.store(Arc::new(HostSet::new(hosts)));
    }

    pub fn hosts(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    /// The host for a downstream connection whose original destination is
    /// `destination`: that address for ORIGINAL_DST clusters (with the configured port
    /// override), else the next host by weighted round robin.
    pub fn pick_for(&self, destination: Option<SocketAddr>) -> Option<Host> {
        if self.config.discovery != Discovery::OriginalDst {
            return self.pick();
        }
        let mut addr = destination?;
        if let Some(port) = self.config.original_dst_port {
            addr.set_port(port);
        }
        Some(Host {
            addr: HostAddr::Tcp(addr),
            hostname: None,
            weight: 1,
        })
    }

    /// Picks the next host by weighted round robin; `None` when the cluster has no hosts.
    pub fn pick(&self) -> Option<Host> {
        let set = self.hosts.load();
        if set.schedule.is_empty() {
            return None;
        }
        let n = self.rr.fetch_add(1, Ordering::Relaxed);
        set.hosts.get(set.schedule[n % set.schedule.len()]).cloned()
    }
}

fn static_host(e: &crate::config::cluster::Endpoint) -> Option<Host> {
    let addr = match &e.address {
        HostAddress::Ip(a) => HostAddr::Tcp(*a),
        HostAddress::Unix(p) => HostAddr::Unix(p.clone()),
        HostAddress::Name { .. } => return None,
    };
    Some(Host {
        addr,
        hostname: None,
        weight: e.weight,
    })
}

/// Clusters by name, looked up on every routed request (a fast hasher).
pub type ClusterMap = HashMap<Arc<str>, Arc<ClusterState>, foldhash::fast::RandomState>;

/// All clusters by name, as an immutable map swapped whole on every change: a request
/// holds the `ClusterState` it looked up (and so finishes on the config it started
/// with) while CDS adds, replaces or removes clusters.
#[derive(Debug, Default)]
pub struct ClusterManager {
    clusters: ArcSwap<ClusterMap>,
    /// Serializes writers (copy, change, swap); readers never wait.
    write: std::sync::Mutex<()>,
}

impl ClusterManager {
    pub fn new(clusters: Vec<Cluster>, store: &Store) -> Self {
        let clusters: ClusterMap = clusters
            .into_iter()
            .map(|c| {
                let s = Arc::new(ClusterState::new(c, store));
                (s.name.clone(), s)
            })
            .collect();
        ClusterManager {
            clusters: ArcSwap::from_pointee(clusters),
            write: std::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<ClusterState>> {
        self.clusters.load().get(name).cloned()
    }

    /// The clusters as they are now.
    pub fn snapshot(&self) -> Arc<ClusterMap> {
        self.clusters.load_full()
    }

    pub fn len(&self) -> usize {
        self.clusters.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.load().is_empty()
    }

    fn change(&self, f: impl FnOnce(&mut ClusterMap)) {
        // A poisoned lock only means another writer panicked; the map itself is whole.
        let _w = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = ClusterMap::clone(&self.clusters.load());
        f(&mut next);
        self.clusters.store(Arc::new(next));
    }

    /// Adds `cluster`, or replaces the one with its name; returns the new state (the
    /// caller starts its DNS refresh, if any).
    pub fn upsert(&self, cluster: Cluster, store: &Store) -> Arc<ClusterState> {
        let state = Arc::new(ClusterState::new(cluster, store));
        let added = state.clone();
        self.change(move |m| {
            m.insert(added.name.clone(), added);
        });
        state
    }

    /// Removes a cluster; requests already holding it finish on it.
    pub fn remove(&self, name: &str) -> Option<Arc<ClusterState>> {
        let mut removed = None;
        self.change(|m| removed = m.remove(name));
        if let Some(r) = &removed {
            r.retired.start();
        }
        removed
    }

    /// Adds or replaces `upserts` and removes `removals` in one swap (one CDS response).
    /// Replaced and removed clusters are retired.
    pub fn update(&self, upserts: Vec<Arc<ClusterState>>, removals: &[String]) {
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        let mut retired = Vec::new();
        self.change(|m| {
            for name in removals {
                retired.extend(m.remove(name.as_str()));
            }
            for c in upserts {
                retired.extend(m.insert(c.name.clone(), c));
            }
        });
        for r in retired {
            r.retired.start();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(port: u16, weight: u32) -> Host {
        Host {
            addr: HostAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
            hostname: None,
            weight,
        }
    }

    #[test]
    fn weighted_round_robin_is_proportional_and_interleaved() {
        let set = HostSet::new(vec![host(1, 3), host(2, 1)]);
        assert_eq!(set.schedule.len(), 4);
        assert_eq!(set.schedule.iter().filter(|i| **i == 0).count(), 3);
        // Smooth: the light host is not at the end of a run of heavy ones twice in a row.
        assert_ne!(
            set.schedule,
            vec![0, 0, 0, 1].into_iter().rev().collect::<Vec<_>>()
        );
        let equal = HostSet::new(vec![host(1, 10), host(2, 10)]);
        assert_eq!(equal.schedule, vec![0, 1]);
    }

    #[test]
    fn clusters_are_added_replaced_and_removed_while_holders_keep_theirs() {
        let store = Store::default();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let m = ClusterManager::new(vec![crate::testutil::static_cluster("a", addr)], &store);
        let held = m.get("a").expect("a");
        let addr2 = SocketAddr::from(([127, 0, 0, 1], 2));
        let new = m.upsert(crate::testutil::static_cluster("a", addr2), &store);
        m.upsert(crate::testutil::static_cluster("b", addr), &store);
        assert_eq!(m.len(), 2);
        // The request that looked "a" up before the change still has the old hosts.
        assert_eq!(held.pick().map(|h| h.addr), Some(HostAddr::Tcp(addr)));
        let now = m.get("a").expect("a");
        assert!(Arc::ptr_eq(&now, &new));
        assert_eq!(now.pick().map(|h| h.addr), Some(HostAddr::Tcp(addr2)));
        assert!(m.remove("b").is_some());
        assert!(m.get("b").is_none() && m.remove("b").is_none());
        assert_eq!(m.snapshot().len(), 1);
    }
}
