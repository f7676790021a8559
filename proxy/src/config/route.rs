//! `RouteConfiguration` -> [`RouteTable`]: virtual hosts, routes and their actions, with
//! every matcher compiled here so that request time only evaluates them.

use envoy_types::pb::envoy::config::route::v3 as pb;
use http::HeaderName;
use regex::Regex;

use super::common::{self, HeaderMutations, StringMatcher};
use super::error::{ConfigError, Result, Within};
use super::per_filter::PerFilter;
use super::retry::RetryPolicy;

pub use super::route_action::*;

/// A route configuration. The default (no virtual hosts) answers every request 404 NR.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub domains: super::super::routing::DomainIndex,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub ignore_port_in_host_matching: bool,
    pub per_filter: PerFilter,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub per_filter: PerFilter,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub per_filter: PerFilter,
}

#[derive(Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryMatcher>,
    pub grpc: bool,
}

#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    /// Matches the prefix only at a `/` boundary.
    SeparatedPrefix(String),
}

#[derive(Debug)]
pub struct HeaderMatcher {
    pub name: HeaderName,
    pub kind: HeaderMatch,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

#[derive(Debug)]
pub enum HeaderMatch {
    String(StringMatcher),
    Present(bool),
    /// `[start, end)` on the value parsed as an integer.
    Range(i64, i64),
}

#[derive(Debug)]
pub struct QueryMatcher {
    pub name: String,
    /// `None`: the parameter must be present.
    pub value: Option<StringMatcher>,
}

impl TryFrom<&pb::RouteConfiguration> for RouteTable {
    type Error = ConfigError;
    fn try_from(rc: &pb::RouteConfiguration) -> Result<Self> {
        RouteTable::build(rc, rc.virtual_hosts.iter().map(Ok))
    }
}

impl RouteTable {
    /// `rc` with the virtual hosts `hosts` (which replace `rc.virtual_hosts`), each
    /// converted as it comes.
    pub fn build<V: std::borrow::Borrow<pb::VirtualHost>>(
        rc: &pb::RouteConfiguration,
        hosts: impl ExactSizeIterator<Item = Result<V>>,
    ) -> Result<Self> {
        if rc.vhds.is_some() {
            return Err(common::unsupported(
                "vhds",
                "VHDS (on-demand virtual hosts)",
            ));
        }
        let mut virtual_hosts = Vec::with_capacity(hosts.len());
        for (i, vh) in hosts.enumerate() {
            let vh = vh.and_then(|vh| VirtualHost::try_from(vh.borrow()));
            virtual_hosts.push(vh.at_index("virtual_hosts", i)?);
        }
        let domains = super::super::routing::DomainIndex::build(&virtual_hosts)?;
        Ok(RouteTable {
            name: rc.name.clone(),
            request_headers: HeaderMutations::build(
                &rc.request_headers_to_add,
                &rc.request_headers_to_remove,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderMutations::build(
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
            ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
            per_filter: PerFilter::build(&rc.typed_per_filter_config)?,
            virtual_hosts,
            domains,
        })
    }
}

impl TryFrom<&pb::VirtualHost> for VirtualHost {
    type Error = ConfigError;
    fn try_from(vh: &pb::VirtualHost) -> Result<Self> {
        if vh.domains.is_empty() {
            return Err(ConfigError::new(
                "domains",
                "at least one domain is required",
            ));
        }
        let retry = RetryPolicy::optional(vh.retry_policy.as_ref())?;
        let attempts = AttemptCount {
            request: vh.include_request_attempt_count,
            response: vh.include_attempt_count_in_response,
        };
        let buffer_limit = vh.per_request_buffer_limit_bytes.as_ref().map(|v| v.value);
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (i, r) in vh.routes.iter().enumerate() {
            let mut route = Route::try_from(r).at_index("routes", i)?;
            if let Action::Forward(f) = &mut route.action {
                // A route's own retry policy replaces the virtual host's entirely.
                f.inherit_retry(&retry);
                f.attempt_count = attempts;
                f.buffer_limit = f.buffer_limit.or(buffer_limit);
            }
            routes.push(route);
        }
        Ok(VirtualHost {
            per_filter: PerFilter::build(&vh.typed_per_filter_config)?,
            name: vh.name.clone(),
            domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            routes,
            request_headers: HeaderMutations::build(
                &vh.request_headers_to_add,
                &vh.request_headers_to_remove,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderMutations::build(
                &vh.response_headers_to_add,
                &vh.response_headers_to_remove,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
        })
    }
}

impl TryFrom<&pb::Route> for Route {
    type Error = ConfigError;
    fn try_from(r: &pb::Route) -> Result<Self> {
        let m = r
            .r#match
            .as_ref()
            .ok_or_else(|| ConfigError::new("match", "is required"))?;
        let matcher = RouteMatch::try_from(m).within("match")?;
        let action = match &r.action {
            Some(pb::route::Action::Route(a)) => {
                let mut f = Forward::try_from(a).within("route")?;
                f.buffer_limit = r.per_request_buffer_limit_bytes.as_ref().map(|v| v.value);
                Action::Forward(Box::new(f))
            }
            Some(pb::route::Action::Redirect(a)) => {
                Action::Redirect(Redirect::try_from(a).within("redirect")?)
            }
            Some(pb::route::Action::DirectResponse(a)) => {
                Action::Direct(DirectResponse::try_from(a).within("direct_response")?)
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "action",
                    "only route, redirect and direct_response actions are supported",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    "action",
                    "one of route, redirect or direct_response is required",
                ))
            }
        };
        Ok(Route {
            per_filter: PerFilter::build(&r.typed_per_filter_config)?,
            name: r.name.clone(),
            matcher,
            action,
            request_headers: HeaderMutations::build(
                &r.request_headers_to_add,
                &r.request_headers_to_remove,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderMutations::build(
                &r.response_headers_to_add,
                &r.response_headers_to_remove,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
        })
    }
}

impl TryFrom<&pb::RouteMatch> for RouteMatch {
    type Error = ConfigError;
    fn try_from(m: &pb::RouteMatch) -> Result<Self> {
        use pb::route_match::PathSpecifier as P;
        let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
        let fold = |s: &str| {
            if case_sensitive {
                s.to_string()
            } else {
                s.to_ascii_lowercase()
            }
        };
        let path = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Exact(fold(p)),
            Some(P::SafeRegex(r)) => PathMatch::Regex(common::regex(r, "safe_regex")?),
            Some(P::PathSeparatedPrefix(p)) => {
                if p.contains(['?', '#']) || (p.ends_with('/') && p.len() > 1) {
                    return Err(ConfigError::new(
                        "path_separated_prefix",
                        "must not contain '?' or '#' or end with '/'",
                    ));
                }
                PathMatch::SeparatedPrefix(fold(p))
            }
            Some(P::ConnectMatcher(_)) => {
                return Err(common::unsupported("connect_matcher", "CONNECT matching"))
            }
            Some(P::PathMatchPolicy(_)) => {
                return Err(common::unsupported(
                    "path_match_policy",
                    "path match policies",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    "path_specifier",
                    "one of prefix, path, safe_regex or path_separated_prefix is required",
                ))
            }
        };
        if m.runtime_fraction.is_some() {
            return Err(common::unsupported(
                "runtime_fraction",
                "runtime fractions on route matches",
            ));
        }
        let headers = header_matchers(&m.headers, "headers")?;
        let mut query_parameters = Vec::with_capacity(m.query_parameters.len());
        for (i, q) in m.query_parameters.iter().enumerate() {
            query_parameters.push(QueryMatcher::try_from(q).at_index("query_parameters", i)?);
        }
        Ok(RouteMatch {
            path,
            case_sensitive,
            headers,
            query_parameters,
            grpc: m.grpc.is_some(),
        })
    }
}

/// A list of header matchers (`field` names the list in errors).
pub fn header_matchers(list: &[pb::HeaderMatcher], field: &str) -> Result<Vec<HeaderMatcher>> {
    list.iter()
        .enumerate()
        .map(|(i, m)| HeaderMatcher::try_from(m).at_index(field, i))
        .collect()
}

impl TryFrom<&pb::HeaderMatcher> for HeaderMatcher {
    type Error = ConfigError;
    fn try_from(h: &pb::HeaderMatcher) -> Result<Self> {
        use envoy_types::pb::envoy::r#type::matcher::v3::{
            string_matcher::MatchPattern as P, StringMatcher as Sm,
        };
        use pb::header_matcher::HeaderMatchSpecifier as S;
        // Pseudo-headers (`:authority`, `:method`, `:path`) are matched by name too.
        let name = HeaderName::from_bytes(h.name.trim_start_matches(':').as_bytes())
            .map(|_| h.name.to_ascii_lowercase())
            .map_err(|_| {
                ConfigError::new("name", format!("'{}' is not a valid header name", h.name))
            })?;
        let name = pseudo_or_header(&name)?;
        let exact = |p: P| {
            StringMatcher::try_from(&Sm {
                ignore_case: false,
                match_pattern: Some(p),
            })
        };
        let kind = match &h.header_match_specifier {
            Some(S::ExactMatch(s)) => HeaderMatch::String(exact(P::Exact(s.clone()))?),
            Some(S::PrefixMatch(s)) => HeaderMatch::String(exact(P::Prefix(s.clone()))?),
            Some(S::SuffixMatch(s)) => HeaderMatch::String(exact(P::Suffix(s.clone()))?),
            Some(S::ContainsMatch(s)) => HeaderMatch::String(exact(P::Contains(s.clone()))?),
            Some(S::SafeRegexMatch(r)) => {
                HeaderMatch::String(exact(P::SafeRegex(r.clone())).within("safe_regex_match")?)
            }
            Some(S::StringMatch(m)) => {
                HeaderMatch::String(StringMatcher::try_from(m).within("string_match")?)
            }
            Some(S::PresentMatch(b)) => HeaderMatch::Present(*b),
            Some(S::RangeMatch(r)) => HeaderMatch::Range(r.start, r.end),
            // No specifier: the header must be present.
            None => HeaderMatch::Present(true),
        };
        Ok(HeaderMatcher {
            name,
            kind,
            invert: h.invert_match,
            treat_missing_as_empty: h.treat_missing_header_as_empty,
        })
    }
}

/// Header names in matchers; `:authority` etc. are stored under reserved names that the
/// router resolves from the request's URI rather than its header map.
fn pseudo_or_header(name: &str) -> Result<HeaderName> {
    let mapped = match name {
        ":authority" => "host",
        ":path" => "x-remora-pseudo-path",
        ":method" => "x-remora-pseudo-method",
        ":scheme" => "x-remora-pseudo-scheme",
        n if n.starts_with(':') => {
            return Err(ConfigError::new(
                "name",
                format!("unknown pseudo-header '{n}'"),
            ))
        }
        n => n,
    };
    HeaderName::from_bytes(mapped.as_bytes())
        .map_err(|_| ConfigError::new("name", format!("'{name}' is not a valid header name")))
}

impl TryFrom<&pb::QueryParameterMatcher> for QueryMatcher {
    type Error = ConfigError;
    fn try_from(q: &pb::QueryParameterMatcher) -> Result<Self> {
        use pb::query_parameter_matcher::QueryParameterMatchSpecifier as S;
        if q.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        let value = match &q.query_parameter_match_specifier {
            Some(S::StringMatch(m)) => Some(StringMatcher::try_from(m).within("string_match")?),
            Some(S::PresentMatch(true)) | None => None,
            Some(S::PresentMatch(false)) => {
                return Err(ConfigError::new(
                    "present_match",
                    "false is not a valid matcher",
                ))
            }
        };
        Ok(QueryMatcher {
            name: q.name.clone(),
            value,
        })
    }
}
