//! Route actions: `route` (forwarding), `redirect` and `direct_response`, converted and
//! compiled (rewrite regexes, weights, mirror fractions, timeout header).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as pb;
use http::{HeaderName, StatusCode};
use regex::Regex;

use super::circuit_breakers::Priority;
use super::common::{self, header_name, HeaderMutations};
use super::error::{ConfigError, Result, Within};
use super::retry::RetryPolicy;
use super::stream_duration::StreamDuration;

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub enum Action {
    Forward(Box<Forward>),
    Redirect(Redirect),
    Direct(DirectResponse),
}

#[derive(Debug)]
pub struct Forward {
    pub target: ClusterTarget,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: HostRewrite,
    /// `None`: no route timeout (configured as 0, or not used because the route has a
    /// `max_stream_duration` message).
    pub timeout: Option<Duration>,
    /// `x-envoy-expected-rq-timeout-ms` for a first attempt under the route's own
    /// timeouts (`timeout` and [`Forward::per_try_timeout`], no header overriding them).
    pub expected_timeout_header: Option<http::HeaderValue>,
    pub mirrors: Vec<Mirror>,
    /// Per-route `upgrade_configs` overrides: (upgrade type lowercased, enabled).
    pub upgrades: Vec<(String, bool)>,
    /// The route's `retry_policy`, or else its virtual host's.
    pub retry: Option<Arc<RetryPolicy>>,
    /// The virtual host's `include_request_attempt_count` /
    /// `include_attempt_count_in_response`.
    pub attempt_count: AttemptCount,
    /// `per_request_buffer_limit_bytes` (route, else virtual host): how much of a request
    /// body is kept for retries.
    pub buffer_limit: Option<u32>,
    /// The route's `idle_timeout`, replacing the connection manager's
    /// `stream_idle_timeout` once the route is chosen: `None` inherits, `Some(None)`
    /// (configured as 0) disables it.
    pub idle_timeout: Option<Option<Duration>>,
    /// `hash_policy` (used by RING_HASH and MAGLEV clusters).
    pub hash_policy: Option<Arc<super::hash_policy::HashPolicy>>,
    /// `max_stream_duration`, or `max_grpc_timeout` and `grpc_timeout_offset`.
    pub stream: StreamDuration,
    /// `priority`: which circuit breakers and connection pools the requests use.
    pub priority: Priority,
}

/// Where `x-envoy-attempt-count` is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptCount {
    pub request: bool,
    pub response: bool,
}

#[derive(Debug)]
pub enum ClusterTarget {
    Named(Arc<str>),
    Weighted(WeightedClusters),
    Header(HeaderName),
}

#[derive(Debug)]
pub struct WeightedClusters {
    pub clusters: Vec<WeightedCluster>,
    pub total: u64,
}

#[derive(Debug)]
pub struct WeightedCluster {
    pub name: Arc<str>,
    pub weight: u32,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HostRewrite {
    None,
    Literal(http::HeaderValue),
    /// Use the upstream host's name (DNS clusters) as the Host header.
    Auto,
}

#[derive(Debug)]
pub enum MirrorTarget {
    Cluster(Arc<str>),
    /// The cluster named by this request header.
    Header(HeaderName),
}

#[derive(Debug)]
pub struct Mirror {
    pub target: MirrorTarget,
    /// Fraction of requests mirrored, in millionths.
    pub per_million: u32,
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: RedirectPath,
    pub status: StatusCode,
    pub strip_query: bool,
}

#[derive(Debug)]
pub enum RedirectPath {
    Keep,
    Path(String),
    Prefix(String),
    Regex(Regex, String),
}

#[derive(Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<bytes::Bytes>,
}

