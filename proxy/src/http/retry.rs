//! The retry state of one request, as Envoy's router keeps it: the route's policy merged
//! with the request's `x-envoy-retry-on`, `x-envoy-retry-grpc-on`, `x-envoy-max-retries`
//! and `x-envoy-retriable-status-codes` headers (which are consumed, never forwarded),
//! whether a response or a failure is retriable, how many retries are left, and the
//! fully jittered exponential back-off between attempts.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode};

use super::headers::names;
use crate::config::retry::{RetryOn, RetryPolicy};

/// Why an attempt got no response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection to the host.
    ConnectFailure,
    /// The connection or stream failed; `sent` tells whether any of the request had
    /// been written.
    Reset { sent: bool },
    /// The HTTP/2 peer refused the stream (safe to retry).
    RefusedStream,
    /// `per_try_timeout` expired.
    PerTryTimeout,
}

/// What to do after an attempt that could be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Retriable, but no retries are left (URX).
    LimitExceeded,
}

/// The policy a request with retry headers but no configured policy gets.
static HEADERS_ONLY: LazyLock<Arc<RetryPolicy>> =
    LazyLock::new(|| Arc::new(RetryPolicy::from_headers_only()));

pub struct RetryState {
    policy: Arc<RetryPolicy>,
    on: RetryOn,
    remaining: u32,
    /// Status codes added by `x-envoy-retriable-status-codes`.
    extra_status_codes: Vec<u16>,
    /// Header names added by `x-envoy-retriable-header-names` (presence matches).
    extra_header_names: Vec<HeaderName>,
    next_backoff_ms: u64,
    attempts: u32,
}

