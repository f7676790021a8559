//! Load balancing over a cluster's hosts. An [`LbView`] is built whenever the host set or
//! a host's health changes (never per request): it holds the hosts split by priority and
//! availability, the priority loads, the per-locality schedules and the policy's tables.
//! A pick is then a priority draw, an optional locality draw and the policy's choice.

mod hashing;
pub mod priority;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::lb::{LbConfig, Policy};
use crate::stats::Counter;
use crate::upstream::host::{flags, Availability, HostEntry};
use hashing::{Maglev, Member, Ring};
use priority::{Chosen, Counts, Loads};

pub use hashing::hash;

/// What a pick knows about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// The route's `hash_policy` result (hashing policies; otherwise unused).
    pub hash: Option<u64>,
    /// 0 for the first pick; retries avoiding previous hosts count up.
    pub attempt: u32,
}

/// The hosts of a cluster as load balancing sees them at one moment.
#[derive(Debug)]
pub struct LbView {
    /// Every host, in configuration order.
    pub hosts: Vec<Arc<HostEntry>>,
    pub healthy: usize,
    pub degraded: usize,
    /// Hosts left out of the counts behind the loads (an immediate health check failure).
    pub excluded: usize,
    /// The assignment's overprovisioning factor the loads were computed with.
    pub overprovisioning: u32,
    policy: Policy,
    loads: Loads,
    priorities: Vec<PriorityView>,
}

#[derive(Debug)]
struct PriorityView {
    all: Arc<Source>,
    healthy: Arc<Source>,
    degraded: Arc<Source>,
    /// With `locality_weighted_lb_config`: localities by effective weight.
    localities: Option<(LocalityPick, LocalityPick)>,
}

/// Localities weighted by `load_balancing_weight` scaled by their availability.
#[derive(Debug)]
struct LocalityPick {
    schedule: Vec<u32>,
    next: AtomicUsize,
    sources: Vec<Source>,
}

/// One candidate list and how the policy picks from it.
#[derive(Debug)]
struct Source {
    hosts: Vec<Arc<HostEntry>>,
    picker: Picker,
}

#[derive(Debug)]
enum Picker {
    /// The weighted schedule and the position in it.
    RoundRobin(Vec<u32>, AtomicUsize),
    LeastRequest {
        equal_weights: bool,
    },
    Random,
    Ring(Ring),
    Maglev(Maglev),
}

impl LbView {
    pub fn build(hosts: Vec<Arc<HostEntry>>, cfg: &LbConfig, overprovisioning: u32) -> LbView {
        let levels = hosts
            .iter()
            .map(|h| h.priority as usize + 1)
            .max()
            .unwrap_or(0);
        let mut counts = vec![Counts::default(); levels];
        let mut by_priority: Vec<Vec<Arc<HostEntry>>> = vec![Vec::new(); levels];
        for h in &hosts {
            by_priority[h.priority as usize].push(h.clone());
        }
        let mut priorities = Vec::with_capacity(levels);
        let (mut healthy_total, mut degraded_total, mut excluded_total) = (0, 0, 0);
        for (p, members) in by_priority.into_iter().enumerate() {
            let (healthy, degraded, excluded) = split(&members);
            counts[p] = Counts {
                // As in Envoy, excluded hosts do not count toward a priority's health.
                total: members.len() - excluded,
                healthy: healthy.len(),
                degraded: degraded.len(),
            };
            healthy_total += healthy.len();
            degraded_total += degraded.len();
            excluded_total += excluded;
            let localities = cfg
                .locality_weighted
                .then(|| localities(&members, cfg, overprovisioning));
            let healthy_src = Arc::new(Source::new(healthy, cfg));
            let all = if counts[p].healthy == members.len() {
                healthy_src.clone()
            } else {
                Arc::new(Source::new(members, cfg))
            };
            priorities.push(PriorityView {
                all,
                healthy: healthy_src,
                degraded: Arc::new(Source::new(degraded, cfg)),
                localities,
            });
        }
        LbView {
            loads: priority::compute(&counts, overprovisioning, cfg.panic_threshold),
            healthy: healthy_total,
            degraded: degraded_total,
            excluded: excluded_total,
            policy: cfg.policy,
            overprovisioning,
            hosts,
            priorities,
        }
    }

