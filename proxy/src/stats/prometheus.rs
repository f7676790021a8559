//! Prometheus names and tags: Envoy's default tag extraction, for the stat families
//! Remora emits.
//!
//! As in Envoy, each extractor either matches a regular expression against the whole
//! stat name (the first group is cut from the name, the second is the tag's value) or
//! matches the name's dot-separated tokens against a pattern (`*` one token, `**` one or
//! more, `$` the token that is the value and is cut). Extractors without a fixed first
//! token run first, then those for the name's first token, each in Envoy's order; that
//! order is the order of the tags. The metric name is `envoy_` and what is left of the
//! stat name, with every character other than letters, digits and `_` made `_`.

use std::sync::LazyLock;

use regex::Regex;

/// How an extractor finds its value.
enum Rule {
    /// Group 1 is cut from the name, group 2 is the value; a value equal to `not` does
    /// not count.
    Regex {
        re: Regex,
        not: Option<&'static str>,
    },
    /// Dot-separated tokens.
    Tokens(&'static [&'static str]),
}

struct Extractor {
    tag: &'static str,
    rule: Rule,
}

/// A listener's address as Envoy's stat names write it (`127.0.0.1_80`, `[__1]_80`).
const ADDRESS: &str = r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)";
/// A token: anything but a dot.
const TAG_VALUE: &str = r"[^.]+";

fn re(tag: &'static str, pattern: &str, not: Option<&'static str>) -> Extractor {
    let pattern = pattern
        .replace("<ADDRESS>", ADDRESS)
        .replace("<TAG_VALUE>", TAG_VALUE);
    Extractor {
        tag,
        rule: Rule::Regex {
            // The patterns are fixed here; a typo is caught by the unit tests.
            re: Regex::new(&pattern).unwrap_or_else(|e| panic!("tag regex {pattern}: {e}")),
            not,
        },
    }
}

fn tokens(tag: &'static str, pattern: &'static [&'static str]) -> Extractor {
    Extractor {
        tag,
        rule: Rule::Tokens(pattern),
    }
}

/// The extractors in the order Envoy runs them on a name: first those with no fixed
/// first token, then, per first token, its own.
struct Extractors {
    any: Vec<Extractor>,
    by_first: Vec<(&'static str, Vec<Extractor>)>,
}

static EXTRACTORS: LazyLock<Extractors> = LazyLock::new(|| Extractors {
    any: vec![
        re("envoy_response_code", r"_rq(_(\d{3}))$", None),
        re("envoy_response_code_class", r"_rq_((\d))xx$", None),
        re(
            "envoy_ssl_curve",
            r"^(?:listener|cluster)\..*?\.ssl\.curves(\.([\w-]+))$",
            None,
        ),
        re(
            "envoy_ssl_sigalg",
            r"^(?:listener|cluster)\..*?\.ssl\.sigalgs(\.([\w-]+))$",
            None,
        ),
        re(
            "envoy_ssl_version",
            r"^(?:listener|cluster)\..*?\.ssl\.versions(\.(TLSv\d\.\d))$",
            None,
        ),
        re(
            "envoy_worker_id",
            r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)\.|server\.|listener_manager\.)worker_((\d+)\.)",
            None,
        ),
    ],
    by_first: vec![
        (
            "cluster",
            vec![
                re(
                    "envoy_ssl_cipher_suite",
                    r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.([\w-]+))$",
                    None,
                ),
                tokens(
                    "envoy_grpc_bridge_method",
                    &["cluster", "*", "grpc", "*", "$", "**"],
                ),
                tokens(
                    "envoy_grpc_bridge_service",
                    &["cluster", "*", "grpc", "$", "**"],
                ),
                tokens("envoy_cluster_name", &["cluster", "$", "**"]),
            ],
        ),
        (
            "listener",
            vec![
                re(
                    "envoy_ssl_cipher",
                    r"^listener\..*?\.ssl\.ciphers(\.([\w-]+))$",
                    None,
                ),
                re(
                    "envoy_http_conn_manager_prefix",
                    r"^listener\..*?\.http\.((<TAG_VALUE>)\.)",
                    None,
                ),
                re(
                    "envoy_listener_address",
                    r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)",
                    Some("admin"),
                ),
            ],
        ),
        (
            "http",
            vec![
                re(
                    "envoy_rds_route_config",
                    r"^http\.<TAG_VALUE>\.rds\.(([\w.-]+)\.)\w+?$",
                    None,
                ),
                tokens(
                    "envoy_http_user_agent",
                    &["http", "*", "user_agent", "$", "**"],
                ),
                tokens(
                    "envoy_fault_downstream_cluster",
                    &["http", "*", "fault", "$", "**"],
                ),
                tokens("envoy_http_conn_manager_prefix", &["http", "$", "**"]),
            ],
        ),
        ("tcp", vec![tokens("envoy_tcp_prefix", &["tcp", "$", "**"])]),
    ],
});