impl RetryState {
    /// The state for a request routed with `policy`; consumes the retry headers from
    /// `headers`, which the caller found to hold some `x-envoy-*` header (`control`).
    /// `None`: nothing would ever be retried.
    pub fn new(
        policy: Option<&Arc<RetryPolicy>>,
        headers: &mut HeaderMap,
        control: bool,
    ) -> Option<RetryState> {
        if policy.is_none() && !control {
            return None;
        }
        // Without any x-envoy-* header there is nothing to look up.
        let (header_on, header_grpc_on, max_retries, status_codes, header_names) = if control {
            (
                headers
                    .remove(names::X_ENVOY_RETRY_ON)
                    .and_then(|v| v.to_str().ok().map(|s| RetryOn::parse_lenient(s, false))),
                headers
                    .remove(names::X_ENVOY_RETRY_GRPC_ON)
                    .and_then(|v| v.to_str().ok().map(|s| RetryOn::parse_lenient(s, true))),
                headers
                    .remove(names::X_ENVOY_MAX_RETRIES)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok()),
                headers.remove(names::X_ENVOY_RETRIABLE_STATUS_CODES),
                headers.remove(names::X_ENVOY_RETRIABLE_HEADER_NAMES),
            )
        } else {
            Default::default()
        };
        let policy = match policy {
            Some(p) => p.clone(),
            None if header_on.is_some() || header_grpc_on.is_some() => HEADERS_ONLY.clone(),
            None => return None,
        };
        let mut on = policy.retry_on;
        for h in [header_on, header_grpc_on].into_iter().flatten() {
            on = on | h;
        }
        if !policy.retriable_request_headers.is_empty()
            && !policy
                .retriable_request_headers
                .iter()
                .any(|m| m.matches_headers(headers))
        {
            return None;
        }
        if on.is_empty() {
            return None;
        }
        let split = |v: Option<http::HeaderValue>| -> Vec<String> {
            v.and_then(|v| v.to_str().ok().map(str::to_owned))
                .map(|s| s.split(',').map(|w| w.trim().to_owned()).collect())
                .unwrap_or_default()
        };
        Some(RetryState {
            remaining: max_retries.unwrap_or(policy.num_retries),
            next_backoff_ms: policy.base_interval.as_millis().max(1) as u64,
            extra_status_codes: split(status_codes)
                .iter()
                .filter_map(|w| w.parse().ok())
                .collect(),
            extra_header_names: split(header_names)
                .iter()
                .filter_map(|w| HeaderName::from_bytes(w.as_bytes()).ok())
                .collect(),
            on,
            policy,
            attempts: 1,
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The attempt being made (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempts
    }

    /// Whether a response with these headers should be retried (before counting it).
    pub fn retriable_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if headers.contains_key(names::X_ENVOY_RATELIMITED) {
            return self.on.contains(RetryOn::ENVOY_RATELIMITED);
        }
        let code = status.as_u16();
        let on = self.on;
        (on.contains(RetryOn::FIVE_XX) && status.is_server_error())
            || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504))
            || (on.contains(RetryOn::RETRIABLE_4XX) && code == 409)
            || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                && (self.policy.retriable_status_codes.contains(&code)
                    || self.extra_status_codes.contains(&code)))
            || (on.contains(RetryOn::RETRIABLE_HEADERS)
                && (self
                    .policy
                    .retriable_headers
                    .iter()
                    .any(|m| m.matches_headers(headers))
                    || self
                        .extra_header_names
                        .iter()
                        .any(|n| headers.contains_key(n))))
            || (on.any_grpc() && grpc_retriable(on, headers))
    }

    /// Whether an attempt that got no response should be retried.
    pub fn retriable_failure(&self, f: Failure) -> bool {
        let on = self.on;
        if on.intersects(RetryOn::RESET | RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR) {
            return true;
        }
        match f {
            Failure::ConnectFailure => {
                on.intersects(RetryOn::CONNECT_FAILURE | RetryOn::RESET_BEFORE_REQUEST)
            }
            Failure::Reset { sent } => !sent && on.contains(RetryOn::RESET_BEFORE_REQUEST),
            Failure::RefusedStream => {
                on.intersects(RetryOn::REFUSED_STREAM | RetryOn::RESET_BEFORE_REQUEST)
            }
            Failure::PerTryTimeout => false,
        }
    }

    /// After a retriable outcome: retry (with the wait) or give up.
    pub fn advance(&mut self) -> Next {
        if self.remaining == 0 {
            return Next::LimitExceeded;
        }
        self.remaining -= 1;
        self.attempts += 1;
        Next::Retry(self.backoff())
    }

    /// Envoy's jittered back-off: uniform in `[0, interval)`, the interval doubling from
    /// the base up to the maximum.
    fn backoff(&mut self) -> Duration {
        let max = self.policy.max_interval.as_millis().max(1) as u64;
        let interval = self.next_backoff_ms.min(max);
        self.next_backoff_ms = if interval > max / 2 {
            max
        } else {
            interval * 2
        };
        Duration::from_millis(fastrand::u64(0..interval))
    }
}

/// The gRPC status of a trailers-only response (in the headers), against the gRPC
/// conditions.
fn grpc_retriable(on: RetryOn, headers: &HeaderMap) -> bool {
    let Some(status) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
    else {
        return false;
    };
    let cond = match status {
        1 => RetryOn::GRPC_CANCELLED,
        4 => RetryOn::GRPC_DEADLINE_EXCEEDED,
        8 => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        13 => RetryOn::GRPC_INTERNAL,
        14 => RetryOn::GRPC_UNAVAILABLE,
        _ => return false,
    };
    on.contains(cond)
}

#[cfg(test)]
mod tests {
    /// The state as `forward` makes it (with the caller's look for x-envoy-* headers).
    fn state(p: Option<&Arc<RetryPolicy>>, h: &mut HeaderMap) -> Option<RetryState> {
        let control = crate::http::headers::has_envoy_headers(h);
        RetryState::new(p, h, control)
    }
    use super::*;
    use envoy_types::pb::envoy::config::route::v3 as pb;

