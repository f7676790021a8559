//! Upstream hosts: what a host is ([`Host`], a value compared when DNS or EDS answers
//! change) and what is known about it while it serves ([`HostState`]: health flags set
//! by outlier detection, active requests for least-request balancing, outlier counters).
//! A host that stays in the set across an update keeps its state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use crate::config::cluster::{EdsHealth, EndpointCheck, Locality};
use crate::upstream::outlier::HostMonitor;

/// A resolved upstream host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    pub addr: HostAddr,
    /// The DNS name it was resolved from (for `auto_host_rewrite`).
    pub hostname: Option<String>,
    pub weight: u32,
    pub priority: u32,
    pub locality: Arc<Locality>,
    pub eds_health: EdsHealth,
    /// How active health checks treat the host.
    pub check: EndpointCheck,
}

impl Host {
    /// A healthy host at priority 0 in no particular locality.
    pub fn new(addr: HostAddr, hostname: Option<String>, weight: u32) -> Self {
        Host {
            addr,
            hostname,
            weight,
            priority: 0,
            locality: no_locality(),
            eds_health: EdsHealth::Healthy,
            check: EndpointCheck::default(),
        }
    }
}

/// The locality of hosts that name none (shared: no allocation per host).
fn no_locality() -> Arc<Locality> {
    static NONE: std::sync::LazyLock<Arc<Locality>> = std::sync::LazyLock::new(Arc::default);
    NONE.clone()
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

/// The hosts of one EDS assignment and its overprovisioning factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub hosts: Vec<Host>,
    pub overprovisioning_factor: u32,
}

impl Default for Assignment {
    fn default() -> Self {
        Assignment {
            hosts: Vec::new(),
            overprovisioning_factor: crate::config::cluster::DEFAULT_OVERPROVISIONING,
        }
    }
}

/// A host in a cluster's current set: its description and its running state.
#[derive(Debug)]
pub struct HostEntry {
    pub host: Host,
    pub state: Arc<HostState>,
}

impl std::ops::Deref for HostEntry {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl HostEntry {
    pub fn new(host: Host) -> Arc<Self> {
        Self::with_state(host, Arc::default())
    }

    fn with_state(host: Host, state: Arc<HostState>) -> Arc<Self> {
        Arc::new(HostEntry { host, state })
    }

    /// Where load balancing places the host now.
    pub fn availability(&self) -> Availability {
        let f = self.state.flags.load(Ordering::Acquire);
        if f & flags::FAILED != 0 {
            return Availability::Unhealthy;
        }
        match self.host.eds_health {
            EdsHealth::Unhealthy => Availability::Unhealthy,
            EdsHealth::Degraded => Availability::Degraded,
            EdsHealth::Healthy if f & flags::DEGRADED_ACTIVE_HC != 0 => Availability::Degraded,
            EdsHealth::Healthy => Availability::Healthy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Health flags (bits of [`HostState::flags`]).
pub mod flags {
    /// Ejected by outlier detection.
    pub const FAILED_OUTLIER_CHECK: u8 = 1;
    /// Failing active health checks (or not checked yet).
    pub const FAILED_ACTIVE_HC: u8 = 2;
    /// Active health checks answer "degraded" (`x-envoy-degraded`).
    pub const DEGRADED_ACTIVE_HC: u8 = 4;
    /// Failed at once by a response's `x-envoy-immediate-health-check-fail`: left out of
    /// the host counts that decide panic and priority loads until its checks pass.
    pub const EXCLUDED_VIA_IMMEDIATE_HC_FAIL: u8 = 8;
    /// Removed by EDS while passing its active health checks: it stays, in rotation,
    /// until it fails them (or EDS names it again).
    pub const PENDING_DYNAMIC_REMOVAL: u8 = 16;
    /// The flags that take a host out of the healthy set.
    pub const FAILED: u8 = FAILED_OUTLIER_CHECK | FAILED_ACTIVE_HC;
}

/// What a host's serving has shown so far.
#[derive(Debug, Default)]
pub struct HostState {
    flags: AtomicU8,
    /// Requests in flight to the host (least-request balancing).
    pub active_requests: AtomicU32,
    pub outlier: HostMonitor,
    /// How many responses marked the host failed at once
    /// (`x-envoy-immediate-health-check-fail`); its checking session restarts its count
    /// of successes when this moves.
    pub passive_failures: AtomicU32,
}

impl HostState {
    /// All flags set now (bits of [`flags`]).
    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Acquire)
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    /// Sets the bits of `flag`; whether none of them was set before.
    pub fn set(&self, flag: u8) -> bool {
        self.flags.fetch_or(flag, Ordering::AcqRel) & flag == 0
    }

    /// Clears the bits of `flag`; whether any of them was set before.
    pub fn clear(&self, flag: u8) -> bool {
        self.flags.fetch_and(!flag, Ordering::AcqRel) & flag != 0
    }

    /// Counts a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> ActiveRequest {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }
}

/// A request in flight to a host.
#[derive(Debug)]
pub struct ActiveRequest(Arc<HostState>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hosts of `next`, reusing the state of hosts already in `current` (same address);
/// new hosts start with `initial` flags (failing active health checks until the first
/// check passes, when the cluster has a health checker).
pub fn carry_over(current: &[Arc<HostEntry>], next: Vec<Host>, initial: u8) -> Vec<Arc<HostEntry>> {
    let by_addr: std::collections::HashMap<&HostAddr, &Arc<HostEntry>> =
        current.iter().map(|e| (&e.host.addr, e)).collect();
    next.into_iter()
        .map(|host| match by_addr.get(&host.addr) {
            Some(e) if e.host == host => Arc::clone(e),
            Some(e) => HostEntry::with_state(host, e.state.clone()),
            None => {
                let checked = !host.check.disabled;
                let entry = HostEntry::new(host);
                if checked {
                    let _ = entry.state.set(initial);
                }
                entry
            }
        })
        .collect()
}

/// As Envoy does for a cluster with active health checking: the hosts of `current`
/// that `next` no longer names stay (appended, flagged `PENDING_DYNAMIC_REMOVAL`) unless
/// they fail their active health checks or EDS said they are unhealthy; hosts `next`
/// names lose the flag.
pub fn keep_removed_healthy(current: &[Arc<HostEntry>], next: &mut Vec<Arc<HostEntry>>) {
    for e in next.iter() {
        e.state.clear(flags::PENDING_DYNAMIC_REMOVAL);
    }
    let named: std::collections::HashSet<HostAddr> =
        next.iter().map(|e| e.host.addr.clone()).collect();
    for e in current {
        let failing =
            e.state.has(flags::FAILED_ACTIVE_HC) || e.host.eds_health == EdsHealth::Unhealthy;
        if !failing && !named.contains(&e.host.addr) {
            e.state.set(flags::PENDING_DYNAMIC_REMOVAL);
            next.push(Arc::clone(e));
        }
    }
}

/// Whether the host stays only until it fails its health checks, and now does.
pub fn removal_due(e: &HostEntry) -> bool {
    let f = e.state.flags();
    f & flags::PENDING_DYNAMIC_REMOVAL != 0 && f & flags::FAILED_ACTIVE_HC != 0
}
