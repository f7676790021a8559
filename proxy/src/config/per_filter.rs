//! `typed_per_filter_config` on routes, virtual hosts and route configurations: per-route
//! settings for an HTTP filter, keyed by the filter's name in the connection manager. The
//! most specific level that has an entry for a filter wins (route, then virtual host,
//! then route configuration). A `FilterConfig` wrapper can disable the filter on the
//! route (or enable one the connection manager disabled).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::google::protobuf::Any;

use super::common;
use super::error::{ConfigError, Result, Within};
use super::fault::{self, Fault};

const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";

/// One level's overrides.
#[derive(Debug, Default)]
pub struct PerFilter(Vec<(String, Override)>);

#[derive(Debug, Clone)]
pub enum Override {
    /// The fault filter's settings for this route.
    Fault(Arc<Fault>),
    /// `FilterConfig { disabled: true }`.
    Disabled,
    /// `FilterConfig` without config: the filter runs with its own settings.
    Enabled,
}

impl PerFilter {
    pub fn build(map: &HashMap<String, Any>) -> Result<PerFilter> {
        let mut out: Vec<(String, Override)> = map
            .iter()
            .map(|(name, any)| {
                let field = format!("typed_per_filter_config[\"{name}\"]");
                Ok((name.clone(), convert(any).within(&field)?))
            })
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(PerFilter(out))
    }

    pub fn get(&self, filter: &str) -> Option<&Override> {
        self.0.iter().find(|(n, _)| n == filter).map(|(_, o)| o)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn convert(any: &Any) -> Result<Override> {
    let resolved = common::resolve_any(any)?;
    match resolved.name.as_str() {
        fault::TYPE => {
            let proto = resolved.decode()?;
            Ok(Override::Fault(Arc::new(Fault::try_from(&proto)?)))
        }
        FILTER_CONFIG => {
            let fc: FilterConfig = resolved.decode()?;
            if fc.disabled {
                return Ok(Override::Disabled);
            }
            match &fc.config {
                Some(inner) => convert(inner).within("config"),
                None => Ok(Override::Enabled),
            }
        }
        other => Err(common::unsupported(
            "",
            &format!("per-route config '{other}'"),
        )),
    }
}

/// Unused but named: a per-route entry must not be silently dropped.
pub fn reject_weighted(map: &HashMap<String, Any>) -> Result<()> {
    if map.is_empty() {
        return Ok(());
    }
    Err(ConfigError::new(
        "typed_per_filter_config",
        "per-filter config on a weighted cluster is not supported yet",
    ))
}