impl TryFrom<&pb::RouteAction> for Forward {
    type Error = ConfigError;
    fn try_from(a: &pb::RouteAction) -> Result<Self> {
        use pb::route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
        let target = match &a.cluster_specifier {
            Some(C::Cluster(c)) if !c.is_empty() => ClusterTarget::Named(c.as_str().into()),
            Some(C::Cluster(_)) => return Err(ConfigError::new("cluster", "must not be empty")),
            Some(C::ClusterHeader(h)) => {
                ClusterTarget::Header(header_name(h).within("cluster_header")?)
            }
            Some(C::WeightedClusters(w)) => {
                ClusterTarget::Weighted(weighted(w).within("weighted_clusters")?)
            }
            Some(_) => {
                return Err(common::unsupported(
                    "cluster_specifier_plugin",
                    "cluster specifier plugins",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    "cluster_specifier",
                    "one of cluster, cluster_header or weighted_clusters is required",
                ))
            }
        };
        let host_rewrite = match &a.host_rewrite_specifier {
            None => HostRewrite::None,
            Some(H::HostRewriteLiteral(h)) => HostRewrite::Literal(
                http::HeaderValue::from_str(h)
                    .map_err(|_| ConfigError::new("host_rewrite_literal", "not a valid host"))?,
            ),
            Some(H::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
            Some(H::AutoHostRewrite(_)) => HostRewrite::None,
            Some(_) => {
                return Err(common::unsupported(
                    "host_rewrite_specifier",
                    "host rewrite from header or path regex",
                ))
            }
        };
        let regex_rewrite = a
            .regex_rewrite
            .as_ref()
            .map(regex_substitution)
            .transpose()
            .within("regex_rewrite")?;
        let retry = RetryPolicy::optional(a.retry_policy.as_ref())?;
        let hash_policy = super::hash_policy::HashPolicy::from_route(&a.hash_policy)?.map(Arc::new);
        let stream = StreamDuration::from_route(a)?;
        let priority = Priority::from_proto(a.priority, "priority")?;
        // With a max_stream_duration message the route timeout is not used (as in Envoy).
        let timeout =
            common::timeout_or(a.timeout.as_ref(), "timeout", Some(DEFAULT_ROUTE_TIMEOUT))?
                .filter(|_| stream.uses_route_timeout());
        let idle_timeout = a
            .idle_timeout
            .as_ref()
            .map(|d| common::duration(d, "idle_timeout").map(|d| (!d.is_zero()).then_some(d)))
            .transpose()?;
        let mut mirrors = Vec::new();
        for (i, m) in a.request_mirror_policies.iter().enumerate() {
            mirrors.push(mirror(m).at_index("request_mirror_policies", i)?);
        }
        let upgrades = a
            .upgrade_configs
            .iter()
            .map(|u| {
                (
                    u.upgrade_type.to_ascii_lowercase(),
                    u.enabled.as_ref().is_none_or(|b| b.value),
                )
            })
            .collect();
        let mut f = Forward {
            target,
            prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
            regex_rewrite,
            host_rewrite,
            timeout,
            expected_timeout_header: None,
            mirrors,
            upgrades,
            retry,
            attempt_count: AttemptCount::default(),
            buffer_limit: None,
            idle_timeout,
            hash_policy,
            stream,
            priority,
        };
        f.expected_timeout_header = f.expected_header();
        Ok(f)
    }
}

impl Forward {
    /// The route's own per-try timeout: its retry policy's, when below the route timeout.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        effective_per_try(
            self.timeout,
            self.retry.as_ref().and_then(|p| p.per_try_timeout),
        )
    }

    /// Takes the virtual host's retry policy when the route has none of its own.
    pub fn inherit_retry(&mut self, retry: &Option<Arc<RetryPolicy>>) {
        if self.retry.is_none() {
            self.retry = retry.clone();
            self.expected_timeout_header = self.expected_header();
        }
    }

    fn expected_header(&self) -> Option<http::HeaderValue> {
        expected_ms(self.timeout, self.per_try_timeout(), Duration::ZERO)
            .map(http::HeaderValue::from)
    }
}

/// A per-try timeout counts only below the route timeout; Envoy drops it otherwise.
pub fn effective_per_try(route: Option<Duration>, per_try: Option<Duration>) -> Option<Duration> {
    per_try.filter(|p| route.is_none_or(|r| *p < r))
}

/// `x-envoy-expected-rq-timeout-ms` for an attempt made `elapsed` after the request
/// started, as Envoy computes it: the per-try timeout, else the route timeout, but no
/// more than what is left of the route timeout (at least 1). `None`: no timeout at all.
pub fn expected_ms(
    route: Option<Duration>,
    per_try: Option<Duration>,
    elapsed: Duration,
) -> Option<u64> {
    let ms = |d: Duration| d.as_millis() as u64;
    let global = route.map_or(0, ms);
    let expected = per_try.map_or(global, ms);
    if expected == 0 {
        return None;
    }
    if global == 0 {
        return Some(expected);
    }
    let elapsed = ms(elapsed);
    Some(if elapsed >= global {
        1
    } else {
        expected.min(global - elapsed)
    })
}

/// A `RegexMatchAndSubstitute`: the compiled pattern and the substitution in the regex
/// crate's syntax.
pub(super) fn regex_substitution(
    r: &envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute,
) -> Result<(Regex, String)> {
    let pattern = r
        .pattern
        .as_ref()
        .ok_or_else(|| ConfigError::new("pattern", "is required"))?;
    Ok((
        common::regex_unanchored(pattern, "pattern")?,
        rewrite_substitution(&r.substitution),
    ))
}

/// RE2 substitutions use `\1`; the regex crate uses `${1}`.
fn rewrite_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

fn weighted(w: &pb::WeightedCluster) -> Result<WeightedClusters> {
    if w.clusters.is_empty() {
        return Err(ConfigError::new(
            "clusters",
            "at least one cluster is required",
        ));
    }
    let mut clusters = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.iter().enumerate() {
        let entry = (|| {
            if c.name.is_empty() {
                return Err(ConfigError::new(
                    "name",
                    "must not be empty (cluster_header is not supported)",
                ));
            }
            super::per_filter::reject_weighted(&c.typed_per_filter_config)?;
            Ok(WeightedCluster {
                name: c.name.as_str().into(),
                weight: common::u32_or(c.weight.as_ref(), 0),
                request_headers: HeaderMutations::build(
                    &c.request_headers_to_add,
                    &c.request_headers_to_remove,
                    "request_headers_to_add",
                    "request_headers_to_remove",
                )?,
                response_headers: HeaderMutations::build(
                    &c.response_headers_to_add,
                    &c.response_headers_to_remove,
                    "response_headers_to_add",
                    "response_headers_to_remove",
                )?,
            })
        })();
        clusters.push(entry.at_index("clusters", i)?);
    }
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return Err(ConfigError::new(
            "clusters",
            "the sum of weights must be greater than 0",
        ));
    }
    Ok(WeightedClusters { clusters, total })
}

