//! `Bootstrap` -> [`Bootstrap`]: admin, node identity and static resources.

use std::collections::HashSet;
use std::path::Path;

use envoy_types::pb::envoy::config::bootstrap::v3 as pb;

use super::cluster::Cluster;
use super::common::{self, BindAddress};
use super::dynamic::DynamicResources;
use super::error::{ConfigError, Result, Within};
use super::listener::Listener;
use super::load::{self, UnknownFields};

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

#[derive(Debug)]
pub struct Bootstrap {
    pub node: Node,
    pub admin: Option<BindAddress>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    pub dynamic: Option<DynamicResources>,
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: String,
    pub cluster: String,
}

/// Where the bootstrap comes from (`-c`, `--config-yaml`).
#[derive(Debug, Clone, Default)]
pub struct Source<'a> {
    pub path: Option<&'a Path>,
    pub yaml: Option<&'a str>,
    pub unknown_fields: Option<UnknownFields>,
}

/// A loaded bootstrap: Remora's types, the proto it came from (for `/config_dump`), and
/// warnings (unknown fields dropped under `--allow-unknown-static-fields`).
#[derive(Debug)]
pub struct Loaded {
    pub bootstrap: Bootstrap,
    pub proto: pb::Bootstrap,
    pub warnings: Vec<ConfigError>,
}

/// Reads, merges, decodes and converts the bootstrap.
pub fn load(src: &Source<'_>) -> Result<Loaded> {
    let mut value = match src.path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new(
                    "",
                    format!("cannot read config file '{}': {e}", p.display()),
                )
            })?;
            load::parse_text(&text, &p.display().to_string())?
        }
        None => serde_json::json!({}),
    };
    if let Some(y) = src.yaml {
        load::merge(&mut value, load::parse_text(y, "--config-yaml")?);
    }
    if src.path.is_none() && src.yaml.is_none() {
        return Err(ConfigError::new(
            "",
            "no configuration: pass -c FILE or --config-yaml",
        ));
    }
    let (proto, warnings): (pb::Bootstrap, _) = load::decode(
        value,
        BOOTSTRAP,
        src.unknown_fields.unwrap_or(UnknownFields::Reject),
    )?;
    Ok(Loaded {
        bootstrap: Bootstrap::try_from(&proto)?,
        proto,
        warnings,
    })
}

impl TryFrom<&pb::Bootstrap> for Bootstrap {
    type Error = ConfigError;
    fn try_from(b: &pb::Bootstrap) -> Result<Self> {
        let dynamic = b
            .dynamic_resources
            .as_ref()
            .map(DynamicResources::try_from)
            .transpose()
            .within("dynamic_resources")?;
        if !b.stats_sinks.is_empty() {
            return Err(common::unsupported(
                "stats_sinks",
                "stats sinks (statsd, metrics service)",
            ));
        }
        if b.tracing.is_some() {
            return Err(common::unsupported("tracing", "tracing"));
        }
        let admin = match &b.admin {
            Some(a) if a.address.is_some() => {
                Some(common::bind_address(a.address.as_ref()).within("admin.address")?)
            }
            _ => None,
        };
        let node = b
            .node
            .as_ref()
            .map(|n| Node {
                id: n.id.clone(),
                cluster: n.cluster.clone(),
            })
            .unwrap_or_default();
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        if let Some(sr) = &b.static_resources {
            if !sr.secrets.is_empty() {
                return Err(common::unsupported(
                    "static_resources.secrets",
                    "static TLS secrets",
                ));
            }
            let mut names = HashSet::new();
            for (i, l) in sr.listeners.iter().enumerate() {
                let path = format!("static_resources.listeners[{i}]");
                let l = Listener::try_from(l).within(&path)?;
                if !names.insert(l.name.clone()) {
                    return Err(ConfigError::new(
                        format!("{path}.name"),
                        format!("duplicate listener name '{}'", l.name),
                    ));
                }
                listeners.push(l);
            }
            let mut names = HashSet::new();
            for (i, c) in sr.clusters.iter().enumerate() {
                let path = format!("static_resources.clusters[{i}]");
                let c = Cluster::try_from(c).within(&path)?;
                if !names.insert(c.name.clone()) {
                    return Err(ConfigError::new(
                        format!("{path}.name"),
                        format!("duplicate cluster name '{}'", c.name),
                    ));
                }
                clusters.push(c);
            }
        }
        let out = Bootstrap {
            node,
            admin,
            listeners,
            clusters,
            dynamic,
        };
        out.check_cluster_references()?;
        out.check_ads_cluster()?;
        Ok(out)
    }
}

