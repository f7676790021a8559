//! Route and virtual-host `retry_policy`, converted: the `retry_on` conditions as a set
//! of flags, the retry count, per-try timeouts, the jittered back-off, and the status
//! codes and headers that make a response retriable.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as pb;

use super::common;
use super::error::{ConfigError, Result, Within};
use super::route::{header_matchers, HeaderMatcher};

/// The `retry_on` conditions (and `x-envoy-retry-on` / `x-envoy-retry-grpc-on`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 3);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 4);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 6);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 7);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 8);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 9);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 10);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 12);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 13);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 14);

    const NAMES: [(&'static str, RetryOn); 15] = [
        ("5xx", RetryOn::FIVE_XX),
        ("gateway-error", RetryOn::GATEWAY_ERROR),
        ("reset", RetryOn::RESET),
        ("reset-before-request", RetryOn::RESET_BEFORE_REQUEST),
        ("connect-failure", RetryOn::CONNECT_FAILURE),
        ("envoy-ratelimited", RetryOn::ENVOY_RATELIMITED),
        ("retriable-4xx", RetryOn::RETRIABLE_4XX),
        ("refused-stream", RetryOn::REFUSED_STREAM),
        ("retriable-status-codes", RetryOn::RETRIABLE_STATUS_CODES),
        ("retriable-headers", RetryOn::RETRIABLE_HEADERS),
        ("cancelled", RetryOn::GRPC_CANCELLED),
        ("deadline-exceeded", RetryOn::GRPC_DEADLINE_EXCEEDED),
        ("internal", RetryOn::GRPC_INTERNAL),
        ("resource-exhausted", RetryOn::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", RetryOn::GRPC_UNAVAILABLE),
    ];
    const GRPC: u32 = (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14);

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn any_grpc(self) -> bool {
        self.0 & Self::GRPC != 0
    }

    /// A comma-separated list, as in `retry_on` or `x-envoy-retry-on`. `Err` names the
    /// first unknown condition; `grpc_only` (for `x-envoy-retry-grpc-on`) accepts only
    /// the gRPC conditions.
    pub fn parse(list: &str, grpc_only: bool) -> std::result::Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let found = Self::NAMES
                .iter()
                .find(|(n, f)| *n == word && (!grpc_only || f.any_grpc()));
            match found {
                Some((_, f)) => on = on | *f,
                None => return Err(word.to_owned()),
            }
        }
        Ok(on)
    }

    /// Like [`RetryOn::parse`], skipping unknown words (request headers: Envoy ignores
    /// what it does not know).
    pub fn parse_lenient(list: &str, grpc_only: bool) -> RetryOn {
        list.split(',')
            .filter_map(|w| RetryOn::parse(w, grpc_only).ok())
            .fold(RetryOn::default(), |a, b| a | b)
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, o: RetryOn) -> RetryOn {
        RetryOn(self.0 | o.0)
    }
}

/// Envoy's default back-off base (`upstream.base_retry_backoff_ms`).
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

