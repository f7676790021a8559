//! `TcpProxy` -> [`TcpProxy`].

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as pb;

use super::common;
use super::error::{ConfigError, Result, Within};

#[derive(Debug)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// Clusters with weights; a single cluster has weight 1.
    pub clusters: Vec<(Arc<str>, u32)>,
    pub total_weight: u64,
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
    /// `access_log`: a line per connection when it closes.
    pub access_logs: Vec<super::access_log::AccessLogConfig>,
}

impl TryFrom<&pb::TcpProxy> for TcpProxy {
    type Error = ConfigError;
    fn try_from(t: &pb::TcpProxy) -> Result<Self> {
        use pb::tcp_proxy::ClusterSpecifier as C;
        if t.stat_prefix.is_empty() {
            return Err(ConfigError::new("stat_prefix", "must not be empty"));
        }
        let clusters: Vec<(Arc<str>, u32)> = match &t.cluster_specifier {
            Some(C::Cluster(c)) if !c.is_empty() => vec![(c.as_str().into(), 1)],
            Some(C::Cluster(_)) => return Err(ConfigError::new("cluster", "must not be empty")),
            Some(C::WeightedClusters(w)) => w
                .clusters
                .iter()
                .map(|c| (c.name.as_str().into(), c.weight))
                .collect(),
            None => {
                return Err(ConfigError::new(
                    "cluster_specifier",
                    "cluster or weighted_clusters is required",
                ))
            }
        };
        if let Some(i) = clusters.iter().position(|(n, _)| n.is_empty()) {
            return Err(ConfigError::new(
                format!("weighted_clusters.clusters[{i}].name"),
                "must not be empty",
            ));
        }
        let total_weight: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
        if total_weight == 0 {
            return Err(ConfigError::new(
                "weighted_clusters.clusters",
                "the sum of weights must be greater than 0",
            ));
        }
        if t.tunneling_config.is_some() {
            return Err(common::unsupported(
                "tunneling_config",
                "TCP tunneling over HTTP",
            ));
        }
        #[allow(deprecated)]
        let periodic = t.access_log_flush_interval.is_some() || t.flush_access_log_on_connected;
        if periodic || t.access_log_options.is_some() {
            return Err(common::unsupported(
                "access_log_options",
                "TCP access logs before the connection closes",
            ));
        }
        let max_connect_attempts = common::u32_or(t.max_connect_attempts.as_ref(), 1);
        if max_connect_attempts == 0 {
            return Err(ConfigError::new(
                "max_connect_attempts",
                "must be at least 1",
            ));
        }
        Ok(TcpProxy {
            stat_prefix: t.stat_prefix.clone(),
            clusters,
            total_weight,
            idle_timeout: common::timeout_or(
                t.idle_timeout.as_ref(),
                "idle_timeout",
                Some(Duration::from_secs(3600)),
            )?,
            max_connect_attempts,
            access_logs: super::access_log::access_logs(&t.access_log).within("access_log")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{decode, parse_text, UnknownFields};

    fn convert(yaml: &str) -> Result<TcpProxy> {
        let v = parse_text(yaml, "test").expect("yaml");
        let (p, _): (pb::TcpProxy, _) = decode(
            v,
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            UnknownFields::Reject,
        )
        .expect("decodes");
        TcpProxy::try_from(&p)
    }

    #[test]
    fn access_logs_convert_and_periodic_ones_are_refused() {
        let log = r#"access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null}}]"#;
        let t = convert(&format!("stat_prefix: t\ncluster: c\n{log}")).expect("valid");
        assert_eq!(t.access_logs.len(), 1);
        let e = convert(&format!(
            "stat_prefix: t\ncluster: c\n{log}\naccess_log_options: {{access_log_flush_interval: 1s}}"
        ))
        .expect_err("periodic");
        assert!(e.to_string().starts_with("access_log_options:"), "{e}");
        let e = convert(r#"stat_prefix: t
cluster: c
access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /nonexistent-remora-dir/a.log}}]"#)
            .expect_err("unopenable");
        assert!(
            e.to_string()
                .starts_with("access_log[0].typed_config.path: unable to open file"),
            "{e}"
        );
    }
}
