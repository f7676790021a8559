//! Cluster `circuit_breakers`: the thresholds of each routing priority (DEFAULT and
//! HIGH; the first entry for a priority counts, Envoy's defaults where a field or the
//! whole entry is missing), `retry_budget` and `track_remaining`. A route's `priority`
//! says which set its requests count against.

use envoy_types::pb::envoy::config::cluster::v3 as pb;

use super::common;
use super::error::{ConfigError, Result, Within};

/// One priority's enforced limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Upstream connections, all hosts and workers together.
    pub max_connections: u32,
    /// Requests waiting for a connection (HTTP/1.1: one to come free or to be opened).
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    pub retry_budget: Option<RetryBudget>,
    /// Publish `remaining_*` gauges.
    pub track_remaining: bool,
}

/// Retries allowed as a share of the active requests, with a floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Percent of active (and pending) requests that may be retries (default 20).
    pub percent: f64,
    /// Retries allowed whatever the share (default 3).
    pub min_concurrency: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
            track_remaining: false,
        }
    }
}

/// A routing priority (`envoy.config.core.v3.RoutingPriority`): which circuit breakers
/// and connection pools a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    #[default]
    Default,
    High,
}

impl Priority {
    /// From the proto enum's number; `field` names it in the error.
    pub fn from_proto(value: i32, field: &str) -> Result<Priority> {
        match value {
            0 => Ok(Priority::Default),
            1 => Ok(Priority::High),
            other => Err(ConfigError::new(
                field,
                format!("{other} is not a RoutingPriority (DEFAULT or HIGH)"),
            )),
        }
    }

    /// As in stat names (`circuit_breakers.default.*`, `circuit_breakers.high.*`).
    pub fn name(self) -> &'static str {
        match self {
            Priority::Default => "default",
            Priority::High => "high",
        }
    }
}

/// The thresholds of both priorities.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CircuitBreakers {
    pub default: Thresholds,
    pub high: Thresholds,
}

impl CircuitBreakers {
    pub fn at(&self, p: Priority) -> &Thresholds {
        match p {
            Priority::Default => &self.default,
            Priority::High => &self.high,
        }
    }
}

impl TryFrom<&pb::CircuitBreakers> for CircuitBreakers {
    type Error = ConfigError;
    fn try_from(cb: &pb::CircuitBreakers) -> Result<Self> {
        if !cb.per_host_thresholds.is_empty() {
            return Err(common::unsupported(
                "per_host_thresholds",
                "per-host circuit breakers",
            ));
        }
        let (mut default, mut high) = (None, None);
        for (i, t) in cb.thresholds.iter().enumerate() {
            let converted = convert(t).at_index("thresholds", i)?;
            let slot =
                match Priority::from_proto(t.priority, "priority").at_index("thresholds", i)? {
                    Priority::Default => &mut default,
                    Priority::High => &mut high,
                };
            slot.get_or_insert(converted);
        }
        Ok(CircuitBreakers {
            default: default.unwrap_or_default(),
            high: high.unwrap_or_default(),
        })
    }
}

fn convert(t: &pb::circuit_breakers::Thresholds) -> Result<Thresholds> {
    let d = Thresholds::default();
    let value = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, default| {
        v.as_ref().map_or(default, |v| v.value)
    };
    if t.max_connection_pools.is_some() {
        return Err(common::unsupported(
            "max_connection_pools",
            "a connection pool limit",
        ));
    }
    let retry_budget = t
        .retry_budget
        .as_ref()
        .map(|b| {
            let percent = b.budget_percent.as_ref().map_or(20.0, |p| p.value);
            if !(0.0..=100.0).contains(&percent) {
                return Err(ConfigError::new(
                    "budget_percent",
                    "must be between 0 and 100",
                ));
            }
            Ok(RetryBudget {
                percent,
                min_concurrency: b.min_retry_concurrency.as_ref().map_or(3, |v| v.value),
            })
        })
        .transpose()
        .within("retry_budget")?;
    Ok(Thresholds {
        max_connections: value(&t.max_connections, d.max_connections),
        max_pending_requests: value(&t.max_pending_requests, d.max_pending_requests),
        max_requests: value(&t.max_requests, d.max_requests),
        max_retries: value(&t.max_retries, d.max_retries),
        retry_budget,
        track_remaining: t.track_remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn u(v: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value: v })
    }

    #[test]
    fn istio_thresholds_load_and_defaults_fill_in() {
        // What istiod sends for a DestinationRule without a connection pool.
        let istio = pb::CircuitBreakers {
            thresholds: vec![pb::circuit_breakers::Thresholds {
                max_connections: u(u32::MAX),
                max_pending_requests: u(u32::MAX),
                max_requests: u(u32::MAX),
                max_retries: u(u32::MAX),
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let cb = CircuitBreakers::try_from(&istio).expect("istio thresholds");
        let t = cb.default;
        assert_eq!((t.max_requests, t.max_retries), (u32::MAX, u32::MAX));
        assert_eq!(t.max_connections, u32::MAX);
        assert!(t.track_remaining);
        assert_eq!(cb.high, Thresholds::default(), "HIGH has Envoy's defaults");
        let empty = CircuitBreakers::try_from(&pb::CircuitBreakers::default()).expect("empty");
        assert_eq!(empty, CircuitBreakers::default());
    }

    #[test]
    fn unsupported_limits_are_named() {
        let cb = pb::CircuitBreakers {
            thresholds: vec![pb::circuit_breakers::Thresholds {
                max_connections: u(10),
                max_pending_requests: u(2),
                max_connection_pools: u(1),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = CircuitBreakers::try_from(&cb).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("thresholds[0].max_connection_pools:"),
            "{e}"
        );
        let mut ok = cb.clone();
        ok.thresholds[0].max_connection_pools = None;
        let t = CircuitBreakers::try_from(&ok)
            .expect("connection limits")
            .default;
        assert_eq!((t.max_connections, t.max_pending_requests), (10, 2));
    }

    #[test]
    fn each_priority_takes_its_first_entry() {
        let entry = |priority, max_requests| pb::circuit_breakers::Thresholds {
            priority,
            max_requests: u(max_requests),
            ..Default::default()
        };
        let cb = pb::CircuitBreakers {
            thresholds: vec![entry(1, 7), entry(0, 3), entry(1, 9), entry(0, 4)],
            ..Default::default()
        };
        let cb = CircuitBreakers::try_from(&cb).expect("both priorities");
        assert_eq!((cb.default.max_requests, cb.high.max_requests), (3, 7));
        assert_eq!(cb.at(Priority::High).max_pending_requests, 1024);
        let bad = pb::CircuitBreakers {
            thresholds: vec![entry(0, 3), entry(2, 1)],
            ..Default::default()
        };
        let e = CircuitBreakers::try_from(&bad).expect_err("no such priority");
        assert_eq!(
            e.to_string(),
            "thresholds[1].priority: 2 is not a RoutingPriority (DEFAULT or HIGH)"
        );
    }
}