#[derive(Debug)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Retries after the first attempt (default 1).
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`: an attempt with nothing from the upstream for this long
    /// ends (before its response: like `per_try_timeout`; after: the stream is reset).
    pub per_try_idle_timeout: Option<Duration>,
    pub base_interval: Duration,
    /// Default: ten times the base interval.
    pub max_interval: Duration,
    pub retriable_status_codes: Vec<u16>,
    /// Response headers that make a response retriable (`retriable-headers`).
    pub retriable_headers: Vec<HeaderMatcher>,
    /// When set, only requests matching one of these are retried.
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// `retry_host_predicate` `envoy.retry_host_predicates.previous_hosts`: a retry
    /// avoids the hosts already tried.
    pub previous_hosts: bool,
    /// Host picks per attempt when the predicate rejects the pick (default 1).
    pub host_selection_max_attempts: u32,
}

impl RetryPolicy {
    /// A policy with only the conditions the request asked for by header, when the
    /// route has none (Envoy's defaults otherwise).
    pub fn from_headers_only() -> RetryPolicy {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            base_interval: DEFAULT_BASE_INTERVAL,
            max_interval: DEFAULT_BASE_INTERVAL * 10,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            previous_hosts: false,
            host_selection_max_attempts: 1,
        }
    }
}

const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

impl RetryPolicy {
    /// A route's or virtual host's `retry_policy`, if it has one.
    pub fn optional(p: Option<&pb::RetryPolicy>) -> Result<Option<Arc<RetryPolicy>>> {
        p.map(|p| RetryPolicy::try_from(p).map(Arc::new))
            .transpose()
            .within("retry_policy")
    }
}

impl TryFrom<&pb::RetryPolicy> for RetryPolicy {
    type Error = ConfigError;
    fn try_from(p: &pb::RetryPolicy) -> Result<Self> {
        let retry_on = RetryOn::parse(&p.retry_on, false)
            .map_err(|w| ConfigError::new("retry_on", format!("unknown retry condition {w:?}")))?;
        let num_retries = p.num_retries.as_ref().map_or(1, |n| n.value);
        let per_try_timeout = p
            .per_try_timeout
            .as_ref()
            .map(|d| common::duration(d, "per_try_timeout"))
            .transpose()?
            .filter(|d| !d.is_zero());
        let per_try_idle_timeout = common::timeout_or(
            p.per_try_idle_timeout.as_ref(),
            "per_try_idle_timeout",
            None,
        )?;
        let (base_interval, max_interval) =
            back_off(p.retry_back_off.as_ref()).within("retry_back_off")?;
        let mut retriable_status_codes = Vec::with_capacity(p.retriable_status_codes.len());
        for (i, c) in p.retriable_status_codes.iter().enumerate() {
            let code = u16::try_from(*c)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| ConfigError::new("", format!("{c} is not an HTTP status")))
                .at_index("retriable_status_codes", i)?;
            retriable_status_codes.push(code);
        }
        let mut previous_hosts = false;
        for (i, h) in p.retry_host_predicate.iter().enumerate() {
            // Extensions are found by their typed_config's type, as Envoy does.
            use pb::retry_policy::retry_host_predicate::ConfigType;
            let type_url = match &h.config_type {
                Some(ConfigType::TypedConfig(any)) => any.type_url.as_str(),
                None => "",
            };
            if type_url != PREVIOUS_HOSTS_TYPE {
                return Err(common::unsupported(
                    "typed_config",
                    &format!("retry host predicate {:?} (type {type_url:?})", h.name),
                ))
                .at_index("retry_host_predicate", i);
            }
            previous_hosts = true;
        }
        if p.retry_priority.is_some() {
            return Err(common::unsupported("retry_priority", "retry priorities"));
        }
        if !p.retry_options_predicates.is_empty() {
            return Err(common::unsupported(
                "retry_options_predicates",
                "retry options predicates",
            ));
        }
        if p.rate_limited_retry_back_off.is_some() {
            return Err(common::unsupported(
                "rate_limited_retry_back_off",
                "back-off from rate-limit headers",
            ));
        }
        Ok(RetryPolicy {
            retry_on,
            num_retries,
            per_try_timeout,
            per_try_idle_timeout,
            base_interval,
            max_interval,
            retriable_status_codes,
            retriable_headers: header_matchers(&p.retriable_headers, "retriable_headers")?,
            retriable_request_headers: header_matchers(
                &p.retriable_request_headers,
                "retriable_request_headers",
            )?,
            previous_hosts,
            host_selection_max_attempts: u32::try_from(p.host_selection_retry_max_attempts)
                .unwrap_or(1)
                .max(1),
        })
    }
}

/// `(base, max)`: base must be above zero; max defaults to ten times base and must not
/// be below it.
fn back_off(b: Option<&pb::retry_policy::RetryBackOff>) -> Result<(Duration, Duration)> {
    let Some(b) = b else {
        return Ok((DEFAULT_BASE_INTERVAL, DEFAULT_BASE_INTERVAL * 10));
    };
    let base = b
        .base_interval
        .as_ref()
        .ok_or_else(|| ConfigError::new("base_interval", "is required"))
        .and_then(|d| common::duration(d, "base_interval"))?;
    if base < Duration::from_millis(1) {
        return Err(ConfigError::new("base_interval", "must be at least 1ms"));
    }
    let max = match &b.max_interval {
        None => base * 10,
        Some(d) => common::duration(d, "max_interval")?,
    };
    if max < base {
        return Err(ConfigError::new(
            "max_interval",
            "must not be less than base_interval",
        ));
    }
    Ok((base, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_unknown_ones_are_named() {
        let on = RetryOn::parse("5xx, reset,retriable-status-codes", false).expect("parse");
        assert!(on.contains(RetryOn::FIVE_XX) && on.contains(RetryOn::RESET));
        assert!(on.contains(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(!on.contains(RetryOn::CONNECT_FAILURE));
        assert_eq!(RetryOn::parse("5xx,bogus", false), Err("bogus".to_owned()));
        // gRPC names only in the gRPC header; unknown words skipped from headers.
        assert!(RetryOn::parse("5xx", true).is_err());
        let g = RetryOn::parse_lenient("unavailable,5xx,nope", true);
        assert!(g.contains(RetryOn::GRPC_UNAVAILABLE) && !g.contains(RetryOn::FIVE_XX));
    }

    #[test]
    fn policy_defaults_and_errors() {
        let p = RetryPolicy::try_from(&pb::RetryPolicy {
            retry_on: "gateway-error".into(),
            ..Default::default()
        })
        .expect("policy");
        assert_eq!(p.num_retries, 1);
        assert_eq!(
            (p.base_interval, p.max_interval),
            (Duration::from_millis(25), Duration::from_millis(250))
        );
        let bad = RetryPolicy::try_from(&pb::RetryPolicy {
            retry_on: "5xx".into(),
            retriable_status_codes: vec![99],
            ..Default::default()
        })
        .expect_err("bad status");
        assert!(
            bad.to_string().contains("retriable_status_codes[0]"),
            "{bad}"
        );
    }
}