impl Bootstrap {
    /// The ADS stream goes to a static cluster (Envoy requires it to be defined in
    /// `static_resources`).
    fn check_ads_cluster(&self) -> Result<()> {
        let Some(ads) = self.dynamic.as_ref().and_then(|d| d.ads.as_ref()) else {
            return Ok(());
        };
        let Some(c) = self.clusters.iter().find(|c| c.name == ads.cluster) else {
            return Err(ConfigError::new(
                "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
                format!(
                    "unknown cluster '{}' (it must be a static cluster)",
                    ads.cluster
                ),
            ));
        };
        if c.endpoints.is_empty() {
            return Err(ConfigError::new(
                "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
                format!("cluster '{}' has no endpoints", ads.cluster),
            ));
        }
        Ok(())
    }

    /// Routes must name clusters that exist (Envoy's `validate_clusters` default for
    /// static route configs). A TCP proxy's cluster is not checked, as in Envoy: while it
    /// is missing, each connection is closed (flag NC).
    fn check_cluster_references(&self) -> Result<()> {
        use super::listener::NetworkFilter;
        use super::route::{Action, ClusterTarget};
        if self.dynamic.as_ref().is_some_and(|d| d.cds.is_some()) {
            // Clusters may arrive over CDS.
            return Ok(());
        }
        let known: HashSet<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let check = |name: &str, path: String| -> Result<()> {
            if known.contains(name) {
                Ok(())
            } else {
                Err(ConfigError::new(path, format!("unknown cluster '{name}'")))
            }
        };
        for (li, l) in self.listeners.iter().enumerate() {
            for (ci, fc) in l
                .filter_chains
                .iter()
                .chain(l.default_filter_chain.iter())
                .enumerate()
            {
                let base = format!("static_resources.listeners[{li}].filter_chains[{ci}].filters");
                match &fc.filter {
                    NetworkFilter::Tcp(_) => {}
                    NetworkFilter::Http(h) => {
                        let super::hcm::RouteSpec::Static(table) = &h.routes else {
                            return Err(common::unsupported(
                                &format!("{base}.typed_config.rds"),
                                "RDS in a static listener",
                            ));
                        };
                        for (vi, vh) in table.virtual_hosts.iter().enumerate() {
                            for (ri, r) in vh.routes.iter().enumerate() {
                                let p = format!("{base}.typed_config.route_config.virtual_hosts[{vi}].routes[{ri}].route");
                                let Action::Forward(f) = &r.action else {
                                    continue;
                                };
                                match &f.target {
                                    ClusterTarget::Named(n) => check(n, format!("{p}.cluster"))?,
                                    ClusterTarget::Weighted(w) => {
                                        for c in &w.clusters {
                                            check(&c.name, format!("{p}.weighted_clusters"))?;
                                        }
                                    }
                                    ClusterTarget::Header(_) => {}
                                }
                                for m in &f.mirrors {
                                    if let super::route::MirrorTarget::Cluster(c) = &m.target {
                                        check(c, format!("{p}.request_mirror_policies"))?;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str) -> Result<Loaded> {
        load(&Source {
            path: None,
            yaml: Some(yaml),
            unknown_fields: None,
        })
    }

    const ADS: &str = "dynamic_resources: {ads_config: {api_type: DELTA_GRPC, grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]}, cds_config: {ads: {}}, lds_config: {ads: {}}}";

    #[test]
    fn the_ads_cluster_must_be_a_static_cluster_with_endpoints() {
        let e = load_yaml(ADS).expect_err("no such cluster");
        assert_eq!(
            e.to_string(),
            "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: unknown cluster 'xds-grpc' (it must be a static cluster)"
        );
        let e = load_yaml(&format!(
            "{ADS}\nstatic_resources: {{clusters: [{{name: xds-grpc}}]}}"
        ))
        .expect_err("no endpoints");
        assert!(
            e.to_string()
                .ends_with("cluster 'xds-grpc' has no endpoints"),
            "{e}"
        );
        let ok = load_yaml(&format!(
            "{ADS}\nstatic_resources: {{clusters: [{{name: xds-grpc, load_assignment: {{cluster_name: xds-grpc, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: /tmp/XDS}}}}}}}}]}}]}}}}]}}"
        ))
        .expect("valid");
        assert!(ok.bootstrap.dynamic.is_some());
    }

    #[test]
    fn static_listeners_may_not_use_rds() {
        let e = load_yaml(
            r#"static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          rds: {route_config_name: r, config_source: {ads: {}}}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
"#,
        )
        .expect_err("rds in a static listener");
        assert!(
            e.to_string()
                .ends_with("typed_config.rds: RDS in a static listener is not supported yet"),
            "{e}"
        );
    }
}