impl Extractor {
    /// The tag's value and the byte range to cut from `name` (whose dot-separated
    /// `tokens` are given), if it matches.
    fn extract<'n>(
        &self,
        name: &'n str,
        tokens: &[&'n str],
    ) -> Option<(&'n str, std::ops::Range<usize>)> {
        match &self.rule {
            Rule::Regex { re, not } => {
                let caps = re.captures(name)?;
                let (cut, value) = (caps.get(1)?, caps.get(2)?);
                if Some(value.as_str()) == *not {
                    return None;
                }
                Some((value.as_str(), cut.range()))
            }
            Rule::Tokens(pattern) => {
                let at = match_tokens(tokens, pattern)?;
                let start: usize = tokens[..at].iter().map(|t| t.len() + 1).sum();
                let value = tokens[at];
                // The value's token and the dot after it; the dot before it when last.
                let cut = if at + 1 < tokens.len() {
                    start..start + value.len() + 1
                } else {
                    start.saturating_sub(1)..start + value.len()
                };
                Some((value, cut))
            }
        }
    }
}

/// The index of the token that `$` matches, if `tokens` match `pattern`.
fn match_tokens(tokens: &[&str], pattern: &[&str]) -> Option<usize> {
    matches(tokens, pattern).flatten()
}

/// Whether `tokens` match `pattern` (`None`: no) and, if they do, the index of the
/// token `$` matched (`Some(None)`: this part of the pattern has no `$`).
fn matches(tokens: &[&str], pattern: &[&str]) -> Option<Option<usize>> {
    let (mut i, mut captured) = (0, None);
    for (p, want) in pattern.iter().enumerate() {
        match *want {
            // One or more tokens: at the end, whatever is left (at least one).
            "**" if p + 1 == pattern.len() => return (i < tokens.len()).then_some(captured),
            // Zero or more tokens, then the rest of the pattern.
            "**" => {
                return (i..=tokens.len()).find_map(|from| {
                    let rest = matches(&tokens[from..], &pattern[p + 1..])?;
                    Some(captured.or(rest.map(|r| from + r)))
                })
            }
            "$" => captured = Some(i),
            "*" => {}
            literal if tokens.get(i) != Some(&literal) => return None,
            _ => {}
        }
        if i >= tokens.len() {
            return None;
        }
        i += 1;
    }
    (i == tokens.len()).then_some(captured)
}

