//! Filter chain selection, in the order Envoy documents: destination port, destination IP,
//! server name, transport protocol, application protocols, directly connected source IP,
//! source type, source IP, source port. At each stage the most specific matching chains
//! survive; chains that leave the criterion empty survive only if none matched it.

use std::net::SocketAddr;

use crate::config::listener::{ChainMatch, Cidr, SourceType};

/// What is known about a connection when its chain is chosen.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta<'a> {
    pub destination: Option<SocketAddr>,
    pub source: Option<SocketAddr>,
    pub server_name: Option<&'a str>,
    pub transport_protocol: &'a str,
    pub application_protocols: &'a [String],
}

enum Stage {
    /// The chain does not constrain this stage.
    Wild,
    /// The chain constrains it and matches, with a specificity (higher wins).
    Match(u32),
    NoMatch,
}

type StageFn = fn(&ChainMatch, &ConnMeta<'_>) -> Stage;

const STAGES: [StageFn; 9] = [
    |m, c| match m.destination_port {
        None => Stage::Wild,
        Some(p) if c.destination.is_some_and(|d| d.port() == p) => Stage::Match(0),
        Some(_) => Stage::NoMatch,
    },
    |m, c| cidr_stage(&m.prefix_ranges, c.destination),
    |m, c| server_name_stage(&m.server_names, c.server_name),
    |m, c| match &m.transport_protocol {
        None => Stage::Wild,
        Some(t) if t == c.transport_protocol => Stage::Match(0),
        Some(_) => Stage::NoMatch,
    },
    |m, c| {
        if m.application_protocols.is_empty() {
            Stage::Wild
        } else if m
            .application_protocols
            .iter()
            .any(|p| c.application_protocols.contains(p))
        {
            Stage::Match(0)
        } else {
            Stage::NoMatch
        }
    },
    |m, c| cidr_stage(&m.direct_source_prefix_ranges, c.source),
    |m, c| {
        let local = match (c.source, c.destination) {
            (Some(s), Some(d)) => s.ip().is_loopback() || s.ip() == d.ip(),
            (Some(s), None) => s.ip().is_loopback(),
            _ => false,
        };
        match (m.source_type, local) {
            (SourceType::Any, _) => Stage::Wild,
            (SourceType::SameIpOrLoopback, true) | (SourceType::External, false) => Stage::Match(0),
            _ => Stage::NoMatch,
        }
    },
    |m, c| cidr_stage(&m.source_prefix_ranges, c.source),
    |m, c| {
        if m.source_ports.is_empty() {
            Stage::Wild
        } else if c.source.is_some_and(|s| m.source_ports.contains(&s.port())) {
            Stage::Match(0)
        } else {
            Stage::NoMatch
        }
    },
];

fn cidr_stage(ranges: &[Cidr], addr: Option<SocketAddr>) -> Stage {
    if ranges.is_empty() {
        return Stage::Wild;
    }
    let Some(addr) = addr else {
        return Stage::NoMatch;
    };
    ranges
        .iter()
        .filter(|r| r.contains(addr.ip()))
        .map(|r| u32::from(r.len))
        .max()
        .map_or(Stage::NoMatch, Stage::Match)
}

/// Exact names beat wildcards; longer wildcard suffixes beat shorter ones.
fn server_name_stage(names: &[String], sni: Option<&str>) -> Stage {
    if names.is_empty() {
        return Stage::Wild;
    }
    let Some(sni) = sni else {
        return Stage::NoMatch;
    };
    let sni = sni.to_ascii_lowercase();
    names
        .iter()
        .filter_map(|n| {
            if *n == sni {
                Some(u32::MAX)
            } else if let Some(suffix) = n.strip_prefix('*') {
                (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as u32)
            } else {
                None
            }
        })
        .max()
        .map_or(Stage::NoMatch, Stage::Match)
}

/// The index of the chain for a connection, or `None` (use the default chain, if any).
pub fn select<'a>(
    chains: impl Iterator<Item = &'a ChainMatch>,
    meta: &ConnMeta<'_>,
) -> Option<usize> {
    let mut candidates: Vec<(usize, &ChainMatch)> = chains.enumerate().collect();
    for stage in STAGES {
        let mut best: Option<u32> = None;
        let mut matched = Vec::new();
        let mut wild = Vec::new();
        for (i, m) in &candidates {
            match stage(m, meta) {
                Stage::Match(score) => {
                    if best.is_none_or(|b| score > b) {
                        best = Some(score);
                        matched.clear();
                    }
                    if best == Some(score) {
                        matched.push((*i, *m));
                    }
                }
                Stage::Wild => wild.push((*i, *m)),
                Stage::NoMatch => {}
            }
        }
        candidates = if matched.is_empty() { wild } else { matched };
        if candidates.is_empty() {
            return None;
        }
    }
    candidates.first().map(|(i, _)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str, len: u8) -> Cidr {
        Cidr {
            addr: s.parse().unwrap(),
            len,
        }
    }

    fn meta(dst: &str, src: &str) -> ConnMeta<'static> {
        ConnMeta {
            destination: Some(dst.parse().unwrap()),
            source: Some(src.parse().unwrap()),
            transport_protocol: "raw_buffer",
            ..Default::default()
        }
    }

    #[test]
    fn destination_port_then_most_specific_prefix() {
        let chains = [
            ChainMatch::default(),
            ChainMatch {
                destination_port: Some(8080),
                ..Default::default()
            },
            ChainMatch {
                destination_port: Some(8080),
                prefix_ranges: vec![cidr("10.0.0.0", 8)],
                ..Default::default()
            },
            ChainMatch {
                destination_port: Some(8080),
                prefix_ranges: vec![cidr("10.1.0.0", 16)],
                ..Default::default()
            },
        ];
        assert_eq!(
            select(chains.iter(), &meta("10.1.2.3:8080", "1.1.1.1:5")),
            Some(3)
        );
        assert_eq!(
            select(chains.iter(), &meta("10.9.2.3:8080", "1.1.1.1:5")),
            Some(2)
        );
        assert_eq!(
            select(chains.iter(), &meta("192.168.0.1:8080", "1.1.1.1:5")),
            Some(1)
        );
        assert_eq!(
            select(chains.iter(), &meta("10.1.2.3:9090", "1.1.1.1:5")),
            Some(0)
        );
    }

    #[test]
    fn port_match_beats_ip_match_even_if_it_fails_later() {
        // Envoy picks the port stage first; a chain with the port but a failing later
        // criterion leaves no chain rather than falling back to a port-less one.
        let chains = [
            ChainMatch {
                prefix_ranges: vec![cidr("10.0.0.0", 8)],
                ..Default::default()
            },
            ChainMatch {
                destination_port: Some(80),
                source_ports: vec![1],
                ..Default::default()
            },
        ];
        assert_eq!(
            select(chains.iter(), &meta("10.0.0.1:80", "1.1.1.1:5")),
            None
        );
    }

    #[test]
    fn server_names_transport_and_alpn() {
        let alpn = vec!["h2".to_string()];
        let chains = [
            ChainMatch {
                server_names: vec!["*.example.com".into()],
                ..Default::default()
            },
            ChainMatch {
                server_names: vec!["api.example.com".into()],
                ..Default::default()
            },
            ChainMatch {
                transport_protocol: Some("tls".into()),
                application_protocols: alpn.clone(),
                ..Default::default()
            },
            ChainMatch::default(),
        ];
        let mut m = meta("1.1.1.1:443", "2.2.2.2:5");
        m.server_name = Some("api.example.com");
        assert_eq!(select(chains.iter(), &m), Some(1));
        m.server_name = Some("www.example.com");
        assert_eq!(select(chains.iter(), &m), Some(0));
        m.server_name = None;
        m.transport_protocol = "tls";
        m.application_protocols = &alpn;
        assert_eq!(select(chains.iter(), &m), Some(2));
        m.transport_protocol = "raw_buffer";
        assert_eq!(select(chains.iter(), &m), Some(3));
    }

    #[test]
    fn source_criteria() {
        let chains = [
            ChainMatch {
                source_type: SourceType::SameIpOrLoopback,
                ..Default::default()
            },
            ChainMatch {
                source_prefix_ranges: vec![cidr("192.168.0.0", 16)],
                source_ports: vec![7],
                ..Default::default()
            },
            ChainMatch::default(),
        ];
        assert_eq!(
            select(chains.iter(), &meta("10.0.0.1:80", "127.0.0.1:9")),
            Some(0)
        );
        assert_eq!(
            select(chains.iter(), &meta("10.0.0.1:80", "192.168.1.1:7")),
            Some(1)
        );
        assert_eq!(
            select(chains.iter(), &meta("10.0.0.1:80", "192.168.1.1:8")),
            None
        );
        assert_eq!(
            select(chains.iter(), &meta("10.0.0.1:80", "8.8.8.8:8")),
            Some(2)
        );
    }
}
