//! `listener_filters` -> [`ListenerFilters`]: what runs on an accepted connection before
//! its filter chain is chosen (original destination, TLS and HTTP sniffing), each with
//! its `filter_disabled` predicate, plus `listener_filters_timeout` and
//! `continue_on_listener_filters_timeout`.

use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3 as pb;

use super::common;
use super::error::{ConfigError, Result, Within};

const ORIGINAL_DST: &str = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HTTP_INSPECTOR: &str = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";

/// Envoy's default `listener_filters_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Recovers the address the client dialled (`SO_ORIGINAL_DST`, or the local address of
    /// a transparent socket).
    OriginalDst,
    /// Reads the TLS ClientHello: transport protocol `tls`, SNI, ALPN.
    TlsInspector,
    /// Tells HTTP/1.x and h2c from other plaintext: ALPN `http/1.1`, `http/1.0`, `h2c`.
    HttpInspector,
}

/// `ListenerFilterChainMatchPredicate`: when a listener filter is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    Any,
    Or(Vec<Predicate>),
    And(Vec<Predicate>),
    Not(Box<Predicate>),
    /// Destination port in `[start, end)`.
    DestinationPorts(i64, i64),
}

impl Predicate {
    pub fn matches(&self, port: u16) -> bool {
        match self {
            Predicate::Any => true,
            Predicate::Or(v) => v.iter().any(|p| p.matches(port)),
            Predicate::And(v) => v.iter().all(|p| p.matches(port)),
            Predicate::Not(p) => !p.matches(port),
            Predicate::DestinationPorts(start, end) => (*start..*end).contains(&i64::from(port)),
        }
    }
}

impl TryFrom<&pb::ListenerFilterChainMatchPredicate> for Predicate {
    type Error = ConfigError;
    fn try_from(p: &pb::ListenerFilterChainMatchPredicate) -> Result<Self> {
        use pb::listener_filter_chain_match_predicate::Rule;
        let set = |s: &pb::listener_filter_chain_match_predicate::MatchSet, field: &str| {
            s.rules
                .iter()
                .enumerate()
                .map(|(i, r)| Predicate::try_from(r).at_index(&format!("{field}.rules"), i))
                .collect::<Result<Vec<_>>>()
        };
        match &p.rule {
            None => Err(ConfigError::new("rule", "a predicate needs a rule")),
            Some(Rule::AnyMatch(true)) => Ok(Predicate::Any),
            Some(Rule::AnyMatch(false)) => {
                Err(ConfigError::new("any_match", "must be true when set"))
            }
            Some(Rule::OrMatch(s)) => Ok(Predicate::Or(set(s, "or_match")?)),
            Some(Rule::AndMatch(s)) => Ok(Predicate::And(set(s, "and_match")?)),
            Some(Rule::NotMatch(inner)) => Ok(Predicate::Not(Box::new(
                Predicate::try_from(inner.as_ref()).within("not_match")?,
            ))),
            Some(Rule::DestinationPortRange(r)) => {
                if r.start > r.end {
                    return Err(ConfigError::new(
                        "destination_port_range",
                        format!("start {} is above end {}", r.start, r.end),
                    ));
                }
                Ok(Predicate::DestinationPorts(r.start.into(), r.end.into()))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFilter {
    pub kind: Kind,
    /// Skipped for connections this matches.
    pub disabled: Option<Predicate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFilters {
    pub filters: Vec<ListenerFilter>,
    /// How long the inspectors wait for bytes; `None`: no limit (`0s`).
    pub timeout: Option<Duration>,
    /// On timeout: carry on with what is known (`true`) or close the connection.
    pub continue_on_timeout: bool,
}

impl Default for ListenerFilters {
    fn default() -> Self {
        ListenerFilters {
            filters: Vec::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            continue_on_timeout: false,
        }
    }
}

impl ListenerFilters {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.filters.iter().any(|f| f.kind == kind)
    }

    /// Whether `kind` runs for a connection to `port` (present and not disabled).
    pub fn runs(&self, kind: Kind, port: u16) -> bool {
        self.filters
            .iter()
            .any(|f| f.kind == kind && f.disabled.as_ref().is_none_or(|p| !p.matches(port)))
    }

    pub fn from_listener(l: &pb::Listener) -> Result<Self> {
        let mut filters = Vec::with_capacity(l.listener_filters.len());
        for (i, f) in l.listener_filters.iter().enumerate() {
            filters.push(filter(f).at_index("listener_filters", i)?);
        }
        let timeout = match &l.listener_filters_timeout {
            None => Some(DEFAULT_TIMEOUT),
            Some(d) => {
                let d = common::duration_or(Some(d), "listener_filters_timeout", DEFAULT_TIMEOUT)?;
                (!d.is_zero()).then_some(d)
            }
        };
        Ok(ListenerFilters {
            filters,
            timeout,
            continue_on_timeout: l.continue_on_listener_filters_timeout,
        })
    }
}

fn filter(f: &pb::ListenerFilter) -> Result<ListenerFilter> {
    use pb::listener_filter::ConfigType;
    let type_name = match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => common::resolve_any(any).within("typed_config")?.name,
        Some(ConfigType::ConfigDiscovery(_)) => {
            return Err(common::unsupported(
                "config_discovery",
                "ECDS for listener filters",
            ))
        }
        // Envoy still accepts the well-known names without a typed_config.
        None => match f.name.as_str() {
            "envoy.filters.listener.original_dst" => ORIGINAL_DST.to_owned(),
            "envoy.filters.listener.tls_inspector" => TLS_INSPECTOR.to_owned(),
            "envoy.filters.listener.http_inspector" => HTTP_INSPECTOR.to_owned(),
            other => {
                return Err(ConfigError::new(
                    "typed_config",
                    format!("listener filter '{other}' needs a typed_config"),
                ))
            }
        },
    };
    let kind = match type_name.as_str() {
        ORIGINAL_DST => Kind::OriginalDst,
        TLS_INSPECTOR => Kind::TlsInspector,
        HTTP_INSPECTOR => Kind::HttpInspector,
        other => {
            return Err(common::unsupported(
                "typed_config",
                &format!("listener filter '{}' ({other})", f.name),
            ))
        }
    };
    let disabled = f
        .filter_disabled
        .as_ref()
        .map(Predicate::try_from)
        .transpose()
        .within("filter_disabled")?;
    Ok(ListenerFilter { kind, disabled })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_envoys_semantics() {
        let p = Predicate::Or(vec![
            Predicate::DestinationPorts(15006, 15007),
            Predicate::Not(Box::new(Predicate::DestinationPorts(80, 90))),
        ]);
        assert!(p.matches(15006));
        assert!(p.matches(15007), "outside [80,90)");
        assert!(!p.matches(85), "in [80,90) and not 15006");
        assert!(p.matches(9000));
        assert!(Predicate::And(vec![Predicate::Any, Predicate::DestinationPorts(1, 2)]).matches(1));
    }

    #[test]
    fn filters_run_unless_disabled_for_the_port() {
        let f = ListenerFilters {
            filters: vec![
                ListenerFilter {
                    kind: Kind::OriginalDst,
                    disabled: None,
                },
                ListenerFilter {
                    kind: Kind::HttpInspector,
                    disabled: Some(Predicate::DestinationPorts(3306, 3307)),
                },
            ],
            ..Default::default()
        };
        assert!(f.runs(Kind::HttpInspector, 80));
        assert!(!f.runs(Kind::HttpInspector, 3306));
        assert!(!f.runs(Kind::TlsInspector, 80));
        assert!(f.has(Kind::OriginalDst));
    }
}