fn mirror(m: &pb::route_action::RequestMirrorPolicy) -> Result<Mirror> {
    let target = match (m.cluster.is_empty(), m.cluster_header.is_empty()) {
        (false, true) => MirrorTarget::Cluster(m.cluster.as_str().into()),
        (true, false) => {
            MirrorTarget::Header(header_name(&m.cluster_header).within("cluster_header")?)
        }
        _ => {
            return Err(ConfigError::new(
                "cluster",
                "exactly one of cluster and cluster_header is required",
            ))
        }
    };
    let per_million = match &m.runtime_fraction {
        None => 1_000_000,
        Some(f) => fraction_per_million(f.default_value.as_ref()),
    };
    Ok(Mirror {
        target,
        per_million,
    })
}

/// A `FractionalPercent` as millionths.
pub fn fraction_per_million(
    f: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
) -> u32 {
    let Some(f) = f else { return 0 };
    let scale = match f.denominator {
        0 => 10_000,
        1 => 100,
        _ => 1,
    };
    f.numerator.saturating_mul(scale).min(1_000_000)
}

impl TryFrom<&pb::RedirectAction> for Redirect {
    type Error = ConfigError;
    fn try_from(r: &pb::RedirectAction) -> Result<Self> {
        use pb::redirect_action::{
            PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
        };
        let status = match C::try_from(r.response_code) {
            Ok(C::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
            Ok(C::Found) => StatusCode::FOUND,
            Ok(C::SeeOther) => StatusCode::SEE_OTHER,
            Ok(C::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(C::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            Err(_) => return Err(ConfigError::new("response_code", "unknown value")),
        };
        let scheme = match &r.scheme_rewrite_specifier {
            Some(S::HttpsRedirect(true)) => Some("https".to_string()),
            Some(S::HttpsRedirect(false)) | None => None,
            Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
        };
        let path = match &r.path_rewrite_specifier {
            None => RedirectPath::Keep,
            Some(P::PathRedirect(p)) => RedirectPath::Path(p.clone()),
            Some(P::PrefixRewrite(p)) => RedirectPath::Prefix(p.clone()),
            Some(P::PathRewrite(_)) => {
                return Err(common::unsupported(
                    "path_rewrite",
                    "substitution-format path redirects",
                ))
            }
            Some(P::RegexRewrite(rr)) => {
                let (re, with) = regex_substitution(rr).within("regex_rewrite")?;
                RedirectPath::Regex(re, with)
            }
        };
        let port = match r.port_redirect {
            0 => None,
            p => Some(
                u16::try_from(p)
                    .map_err(|_| ConfigError::new("port_redirect", "not a valid port"))?,
            ),
        };
        Ok(Redirect {
            scheme,
            host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
            port,
            path,
            status,
            strip_query: r.strip_query,
        })
    }
}

impl TryFrom<&pb::DirectResponseAction> for DirectResponse {
    type Error = ConfigError;
    fn try_from(d: &pb::DirectResponseAction) -> Result<Self> {
        let status = u16::try_from(d.status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| {
                ConfigError::new("status", format!("{} is not in [200, 600)", d.status))
            })?;
        let body = d
            .body
            .as_ref()
            .map(data_source)
            .transpose()
            .within("body")?;
        Ok(DirectResponse { status, body })
    }
}

/// Reads a `DataSource` (inline bytes/string, a file, or an environment variable).
pub fn data_source(d: &core::DataSource) -> Result<bytes::Bytes> {
    use core::data_source::Specifier as S;
    match &d.specifier {
        Some(S::InlineBytes(b)) => Ok(bytes::Bytes::from(b.clone())),
        Some(S::InlineString(s)) => Ok(bytes::Bytes::from(s.clone())),
        Some(S::Filename(f)) => std::fs::read(f)
            .map(bytes::Bytes::from)
            .map_err(|e| ConfigError::new("filename", format!("cannot read '{f}': {e}"))),
        Some(S::EnvironmentVariable(v)) => std::env::var(v)
            .map(bytes::Bytes::from)
            .map_err(|_| ConfigError::new("environment_variable", format!("'{v}' is not set"))),
        None => Ok(bytes::Bytes::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_syntax_is_translated() {
        assert_eq!(rewrite_substitution(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(rewrite_substitution("a$b"), "a$$b");
    }

    #[test]
    fn fractions() {
        use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
        let f = |n, d| {
            fraction_per_million(Some(&FractionalPercent {
                numerator: n,
                denominator: d,
            }))
        };
        assert_eq!(f(50, 0), 500_000);
        assert_eq!(f(5, 1), 500);
        assert_eq!(f(7, 2), 7);
        assert_eq!(f(200, 0), 1_000_000);
    }
}
