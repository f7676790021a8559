//! Cluster `circuit_breakers`: the thresholds of the DEFAULT routing priority (the first
//! entry for it; Envoy's defaults where a field is unset), `retry_budget` and
//! `track_remaining`. HIGH-priority thresholds are accepted and unused: every request
//! is routed at the default priority.

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

/// `RoutingPriority.DEFAULT`.
const DEFAULT_PRIORITY: i32 = 0;

impl TryFrom<&pb::CircuitBreakers> for Thresholds {
    type Error = ConfigError;
    fn try_from(cb: &pb::CircuitBreakers) -> Result<Self> {
        if !cb.per_host_thresholds.is_empty() {
            return Err(common::unsupported(
                "per_host_thresholds",
                "per-host circuit breakers",
            ));
        }
        let mut chosen = None;
        for (i, t) in cb.thresholds.iter().enumerate() {
            let converted = convert(t).at_index("thresholds", i)?;
            if t.priority == DEFAULT_PRIORITY && chosen.is_none() {
                chosen = Some(converted);
            }
        }
        Ok(chosen.unwrap_or_default())
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
        let t = Thresholds::try_from(&istio).expect("istio thresholds");
        assert_eq!((t.max_requests, t.max_retries), (u32::MAX, u32::MAX));
        assert_eq!(t.max_connections, u32::MAX);
        assert!(t.track_remaining);
        let empty = Thresholds::try_from(&pb::CircuitBreakers::default()).expect("empty");
        assert_eq!(empty, Thresholds::default());
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
        let e = Thresholds::try_from(&cb).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("thresholds[0].max_connection_pools:"),
            "{e}"
        );
        let mut ok = cb.clone();
        ok.thresholds[0].max_connection_pools = None;
        let t = Thresholds::try_from(&ok).expect("connection limits");
        assert_eq!((t.max_connections, t.max_pending_requests), (10, 2));
    }
}