    fn policy(retry_on: &str, extra: impl FnOnce(&mut pb::RetryPolicy)) -> Arc<RetryPolicy> {
        let mut p = pb::RetryPolicy {
            retry_on: retry_on.into(),
            ..Default::default()
        };
        extra(&mut p);
        Arc::new(RetryPolicy::try_from(&p).expect("policy"))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn headers_merge_into_the_policy_and_are_consumed() {
        let p = policy("connect-failure", |_| {});
        let mut h = headers(&[
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-max-retries", "3"),
            ("x-envoy-retriable-status-codes", "418"),
        ]);
        let mut s = state(Some(&p), &mut h).expect("state");
        assert!(h.is_empty(), "retry headers are not forwarded: {h:?}");
        assert!(s.retriable_response(StatusCode::BAD_GATEWAY, &HeaderMap::new()));
        assert!(s.retriable_failure(Failure::ConnectFailure));
        for _ in 0..3 {
            assert!(matches!(s.advance(), Next::Retry(_)));
        }
        assert_eq!(s.advance(), Next::LimitExceeded);
        assert_eq!(s.attempt(), 4);
    }

    #[test]
    fn no_policy_and_no_headers_means_no_state() {
        assert!(state(None, &mut HeaderMap::new()).is_none());
        let mut h = headers(&[("x-envoy-max-retries", "5")]);
        assert!(state(None, &mut h).is_none());
        let mut h = headers(&[("x-envoy-retry-grpc-on", "unavailable")]);
        let s = state(None, &mut h).expect("header-only policy");
        let grpc = headers(&[("grpc-status", "14")]);
        assert!(s.retriable_response(StatusCode::OK, &grpc));
        assert!(!s.retriable_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()));
    }

    #[test]
    fn conditions_follow_envoy() {
        let s = |on: &str| {
            state(
                Some(&policy(on, |p| p.retriable_status_codes = vec![418])),
                &mut HeaderMap::new(),
            )
            .expect("state")
        };
        let none = HeaderMap::new();
        assert!(s("gateway-error").retriable_response(StatusCode::GATEWAY_TIMEOUT, &none));
        assert!(!s("gateway-error").retriable_response(StatusCode::INTERNAL_SERVER_ERROR, &none));
        assert!(s("retriable-4xx").retriable_response(StatusCode::CONFLICT, &none));
        assert!(s("retriable-status-codes").retriable_response(StatusCode::IM_A_TEAPOT, &none));
        // Rate-limited responses only with envoy-ratelimited, whatever the status.
        let limited = headers(&[("x-envoy-ratelimited", "true")]);
        assert!(!s("5xx").retriable_response(StatusCode::SERVICE_UNAVAILABLE, &limited));
        assert!(s("envoy-ratelimited").retriable_response(StatusCode::TOO_MANY_REQUESTS, &limited));
        // Failures.
        assert!(s("5xx").retriable_failure(Failure::PerTryTimeout));
        assert!(s("reset").retriable_failure(Failure::Reset { sent: true }));
        assert!(!s("connect-failure").retriable_failure(Failure::Reset { sent: false }));
        assert!(s("reset-before-request").retriable_failure(Failure::Reset { sent: false }));
        assert!(!s("reset-before-request").retriable_failure(Failure::Reset { sent: true }));
        assert!(s("refused-stream").retriable_failure(Failure::RefusedStream));
        assert!(!s("retriable-4xx").retriable_failure(Failure::PerTryTimeout));
    }

    #[test]
    fn request_headers_can_restrict_retries() {
        let p = policy("5xx", |p| {
            p.retriable_request_headers = vec![pb::HeaderMatcher {
                name: "x-retry-me".into(),
                header_match_specifier: Some(
                    pb::header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                ),
                ..Default::default()
            }];
        });
        assert!(state(Some(&p), &mut HeaderMap::new()).is_none());
        let mut h = headers(&[("x-retry-me", "1")]);
        assert!(state(Some(&p), &mut h).is_some());
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_interval_capped_at_max() {
        let p = policy("5xx", |p| {
            p.num_retries = Some(envoy_types::pb::google::protobuf::UInt32Value { value: 10 });
            p.retry_back_off = Some(pb::retry_policy::RetryBackOff {
                base_interval: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 0,
                    nanos: 10_000_000,
                }),
                max_interval: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 0,
                    nanos: 50_000_000,
                }),
            });
        });
        fastrand::seed(7);
        let mut s = state(Some(&p), &mut HeaderMap::new()).expect("state");
        let bounds = [10, 20, 40, 50, 50, 50];
        for bound in bounds {
            let Next::Retry(d) = s.advance() else {
                panic!("retries left")
            };
            assert!(d < Duration::from_millis(bound), "{d:?} >= {bound} ms");
        }
    }
}
