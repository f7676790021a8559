//! A cluster's load-balancing settings: `lb_policy` with its `*_lb_config`, and
//! `common_lb_config` (`healthy_panic_threshold`, `locality_weighted_lb_config`,
//! `consistent_hashing_lb_config.use_hostname_for_hashing`).

use envoy_types::pb::envoy::config::cluster::v3 as pb;

use super::common;
use super::error::{ConfigError, Result};

/// Envoy's default `healthy_panic_threshold` (percent).
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;
const DEFAULT_MIN_RING: u64 = 1024;
const DEFAULT_MAX_RING: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev table size (a prime).
pub const DEFAULT_MAGLEV_TABLE: u64 = 65537;

#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    pub policy: Policy,
    /// Below this percentage of available hosts in a priority, balance over all of its
    /// hosts (0 disables panic mode).
    pub panic_threshold: f64,
    /// Pick a locality by its (availability-scaled) weight first.
    pub locality_weighted: bool,
    /// Ring/Maglev keys are host names instead of addresses.
    pub use_hostname_for_hashing: bool,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            policy: Policy::RoundRobin,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            locality_weighted: false,
            use_hostname_for_hashing: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    RoundRobin,
    LeastRequest {
        /// Hosts sampled per pick when all weights are equal (default 2).
        choice_count: u32,
        /// Weighted hosts: weight / (active + 1)^bias (default 1.0).
        active_request_bias: f64,
    },
    Random,
    RingHash {
        min_size: u64,
        max_size: u64,
    },
    Maglev {
        table_size: u64,
    },
    /// ORIGINAL_DST: the host is the connection's original destination.
    ClusterProvided,
}

impl Policy {
    /// Whether the policy uses the route's `hash_policy`.
    pub fn is_hashing(self) -> bool {
        matches!(self, Policy::RingHash { .. } | Policy::Maglev { .. })
    }
}

/// The load balancer of `c` (`original_dst`: whether it is an ORIGINAL_DST cluster).
pub fn from_cluster(c: &pb::Cluster, original_dst: bool) -> Result<LbConfig> {
    use pb::cluster::{LbConfig as L, LbPolicy as P};
    let policy = match (P::try_from(c.lb_policy), original_dst) {
        (Ok(P::ClusterProvided), true) => Policy::ClusterProvided,
        (_, true) => {
            return Err(ConfigError::new(
                "lb_policy",
                "ORIGINAL_DST clusters need lb_policy CLUSTER_PROVIDED",
            ))
        }
        (Ok(P::ClusterProvided), false) => {
            return Err(ConfigError::new(
                "lb_policy",
                "CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters",
            ))
        }
        (Ok(P::RoundRobin), false) => Policy::RoundRobin,
        (Ok(P::LeastRequest), false) => {
            let cfg = match &c.lb_config {
                Some(L::LeastRequestLbConfig(l)) => Some(l),
                _ => None,
            };
            least_request(cfg)?
        }
        (Ok(P::Random), false) => Policy::Random,
        (Ok(P::RingHash), false) => {
            let cfg = match &c.lb_config {
                Some(L::RingHashLbConfig(r)) => Some(r),
                _ => None,
            };
            ring_hash(cfg)?
        }
        (Ok(P::Maglev), false) => {
            let table_size = match &c.lb_config {
                Some(L::MaglevLbConfig(m)) => m.table_size.as_ref().map(|v| v.value),
                _ => None,
            }
            .unwrap_or(DEFAULT_MAGLEV_TABLE);
            if !is_prime(table_size) || table_size > 5_000_011 {
                return Err(ConfigError::new(
                    "maglev_lb_config.table_size",
                    format!("{table_size} must be a prime number no larger than 5000011"),
                ));
            }
            Policy::Maglev { table_size }
        }
        (Ok(P::LoadBalancingPolicyConfig), false) => {
            return Err(common::unsupported(
                "load_balancing_policy",
                "typed load-balancing policy extensions",
            ))
        }
        (Err(_), false) => {
            return Err(ConfigError::new(
                "lb_policy",
                format!("unknown policy {}", c.lb_policy),
            ))
        }
    };
    if c.load_balancing_policy.is_some() {
        return Err(common::unsupported(
            "load_balancing_policy",
            "typed load-balancing policy extensions",
        ));
    }
    let mut lb = LbConfig {
        policy,
        ..LbConfig::default()
    };
    if let Some(common_cfg) = &c.common_lb_config {
        common_lb(common_cfg, &mut lb)?;
    }
    if lb.locality_weighted && policy.is_hashing() {
        return Err(common::unsupported(
            "common_lb_config.locality_weighted_lb_config",
            "locality weights with RING_HASH or MAGLEV",
        ));
    }
    Ok(lb)
}

fn least_request(cfg: Option<&pb::cluster::LeastRequestLbConfig>) -> Result<Policy> {
    let choice_count = common::u32_or(cfg.and_then(|l| l.choice_count.as_ref()), 2);
    if choice_count < 2 {
        return Err(ConfigError::new(
            "least_request_lb_config.choice_count",
            "must be at least 2",
        ));
    }
    let active_request_bias = cfg
        .and_then(|l| l.active_request_bias.as_ref())
        .map_or(1.0, |b| b.default_value);
    if !(active_request_bias >= 0.0 && active_request_bias.is_finite()) {
        return Err(ConfigError::new(
            "least_request_lb_config.active_request_bias",
            "must be a non-negative number",
        ));
    }
    if cfg.is_some_and(|l| l.slow_start_config.is_some()) {
        return Err(common::unsupported(
            "least_request_lb_config.slow_start_config",
            "slow start",
        ));
    }
    Ok(Policy::LeastRequest {
        choice_count,
        active_request_bias,
    })
}

