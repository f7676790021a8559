//! Cluster `outlier_detection` with Envoy's defaults for every unset field.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::google::protobuf::UInt32Value;

use super::common;
use super::error::{ConfigError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    /// Percent of the cluster's hosts that may be ejected at once.
    pub max_ejection_percent: u32,
    /// Eject one host even when `max_ejection_percent` allows none.
    pub always_eject_one_host: bool,
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    /// Local-origin failures (connect failures, timeouts, resets) are counted apart from
    /// upstream 5xx answers.
    pub split_external_local_origin_errors: bool,
    pub success_rate_minimum_hosts: u64,
    pub success_rate_request_volume: u64,
    /// Thousandths of a standard deviation below the mean.
    pub success_rate_stdev_factor: u64,
    pub failure_percentage_threshold: u64,
    pub failure_percentage_minimum_hosts: u64,
    pub failure_percentage_request_volume: u64,
    pub enforcing: Enforcing,
}

/// Percent chance that a detected outlier is actually ejected, per detection kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Enforcing {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub success_rate: u32,
    pub local_origin_success_rate: u32,
    pub failure_percentage: u32,
    pub failure_percentage_local_origin: u32,
}

impl TryFrom<&pb::OutlierDetection> for Outlier {
    type Error = ConfigError;
    fn try_from(o: &pb::OutlierDetection) -> Result<Self> {
        let dur = |d: Option<&envoy_types::pb::google::protobuf::Duration>,
                   field: &str,
                   default: Duration| common::duration_or(d, field, default);
        let interval = dur(o.interval.as_ref(), "interval", Duration::from_secs(10))?;
        if interval.is_zero() {
            return Err(ConfigError::new("interval", "must be greater than zero"));
        }
        let base_ejection_time = dur(
            o.base_ejection_time.as_ref(),
            "base_ejection_time",
            Duration::from_secs(30),
        )?;
        let max_ejection_time = dur(
            o.max_ejection_time.as_ref(),
            "max_ejection_time",
            base_ejection_time.max(Duration::from_secs(300)),
        )?;
        if max_ejection_time < base_ejection_time {
            return Err(ConfigError::new(
                "max_ejection_time",
                "cannot be smaller than base_ejection_time",
            ));
        }
        let pct = |v: Option<&UInt32Value>, field: &str, default: u32| -> Result<u32> {
            let v = common::u32_or(v, default);
            if v > 100 {
                return Err(ConfigError::new(field, format!("{v} is above 100")));
            }
            Ok(v)
        };
        let n = |v: Option<&UInt32Value>, default: u32| u64::from(common::u32_or(v, default));
        if !o.monitors.is_empty() {
            return Err(common::unsupported(
                "monitors",
                "outlier detection extensions",
            ));
        }
        if o.successful_active_health_check_uneject_host
            .as_ref()
            .is_some_and(|b| !b.value)
        {
            return Err(common::unsupported(
                "successful_active_health_check_uneject_host",
                "keeping hosts ejected after a passed health check",
            ));
        }
        Ok(Outlier {
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejection_time_jitter: dur(
                o.max_ejection_time_jitter.as_ref(),
                "max_ejection_time_jitter",
                Duration::ZERO,
            )?,
            max_ejection_percent: pct(o.max_ejection_percent.as_ref(), "max_ejection_percent", 10)?,
            always_eject_one_host: o.always_eject_one_host.as_ref().is_some_and(|b| b.value),
            consecutive_5xx: common::u32_or(o.consecutive_5xx.as_ref(), 5),
            consecutive_gateway_failure: common::u32_or(o.consecutive_gateway_failure.as_ref(), 5),
            consecutive_local_origin_failure: common::u32_or(
                o.consecutive_local_origin_failure.as_ref(),
                5,
            ),
            split_external_local_origin_errors: o.split_external_local_origin_errors,
            success_rate_minimum_hosts: n(o.success_rate_minimum_hosts.as_ref(), 5),
            success_rate_request_volume: n(o.success_rate_request_volume.as_ref(), 100),
            success_rate_stdev_factor: n(o.success_rate_stdev_factor.as_ref(), 1900),
            failure_percentage_threshold: u64::from(pct(
                o.failure_percentage_threshold.as_ref(),
                "failure_percentage_threshold",
                85,
            )?),
            failure_percentage_minimum_hosts: n(o.failure_percentage_minimum_hosts.as_ref(), 5),
            failure_percentage_request_volume: n(o.failure_percentage_request_volume.as_ref(), 50),
            enforcing: Enforcing {
                consecutive_5xx: pct(
                    o.enforcing_consecutive_5xx.as_ref(),
                    "enforcing_consecutive_5xx",
                    100,
                )?,
                consecutive_gateway_failure: pct(
                    o.enforcing_consecutive_gateway_failure.as_ref(),
                    "enforcing_consecutive_gateway_failure",
                    0,
                )?,
                consecutive_local_origin_failure: pct(
                    o.enforcing_consecutive_local_origin_failure.as_ref(),
                    "enforcing_consecutive_local_origin_failure",
                    100,
                )?,
                success_rate: pct(
                    o.enforcing_success_rate.as_ref(),
                    "enforcing_success_rate",
                    100,
                )?,
                local_origin_success_rate: pct(
                    o.enforcing_local_origin_success_rate.as_ref(),
                    "enforcing_local_origin_success_rate",
                    100,
                )?,
                failure_percentage: pct(
                    o.enforcing_failure_percentage.as_ref(),
                    "enforcing_failure_percentage",
                    0,
                )?,
                failure_percentage_local_origin: pct(
                    o.enforcing_failure_percentage_local_origin.as_ref(),
                    "enforcing_failure_percentage_local_origin",
                    0,
                )?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_envoys() {
        let o = Outlier::try_from(&pb::OutlierDetection::default()).expect("valid");
        assert_eq!(o.interval, Duration::from_secs(10));
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_time, Duration::from_secs(300));
        assert_eq!(o.max_ejection_percent, 10);
        assert_eq!(o.consecutive_5xx, 5);
        assert_eq!(o.enforcing.consecutive_gateway_failure, 0);
        assert_eq!(o.enforcing.success_rate, 100);
        assert_eq!(o.success_rate_stdev_factor, 1900);
    }

    #[test]
    fn contradictions_name_the_field() {
        let o = pb::OutlierDetection {
            base_ejection_time: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 60,
                nanos: 0,
            }),
            max_ejection_time: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        };
        let e = Outlier::try_from(&o).expect_err("max below base");
        assert!(e.to_string().contains("max_ejection_time"), "{e}");
        let o = pb::OutlierDetection {
            max_ejection_percent: Some(UInt32Value { value: 101 }),
            ..Default::default()
        };
        let e = Outlier::try_from(&o).expect_err("not a percentage");
        assert!(e.to_string().contains("max_ejection_percent"), "{e}");
    }
}
