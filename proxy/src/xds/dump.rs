//! What xDS delivered, kept for `/config_dump`: each resource's encoded proto with the
//! `version_info` it came with and when it was applied, active or warming.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::config::dump::{typed_json, DynamicSections};

const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "envoy.config.listener.v3.Listener";
const ROUTE: &str = "envoy.config.route.v3.RouteConfiguration";

/// One resource as received.
#[derive(Debug, Clone)]
pub struct Entry {
    pub version_info: String,
    pub last_updated: String,
    /// The encoded resource.
    pub bytes: Arc<[u8]>,
}

impl Entry {
    pub fn new(version_info: &str, bytes: &[u8]) -> Self {
        Entry {
            version_info: version_info.to_owned(),
            last_updated: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string(),
            bytes: bytes.into(),
        }
    }

    fn render(&self, key: &str, type_name: &str) -> Value {
        let mut m = Map::new();
        m.insert("version_info".into(), json!(self.version_info));
        m.insert(key.into(), typed_json(&self.bytes, type_name));
        m.insert("last_updated".into(), json!(self.last_updated));
        Value::Object(m)
    }
}

/// A resource's active version and the version warming to replace it.
#[derive(Debug, Clone, Default)]
pub struct States {
    pub active: Option<Entry>,
    pub warming: Option<Entry>,
}

/// What a batch did to one resource, for the dump.
#[derive(Debug)]
pub enum Change {
    /// This version serves now (any warming one is superseded).
    Active(Entry),
    /// This version waits for its dependencies; the active one, if any, stays.
    Warming(Entry),
}

/// Records a batch's changes and removals in one section of the dump.
pub fn record(
    section: &mut BTreeMap<String, States>,
    changes: Vec<(String, Change)>,
    removed: &[String],
) {
    for (name, change) in changes {
        let s = section.entry(name).or_default();
        match change {
            Change::Active(e) => {
                s.active = Some(e);
                s.warming = None;
            }
            Change::Warming(e) => s.warming = Some(e),
        }
    }
    for name in removed {
        section.remove(name);
    }
}

/// The warming version of `name` became active.
pub fn promote(section: &mut BTreeMap<String, States>, name: &str) {
    if let Some(s) = section.get_mut(name) {
        if let Some(w) = s.warming.take() {
            s.active = Some(w);
        }
    }
}

#[derive(Debug, Default)]
pub struct DynamicDump {
    pub clusters: BTreeMap<String, States>,
    pub listeners: BTreeMap<String, States>,
    pub routes: BTreeMap<String, Entry>,
    /// The last accepted `version_info` of CDS and LDS.
    pub cds_version: String,
    pub lds_version: String,
}

impl DynamicDump {
    pub fn sections(&self) -> DynamicSections {
        let mut active = Vec::new();
        let mut warming = Vec::new();
        for s in self.clusters.values() {
            active.extend(s.active.as_ref().map(|e| e.render("cluster", CLUSTER)));
            warming.extend(s.warming.as_ref().map(|e| e.render("cluster", CLUSTER)));
        }
        let mut clusters = json!({});
        if !self.clusters.is_empty() {
            clusters = json!({
                "version_info": self.cds_version,
                "dynamic_active_clusters": active,
                "dynamic_warming_clusters": warming,
            });
        }
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|(name, s)| {
                let mut m = Map::new();
                m.insert("name".into(), json!(name));
                if let Some(e) = &s.active {
                    m.insert("active_state".into(), e.render("listener", LISTENER));
                }
                if let Some(e) = &s.warming {
                    m.insert("warming_state".into(), e.render("listener", LISTENER));
                }
                Value::Object(m)
            })
            .collect();
        let mut listeners_dump = json!({});
        if !listeners.is_empty() {
            listeners_dump =
                json!({"version_info": self.lds_version, "dynamic_listeners": listeners});
        }
        let routes: Vec<Value> = self
            .routes
            .values()
            .map(|e| e.render("route_config", ROUTE))
            .collect();
        let mut routes_dump = json!({});
        if !routes.is_empty() {
            routes_dump = json!({"dynamic_route_configs": routes});
        }
        DynamicSections {
            clusters,
            listeners: listeners_dump,
            routes: routes_dump,
        }
    }
}