    /// The host for a request; `panic` counts picks made in panic mode.
    pub fn pick(&self, ctx: Context, panic: &Counter) -> Option<Arc<HostEntry>> {
        if self.hosts.is_empty() {
            return None;
        }
        let policy = self.policy;
        // One priority taking all the load (the common case): no draw needed.
        let (p, chosen) = if self.loads.healthy.first() == Some(&100) {
            (0, Chosen::Healthy)
        } else {
            let draw = match ctx.hash {
                Some(h) if policy.is_hashing() => h,
                _ => fastrand::u64(..),
            };
            priority::choose(&self.loads, draw)
        };
        let view = self.priorities.get(p)?;
        if self.loads.panic.get(p).copied().unwrap_or(false) {
            panic.inc();
            return view.all.pick(ctx, policy);
        }
        if let Some((healthy, degraded)) = &view.localities {
            let pick = match chosen {
                Chosen::Healthy => healthy,
                Chosen::Degraded => degraded,
            };
            if let Some(source) = pick.next() {
                return source.pick(ctx, policy);
            }
        }
        match chosen {
            Chosen::Healthy => view.healthy.pick(ctx, policy),
            Chosen::Degraded => view.degraded.pick(ctx, policy),
        }
    }
}

/// A priority's healthy and degraded hosts, and how many of its hosts are excluded.
fn split(members: &[Arc<HostEntry>]) -> (Vec<Arc<HostEntry>>, Vec<Arc<HostEntry>>, usize) {
    let mut healthy = Vec::new();
    let mut degraded = Vec::new();
    let mut excluded = 0;
    for h in members {
        if h.state.has(flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL) {
            excluded += 1;
        }
        match h.availability() {
            Availability::Healthy => healthy.push(h.clone()),
            Availability::Degraded => degraded.push(h.clone()),
            Availability::Unhealthy => {}
        }
    }
    (healthy, degraded, excluded)
}

/// The healthy and degraded locality picks of one priority's hosts.
fn localities(
    members: &[Arc<HostEntry>],
    cfg: &LbConfig,
    overprovisioning: u32,
) -> (LocalityPick, LocalityPick) {
    let mut groups: Vec<(&crate::config::cluster::Locality, Vec<Arc<HostEntry>>)> = Vec::new();
    for h in members {
        match groups.iter_mut().find(|g| *g.0 == *h.locality) {
            Some(g) => g.1.push(h.clone()),
            None => groups.push((&h.locality, vec![h.clone()])),
        }
    }
    let build = |want: Availability| {
        let mut weights = Vec::new();
        let mut sources = Vec::new();
        for (locality, hosts) in &groups {
            let usable: Vec<_> = hosts
                .iter()
                .filter(|h| h.availability() == want)
                .cloned()
                .collect();
            let ratio = usable.len() as f64 / hosts.len() as f64;
            let effective =
                f64::from(locality.weight) * (f64::from(overprovisioning) / 100.0 * ratio).min(1.0);
            // Thousandths keep the schedule's proportions close to the float weights.
            let w = (effective * 1000.0).round() as u32;
            if w > 0 && !usable.is_empty() {
                weights.push(w);
                sources.push(Source::new(usable, cfg));
            }
        }
        LocalityPick {
            schedule: wrr_schedule(&weights),
            next: AtomicUsize::new(0),
            sources,
        }
    };
    (build(Availability::Healthy), build(Availability::Degraded))
}

impl LocalityPick {
    fn next(&self) -> Option<&Source> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.sources.get(self.schedule[n] as usize)
    }
}

