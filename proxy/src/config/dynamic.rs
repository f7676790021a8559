//! `dynamic_resources` -> [`DynamicResources`]: where LDS and CDS come from (the ADS
//! stream or a watched file) and the ADS stream itself (`ads_config`: state of the world
//! or delta, to a bootstrap cluster). Envoy's defaults: `initial_fetch_timeout` 15 s,
//! zero meaning none.

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3 as pb;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource as PbConfigSource,
};

use super::common;
use super::error::{ConfigError, Result, Within};

/// Envoy's `initial_fetch_timeout` when the field is absent.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
pub struct DynamicResources {
    pub lds: Option<ConfigSource>,
    pub cds: Option<ConfigSource>,
    pub ads: Option<Ads>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSource {
    pub kind: SourceKind,
    /// `None`: wait for the first response indefinitely.
    pub initial_fetch_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Over the ADS stream.
    Ads,
    /// A file holding a DiscoveryResponse, reloaded when it (or `watched_directory`)
    /// changes.
    Path {
        path: PathBuf,
        watched_directory: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdsApi {
    /// `GRPC`: `StreamAggregatedResources`.
    StateOfTheWorld,
    /// `DELTA_GRPC`: `DeltaAggregatedResources`.
    Delta,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ads {
    pub api: AdsApi,
    /// The bootstrap cluster serving ADS (`grpc_services[0].envoy_grpc.cluster_name`).
    pub cluster: String,
    pub set_node_on_first_message_only: bool,
}

/// Converts a `ConfigSource` (LDS/CDS in the bootstrap, RDS in a connection manager,
/// EDS in a cluster).
pub fn config_source(s: &PbConfigSource) -> Result<ConfigSource> {
    if s.resource_api_version == ApiVersion::V2 as i32 {
        return Err(ConfigError::new(
            "resource_api_version",
            "only the V3 xDS API is supported",
        ));
    }
    let kind = match &s.config_source_specifier {
        None => {
            return Err(ConfigError::new(
                "config_source_specifier",
                "one of ads, path_config_source or api_config_source is required",
            ))
        }
        Some(ConfigSourceSpecifier::Ads(_)) => SourceKind::Ads,
        #[allow(deprecated)]
        Some(ConfigSourceSpecifier::Path(p)) => SourceKind::Path {
            path: PathBuf::from(p),
            watched_directory: None,
        },
        Some(ConfigSourceSpecifier::PathConfigSource(p)) => {
            if p.path.is_empty() {
                return Err(ConfigError::new(
                    "path_config_source.path",
                    "must not be empty",
                ));
            }
            SourceKind::Path {
                path: PathBuf::from(&p.path),
                watched_directory: p.watched_directory.as_ref().map(|w| PathBuf::from(&w.path)),
            }
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(_)) => {
            return Err(common::unsupported(
                "api_config_source",
                "a per-type xDS stream (use ads)",
            ))
        }
        Some(ConfigSourceSpecifier::Self_(_)) => {
            return Err(common::unsupported("self", "a self config source"))
        }
    };
    let initial_fetch_timeout = common::timeout_or(
        s.initial_fetch_timeout.as_ref(),
        "initial_fetch_timeout",
        Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
    )?;
    Ok(ConfigSource {
        kind,
        initial_fetch_timeout,
    })
}

fn ads(a: &ApiConfigSource) -> Result<Ads> {
    let api = match ApiType::try_from(a.api_type) {
        Ok(ApiType::Grpc) => AdsApi::StateOfTheWorld,
        Ok(ApiType::DeltaGrpc) => AdsApi::Delta,
        Ok(ApiType::Rest) => return Err(common::unsupported("api_type", "REST xDS")),
        Ok(other) => {
            return Err(ConfigError::new(
                "api_type",
                format!(
                    "{} is not an ADS api_type: use GRPC or DELTA_GRPC",
                    other.as_str_name()
                ),
            ))
        }
        Err(_) => {
            return Err(ConfigError::new(
                "api_type",
                format!("unknown value {}", a.api_type),
            ))
        }
    };
    if a.transport_api_version == ApiVersion::V2 as i32 {
        return Err(ConfigError::new(
            "transport_api_version",
            "only the V3 xDS API is supported",
        ));
    }
    let [service] = a.grpc_services.as_slice() else {
        return Err(ConfigError::new(
            "grpc_services",
            format!(
                "exactly one gRPC service is required, found {}",
                a.grpc_services.len()
            ),
        ));
    };
    let cluster = match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(g)) if !g.cluster_name.is_empty() => g.cluster_name.clone(),
        Some(TargetSpecifier::EnvoyGrpc(_)) => {
            return Err(ConfigError::new(
                "grpc_services[0].envoy_grpc.cluster_name",
                "must not be empty",
            ))
        }
        Some(TargetSpecifier::GoogleGrpc(_)) => {
            return Err(common::unsupported(
                "grpc_services[0].google_grpc",
                "the Google gRPC client (use envoy_grpc)",
            ))
        }
        None => {
            return Err(ConfigError::new(
                "grpc_services[0]",
                "envoy_grpc.cluster_name is required",
            ))
        }
    };
    Ok(Ads {
        api,
        cluster,
        set_node_on_first_message_only: a.set_node_on_first_message_only,
    })
}

impl TryFrom<&pb::bootstrap::DynamicResources> for DynamicResources {
    type Error = ConfigError;

    fn try_from(d: &pb::bootstrap::DynamicResources) -> Result<Self> {
        let lds = d
            .lds_config
            .as_ref()
            .map(config_source)
            .transpose()
            .within("lds_config")?;
        let cds = d
            .cds_config
            .as_ref()
            .map(config_source)
            .transpose()
            .within("cds_config")?;
        let ads = d
            .ads_config
            .as_ref()
            .map(ads)
            .transpose()
            .within("ads_config")?;
        for (field, source) in [("lds_config", &lds), ("cds_config", &cds)] {
            if source.as_ref().is_some_and(|s| s.kind == SourceKind::Ads) && ads.is_none() {
                return Err(ConfigError::new(
                    format!("{field}.ads"),
                    "needs dynamic_resources.ads_config",
                ));
            }
        }
        if !d.lds_resources_locator.is_empty() || !d.cds_resources_locator.is_empty() {
            return Err(common::unsupported(
                "lds_resources_locator",
                "xDS-TP resource locators",
            ));
        }
        Ok(DynamicResources { lds, cds, ads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{decode, parse_text, UnknownFields};

    const TYPE: &str = "envoy.config.bootstrap.v3.Bootstrap.DynamicResources";

    fn convert(yaml: &str) -> Result<DynamicResources> {
        let v = parse_text(yaml, "test").expect("yaml");
        let (d, _): (pb::bootstrap::DynamicResources, _) =
            decode(v, TYPE, UnknownFields::Reject).expect("decodes");
        DynamicResources::try_from(&d)
    }

    /// Istio's: delta ADS to the `xds-grpc` cluster, LDS and CDS over it, no fetch timeout.
    #[test]
    fn istio_delta_ads() {
        let d = convert(
            r#"
lds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
cds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
ads_config:
  api_type: DELTA_GRPC
  set_node_on_first_message_only: true
  transport_api_version: V3
  grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
"#,
        )
        .expect("valid");
        assert_eq!(
            d.ads,
            Some(Ads {
                api: AdsApi::Delta,
                cluster: "xds-grpc".into(),
                set_node_on_first_message_only: true
            })
        );
        let lds = d.lds.expect("lds");
        assert_eq!(lds.kind, SourceKind::Ads);
        assert_eq!(lds.initial_fetch_timeout, None);
    }

    #[test]
    fn files_and_the_default_fetch_timeout() {
        let d = convert(
            "cds_config: {path_config_source: {path: /var/lib/envoy/cds.yaml, watched_directory: {path: /var/lib/envoy}}}\nlds_config: {path: /var/lib/envoy/lds.yaml}",
        )
        .expect("valid");
        let cds = d.cds.expect("cds");
        assert_eq!(
            cds.kind,
            SourceKind::Path {
                path: "/var/lib/envoy/cds.yaml".into(),
                watched_directory: Some("/var/lib/envoy".into())
            }
        );
        assert_eq!(cds.initial_fetch_timeout, Some(Duration::from_secs(15)));
        assert!(d.ads.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("lds_config: {ads: {}}", "lds_config.ads: needs dynamic_resources.ads_config"),
            (
                "ads_config: {api_type: REST, grpc_services: [{envoy_grpc: {cluster_name: x}}]}",
                "ads_config.api_type: REST xDS is not supported yet",
            ),
            (
                "ads_config: {api_type: GRPC}",
                "ads_config.grpc_services: exactly one gRPC service is required, found 0",
            ),
            (
                "ads_config: {api_type: GRPC, grpc_services: [{google_grpc: {target_uri: x, stat_prefix: s}}]}",
                "ads_config.grpc_services[0].google_grpc: the Google gRPC client (use envoy_grpc) is not supported yet",
            ),
            (
                "cds_config: {api_config_source: {api_type: GRPC}}",
                "cds_config.api_config_source: a per-type xDS stream (use ads) is not supported yet",
            ),
            (
                "cds_config: {path_config_source: {path: ''}}",
                "cds_config.path_config_source.path: must not be empty",
            ),
        ];
        for (yaml, want) in cases {
            let e = convert(yaml).expect_err(yaml);
            assert_eq!(e.to_string(), want, "{yaml}");
        }
    }
}
