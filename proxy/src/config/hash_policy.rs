//! Route `hash_policy`: what a request is hashed on for RING_HASH and MAGLEV clusters
//! (other policies ignore it, as Envoy does).

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    self as pb_hp, PolicySpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy as PbHashPolicy;
use http::HeaderName;
use regex::Regex;

use super::common::{self, header_name};
use super::error::{ConfigError, Result, Within};

#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    /// Once this rule produced a hash, later rules are skipped.
    pub terminal: bool,
}

#[derive(Debug, Clone)]
pub enum Method {
    Header {
        name: HeaderName,
        rewrite: Option<(Regex, String)>,
    },
    Cookie(Cookie),
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    /// Set: a request without the cookie gets one generated (Max-Age = ttl, none for 0).
    pub ttl: Option<Duration>,
    pub path: String,
    pub attributes: Vec<(String, String)>,
}

impl HashPolicy {
    pub fn from_route(policies: &[PbHashPolicy]) -> Result<Option<HashPolicy>> {
        if policies.is_empty() {
            return Ok(None);
        }
        let rules = policies
            .iter()
            .enumerate()
            .map(|(i, p)| rule(p).at_index("hash_policy", i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(HashPolicy { rules }))
    }
}

fn rule(p: &PbHashPolicy) -> Result<Rule> {
    let method = match &p.policy_specifier {
        None => return Err(ConfigError::new("policy_specifier", "is required")),
        Some(PolicySpecifier::Header(h)) => Method::Header {
            name: header_name(&h.header_name).within("header.header_name")?,
            rewrite: h
                .regex_rewrite
                .as_ref()
                .map(super::route_action::regex_substitution)
                .transpose()
                .within("header.regex_rewrite")?,
        },
        Some(PolicySpecifier::Cookie(c)) => cookie(c).within("cookie")?,
        Some(PolicySpecifier::ConnectionProperties(c)) => {
            if !c.source_ip {
                return Err(ConfigError::new(
                    "connection_properties.source_ip",
                    "must be true",
                ));
            }
            Method::SourceIp
        }
        Some(PolicySpecifier::QueryParameter(q)) => {
            if q.name.is_empty() {
                return Err(ConfigError::new(
                    "query_parameter.name",
                    "must not be empty",
                ));
            }
            Method::QueryParameter(q.name.clone())
        }
        Some(PolicySpecifier::FilterState(_)) => {
            return Err(common::unsupported(
                "filter_state",
                "hashing on filter state",
            ))
        }
    };
    Ok(Rule {
        method,
        terminal: p.terminal,
    })
}

fn cookie(c: &pb_hp::Cookie) -> Result<Method> {
    if c.name.is_empty() {
        return Err(ConfigError::new("name", "must not be empty"));
    }
    let ttl = c
        .ttl
        .as_ref()
        .map(|d| common::duration(d, "ttl"))
        .transpose()?;
    Ok(Method::Cookie(Cookie {
        name: c.name.clone(),
        ttl,
        path: c.path.clone(),
        attributes: c
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect(),
    }))
}