/// The Prometheus metric name of the stat `name` and its tags, in Envoy's order.
pub(super) fn prometheus_name(name: &str) -> (String, Vec<(&'static str, String)>) {
    let e = &*EXTRACTORS;
    let first = name.split_once('.').map(|(f, _)| f);
    let own = e
        .by_first
        .iter()
        .find(|(f, _)| Some(*f) == first)
        .map(|(_, x)| x.as_slice())
        .unwrap_or_default();
    let mut tags: Vec<(&'static str, String)> = Vec::new();
    let mut cuts: Vec<std::ops::Range<usize>> = Vec::new();
    let tokens: Vec<&str> = name.split('.').collect();
    for x in e.any.iter().chain(own) {
        // A tag is extracted once (the first extractor that finds it).
        if tags.iter().any(|(t, _)| *t == x.tag) {
            continue;
        }
        if let Some((value, cut)) = x.extract(name, &tokens) {
            tags.push((x.tag, value.to_string()));
            cuts.push(cut);
        }
    }
    let kept: String = name
        .char_indices()
        .filter(|(i, _)| !cuts.iter().any(|c| c.contains(i)))
        .map(|(_, c)| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (format!("envoy_{kept}"), tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> (String, Vec<(&'static str, String)>) {
        prometheus_name(name)
    }

    fn tags(t: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        t.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn cluster_stats_take_the_first_token_as_the_cluster() {
        assert_eq!(
            p("cluster.web.circuit_breakers.high.remaining_cx"),
            (
                "envoy_cluster_circuit_breakers_high_remaining_cx".into(),
                tags(&[("envoy_cluster_name", "web")])
            )
        );
        assert_eq!(
            p("cluster.web.upstream_rq_503"),
            (
                "envoy_cluster_upstream_rq".into(),
                tags(&[
                    ("envoy_response_code", "503"),
                    ("envoy_cluster_name", "web")
                ])
            )
        );
        assert_eq!(
            p("cluster.web.outlier_detection.ejections_active").0,
            "envoy_cluster_outlier_detection_ejections_active"
        );
    }

    #[test]
    fn listener_http_rds_and_tcp_stats() {
        assert_eq!(
            p("listener.127.0.0.1_10000.http.front.downstream_rq_2xx"),
            (
                "envoy_listener_http_downstream_rq_xx".into(),
                tags(&[
                    ("envoy_response_code_class", "2"),
                    ("envoy_http_conn_manager_prefix", "front"),
                    ("envoy_listener_address", "127.0.0.1_10000"),
                ])
            )
        );
        assert_eq!(
            p("listener.admin.downstream_cx_total"),
            ("envoy_listener_admin_downstream_cx_total".into(), vec![])
        );
        assert_eq!(
            p("http.edge.rds.local.route.config_reload"),
            (
                "envoy_http_rds_config_reload".into(),
                tags(&[
                    ("envoy_rds_route_config", "local.route"),
                    ("envoy_http_conn_manager_prefix", "edge"),
                ])
            )
        );
        // `fault.<downstream cluster>.` needs a token after the cluster.
        assert_eq!(
            p("http.edge.fault.delays_injected"),
            (
                "envoy_http_fault_delays_injected".into(),
                tags(&[("envoy_http_conn_manager_prefix", "edge")])
            )
        );
        assert_eq!(
            p("tcp.relay.downstream_cx_total"),
            (
                "envoy_tcp_downstream_cx_total".into(),
                tags(&[("envoy_tcp_prefix", "relay")])
            )
        );
        assert_eq!(p("server.live"), ("envoy_server_live".into(), vec![]));
    }

    #[test]
    fn token_patterns() {
        fn t(s: &str) -> Vec<&str> {
            s.split('.').collect()
        }
        assert_eq!(
            match_tokens(&t("cluster.a.b"), &["cluster", "$", "**"]),
            Some(1)
        );
        assert_eq!(match_tokens(&t("cluster.a"), &["cluster", "$", "**"]), None);
        assert_eq!(
            match_tokens(
                &t("cluster.c.grpc.s.m.x"),
                &["cluster", "*", "grpc", "*", "$", "**"]
            ),
            Some(4)
        );
        assert_eq!(
            match_tokens(&t("a.x.b.b.c.d"), &["a", "**", "b", "c", "$"]),
            Some(5)
        );
        // `$` before a `**` that is not last (Envoy's Mongo collection pattern).
        assert_eq!(
            match_tokens(
                &t("mongo.p.collection.users.x.query.total"),
                &["mongo", "*", "collection", "$", "**", "query", "*"]
            ),
            Some(3)
        );
    }
}
