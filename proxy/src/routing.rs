//! Request-time routing: virtual host selection by domain and first-match route lookup.
//!
//! Everything here evaluates matchers compiled in `config::route`; nothing is parsed or
//! compiled per request.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use http::{HeaderMap, Method};

use crate::config::route::{
    HeaderMatch, HeaderMatcher, PathMatch, QueryMatcher, Route, RouteMatch, RouteTable, VirtualHost,
};
use crate::config::{ConfigError, Result};

/// An RDS route configuration's current table, swapped whole when a new version arrives;
/// shared by every connection manager that names it.
pub type RouteSlot = Arc<ArcSwap<RouteTable>>;

/// A connection manager's routes. Inline routes never change, so a request reads them
/// with no atomic operation; an RDS request loads the slot once and keeps that version.
#[derive(Debug)]
pub enum Routes {
    Fixed(Arc<RouteTable>),
    Rds(RouteSlot),
}

/// The parts of a request that routing looks at.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Host (`:authority`), lowercased.
    pub host: &'a str,
    /// Path and query, as received (after normalization).
    pub path: &'a str,
    pub method: &'a Method,
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
}

impl RequestView<'_> {
    fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or("")
    }
    fn query(&self) -> &str {
        self.path
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(""))
            .unwrap_or("")
    }
}

/// Domain lookup built once per route table, in Envoy's order of precedence: exact names,
/// then `*suffix` wildcards (longest first), then `prefix*` wildcards (longest first),
/// then `*`.
#[derive(Debug, Default)]
pub struct DomainIndex {
    exact: HashMap<String, usize, foldhash::fast::RandomState>,
    suffixes: Vec<(String, usize)>,
    prefixes: Vec<(String, usize)>,
    default: Option<usize>,
}

impl DomainIndex {
    pub fn build(vhosts: &[VirtualHost]) -> Result<Self> {
        let mut idx = DomainIndex::default();
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (i, vh) in vhosts.iter().enumerate() {
            for d in &vh.domains {
                if let Some(prev) = seen.insert(d, &vh.name) {
                    return Err(ConfigError::new(
                        format!("virtual_hosts[{i}].domains"),
                        format!("domain '{d}' is also used by virtual host '{prev}'; domains must be unique"),
                    ));
                }
                if d == "*" {
                    idx.default = Some(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    idx.suffixes.push((s.to_string(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    idx.prefixes.push((p.to_string(), i));
                } else {
                    idx.exact.insert(d.clone(), i);
                }
            }
        }
        // Longest wildcard first; the sort is stable so ties keep config order.
        idx.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        idx.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(idx)
    }

    /// The virtual host for `host` (already lowercased).
    pub fn find(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        // The wildcard must stand for at least one character.
        if let Some((_, i)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
        {
            return Some(*i);
        }
        if let Some((_, i)) = self
            .prefixes
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
        {
            return Some(*i);
        }
        self.default
    }
}

/// Strips a `:port` suffix from a host (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

impl RouteTable {
    /// Finds the virtual host and the first matching route for a request.
    pub fn route(&self, req: &RequestView<'_>) -> Option<(&VirtualHost, &Route)> {
        let host = if self.ignore_port_in_host_matching {
            strip_port(req.host)
        } else {
            req.host
        };
        let vh = &self.virtual_hosts[self.domains.find(host)?];
        let route = vh.routes.iter().find(|r| r.matcher.matches(req))?;
        Some((vh, route))
    }
}

impl RouteMatch {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path_matches(req)
            && (!self.grpc || is_grpc(req.headers))
            && self.headers.iter().all(|h| h.matches(req))
            && self.query_parameters_match(req)
    }

    fn path_matches(&self, req: &RequestView<'_>) -> bool {
        match &self.path {
            PathMatch::Prefix(p) => starts_with(req.path, p, self.case_sensitive),
            PathMatch::Exact(p) => eq(req.path_only(), p, self.case_sensitive),
            PathMatch::Regex(r) => r.is_match(req.path_only()),
            PathMatch::SeparatedPrefix(p) => {
                let path = req.path_only();
                starts_with(path, p, self.case_sensitive)
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }

    fn query_parameters_match(&self, req: &RequestView<'_>) -> bool {
        if self.query_parameters.is_empty() {
            return true;
        }
        let params: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> =
            form_urlencoded::parse(req.query().as_bytes()).collect();
        self.query_parameters.iter().all(|q| q.matches(&params))
    }
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s.starts_with(prefix)
    } else {
        s.len() >= prefix.len()
            && s.is_char_boundary(prefix.len())
            && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    }
}

fn eq(s: &str, other: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s == other
    } else {
        s.eq_ignore_ascii_case(other)
    }
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl QueryMatcher {
    fn matches(&self, params: &[(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)]) -> bool {
        let Some((_, v)) = params.iter().find(|(k, _)| *k == self.name) else {
            return false;
        };
        match &self.value {
            None => true,
            Some(m) => m.matches(v),
        }
    }
}

impl HeaderMatcher {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        match self.name.as_str() {
            "host" => self.matches_value(Some(req.host)),
            "x-remora-pseudo-path" => self.matches_value(Some(req.path)),
            "x-remora-pseudo-method" => self.matches_value(Some(req.method.as_str())),
            "x-remora-pseudo-scheme" => self.matches_value(Some(req.scheme)),
            _ => self.matches_headers(req.headers),
        }
    }

    /// Matches against the header of that name in `headers` (a response's, say).
    pub fn matches_headers(&self, headers: &http::HeaderMap) -> bool {
        let mut all = headers.get_all(&self.name).iter();
        match (all.next(), all.next()) {
            (None, _) => self.matches_value(None),
            (Some(v), None) => self.matches_value(Some(v.to_str().unwrap_or(""))),
            (Some(first), Some(second)) => {
                // Several values are matched as one, joined by commas (as Envoy does).
                let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
                for v in std::iter::once(second).chain(all) {
                    s.push(',');
                    s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                self.matches_value(Some(&s))
            }
        }
    }

    fn matches_value(&self, value: Option<&str>) -> bool {
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => "",
            None => {
                return match self.kind {
                    // Absent: `present_match: false` matches (then inverted if asked).
                    HeaderMatch::Present(p) => p == self.invert,
                    _ => false,
                };
            }
        };
        let m = match &self.kind {
            HeaderMatch::Present(p) => *p,
            HeaderMatch::String(s) => s.matches(value),
            HeaderMatch::Range(start, end) => {
                value.parse::<i64>().is_ok_and(|v| *start <= v && v < *end)
            }
        };
        m != self.invert
    }
}

#[cfg(test)]
mod tests;