impl Source {
    fn new(hosts: Vec<Arc<HostEntry>>, cfg: &LbConfig) -> Source {
        // Consistent-hashing keys: the address as text (or the host name).
        let keys: Vec<String> = if cfg.policy.is_hashing() {
            hosts
                .iter()
                .map(|h| match (&h.hostname, cfg.use_hostname_for_hashing) {
                    (Some(name), true) => name.clone(),
                    _ => h.addr.to_string(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let members = || -> Vec<Member<'_>> {
            hosts
                .iter()
                .zip(&keys)
                .map(|(h, key)| Member {
                    key,
                    weight: h.weight,
                })
                .collect()
        };
        let picker = match cfg.policy {
            Policy::RoundRobin | Policy::ClusterProvided => {
                let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
                Picker::RoundRobin(wrr_schedule(&weights), AtomicUsize::new(0))
            }
            Policy::LeastRequest { .. } => Picker::LeastRequest {
                equal_weights: hosts.windows(2).all(|w| w[0].weight == w[1].weight),
            },
            Policy::Random => Picker::Random,
            Policy::RingHash { min_size, max_size } => {
                Picker::Ring(Ring::new(&members(), min_size, max_size))
            }
            Policy::Maglev { table_size } => Picker::Maglev(Maglev::new(&members(), table_size)),
        };
        Source { hosts, picker }
    }

    fn pick(&self, ctx: Context, policy: Policy) -> Option<Arc<HostEntry>> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let index = match &self.picker {
            Picker::RoundRobin(schedule, next) => {
                let i = next.fetch_add(1, Ordering::Relaxed) % schedule.len();
                schedule[i] as usize
            }
            Picker::Random => fastrand::usize(..n),
            Picker::LeastRequest { equal_weights } => {
                let Policy::LeastRequest {
                    choice_count,
                    active_request_bias,
                } = policy
                else {
                    return None;
                };
                if *equal_weights {
                    least_of(&self.hosts, choice_count)
                } else {
                    weighted_least(&self.hosts, active_request_bias)
                }
            }
            Picker::Ring(ring) => {
                ring.lookup(ctx.hash.unwrap_or_else(|| fastrand::u64(..)), ctx.attempt)?
            }
            Picker::Maglev(table) => {
                table.lookup(ctx.hash.unwrap_or_else(|| fastrand::u64(..)), ctx.attempt)?
            }
        };
        self.hosts.get(index).cloned()
    }
}

fn active(h: &HostEntry) -> u32 {
    h.state.active_requests.load(Ordering::Relaxed)
}

/// Equal weights: the least loaded of `choice_count` random hosts.
fn least_of(hosts: &[Arc<HostEntry>], choice_count: u32) -> usize {
    let n = hosts.len();
    let mut best = fastrand::usize(..n);
    for _ in 1..choice_count {
        let c = fastrand::usize(..n);
        if active(&hosts[c]) < active(&hosts[best]) {
            best = c;
        }
    }
    best
}

/// Unequal weights: a host drawn in proportion to weight / (active + 1)^bias.
fn weighted_least(hosts: &[Arc<HostEntry>], bias: f64) -> usize {
    let effective: Vec<f64> = hosts
        .iter()
        .map(|h| {
            let load = f64::from(active(h)) + 1.0;
            let divisor = if bias == 1.0 { load } else { load.powf(bias) };
            f64::from(h.weight) / divisor
        })
        .collect();
    let total: f64 = effective.iter().sum();
    let mut draw = fastrand::f64() * total;
    for (i, w) in effective.iter().enumerate() {
        if draw < *w {
            return i;
        }
        draw -= w;
    }
    hosts.len() - 1
}

/// Interleaved weighted round-robin (smooth WRR, as nginx does): weights are reduced by
/// their GCD and each index appears `weight` times, spread out.
pub fn wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let gcd = weights.iter().map(|w| (*w).max(1)).fold(0, gcd);
    let reduced: Vec<i64> = weights
        .iter()
        .map(|w| i64::from((*w).max(1) / gcd.max(1)))
        .collect();
    let total: i64 = reduced.iter().sum();
    // Bound the schedule; beyond this, weights are approximated proportionally.
    let scale = if total > 4096 {
        total as f64 / 4096.0
    } else {
        1.0
    };
    let reduced: Vec<i64> = reduced
        .iter()
        .map(|w| ((*w as f64 / scale).round() as i64).max(1))
        .collect();
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..reduced.len() {
            current[i] += reduced[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
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

#[cfg(test)]
mod tests;