fn ring_hash(cfg: Option<&pb::cluster::RingHashLbConfig>) -> Result<Policy> {
    use pb::cluster::ring_hash_lb_config::HashFunction;
    let min_size = cfg
        .and_then(|r| r.minimum_ring_size.as_ref())
        .map_or(DEFAULT_MIN_RING, |v| v.value);
    let max_size = cfg
        .and_then(|r| r.maximum_ring_size.as_ref())
        .map_or(DEFAULT_MAX_RING, |v| v.value);
    if min_size == 0 || max_size > DEFAULT_MAX_RING {
        return Err(ConfigError::new(
            "ring_hash_lb_config",
            format!("ring sizes must be between 1 and {DEFAULT_MAX_RING}"),
        ));
    }
    if min_size > max_size {
        return Err(ConfigError::new(
            "ring_hash_lb_config.minimum_ring_size",
            format!("{min_size} is above maximum_ring_size {max_size}"),
        ));
    }
    if let Some(r) = cfg {
        if HashFunction::try_from(r.hash_function) != Ok(HashFunction::XxHash) {
            return Err(common::unsupported(
                "ring_hash_lb_config.hash_function",
                "hash functions other than XX_HASH",
            ));
        }
    }
    Ok(Policy::RingHash { min_size, max_size })
}

fn common_lb(c: &pb::cluster::CommonLbConfig, lb: &mut LbConfig) -> Result<()> {
    use pb::cluster::common_lb_config::LocalityConfigSpecifier as L;
    if let Some(p) = &c.healthy_panic_threshold {
        if !(0.0..=100.0).contains(&p.value) {
            return Err(ConfigError::new(
                "common_lb_config.healthy_panic_threshold",
                format!("{} is not a percentage", p.value),
            ));
        }
        lb.panic_threshold = p.value;
    }
    match &c.locality_config_specifier {
        None => {}
        Some(L::LocalityWeightedLbConfig(_)) => lb.locality_weighted = true,
        Some(L::ZoneAwareLbConfig(_)) => {
            return Err(common::unsupported(
                "common_lb_config.zone_aware_lb_config",
                "zone-aware routing",
            ))
        }
    }
    if let Some(h) = &c.consistent_hashing_lb_config {
        lb.use_hostname_for_hashing = h.use_hostname_for_hashing;
        if h.hash_balance_factor.is_some() {
            return Err(common::unsupported(
                "common_lb_config.consistent_hashing_lb_config.hash_balance_factor",
                "bounded-load consistent hashing",
            ));
        }
    }
    if c.override_host_status.is_some() {
        return Err(common::unsupported(
            "common_lb_config.override_host_status",
            "host overrides",
        ));
    }
    Ok(())
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(policy: pb::cluster::LbPolicy) -> pb::Cluster {
        pb::Cluster {
            name: "c".into(),
            lb_policy: policy as i32,
            ..Default::default()
        }
    }

    #[test]
    fn policies_and_their_defaults() {
        use pb::cluster::LbPolicy as P;
        let lr = from_cluster(&cluster(P::LeastRequest), false).expect("valid");
        assert_eq!(
            lr.policy,
            Policy::LeastRequest {
                choice_count: 2,
                active_request_bias: 1.0
            }
        );
        assert_eq!(lr.panic_threshold, 50.0);
        let ring = from_cluster(&cluster(P::RingHash), false).expect("valid");
        assert_eq!(
            ring.policy,
            Policy::RingHash {
                min_size: 1024,
                max_size: 8 * 1024 * 1024
            }
        );
        let maglev = from_cluster(&cluster(P::Maglev), false).expect("valid");
        assert_eq!(maglev.policy, Policy::Maglev { table_size: 65537 });
        assert_eq!(
            from_cluster(&cluster(P::Random), false)
                .expect("valid")
                .policy,
            Policy::Random
        );
    }

    #[test]
    fn contradictions_name_the_field() {
        use pb::cluster::LbPolicy as P;
        let mut c = cluster(P::Maglev);
        c.lb_config = Some(pb::cluster::LbConfig::MaglevLbConfig(
            pb::cluster::MaglevLbConfig {
                table_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 1000 }),
            },
        ));
        let e = from_cluster(&c, false).expect_err("not prime");
        assert!(e.to_string().contains("maglev_lb_config.table_size"), "{e}");
        let e = from_cluster(&cluster(P::RoundRobin), true).expect_err("needs CLUSTER_PROVIDED");
        assert!(e.to_string().contains("lb_policy"), "{e}");
        let mut c = cluster(P::RingHash);
        c.lb_config = Some(pb::cluster::LbConfig::RingHashLbConfig(
            pb::cluster::RingHashLbConfig {
                minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: 2048,
                }),
                maximum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: 1024,
                }),
                hash_function: 0,
            },
        ));
        let e = from_cluster(&c, false).expect_err("min above max");
        assert!(e.to_string().contains("minimum_ring_size"), "{e}");
    }
}
