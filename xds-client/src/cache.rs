//! The accepted resources, per type, as immutable snapshots behind `watch` channels: a
//! consumer that applied an update (or any other reader, such as a config dump) sees the
//! whole current set of a type. Only accepted updates reach the cache; a NACKed one
//! leaves it as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;

use crate::resource::ResourceType;

/// One accepted resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The resource's own version (delta), or the response's `version_info` (state of
    /// the world).
    pub version: String,
    pub body: Any,
}

/// Every accepted resource of one type, by name, and the version of the response that
/// made it. Names and resources are shared between snapshots, so the next snapshot after
/// a delta update copies no resource bodies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version_info: String,
    pub resources: BTreeMap<Arc<str>, Arc<Cached>>,
}

/// The name of an Envoy resource: field 1 of Listener, RouteConfiguration, Cluster,
/// ClusterLoadAssignment (`cluster_name`) and Secret.
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

pub fn resource_name(body: &Any) -> Option<String> {
    NameOnly::decode(body.value.as_slice())
        .ok()
        .map(|n| n.name)
        .filter(|n| !n.is_empty())
}

/// One watch channel per resource type; shared (behind an `Arc`) by the client, which
/// writes, and its handles, which read.
#[derive(Debug)]
pub struct Cache {
    /// Indexed by `ResourceType as usize`.
    types: [watch::Sender<Arc<Snapshot>>; ResourceType::ALL.len()],
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            types: std::array::from_fn(|_| watch::channel(Arc::new(Snapshot::default())).0),
        }
    }
}

impl Cache {
    fn sender(&self, ty: ResourceType) -> &watch::Sender<Arc<Snapshot>> {
        &self.types[ty as usize]
    }

    /// Watches `ty`'s snapshot (empty until its first accepted update).
    pub fn watch(&self, ty: ResourceType) -> watch::Receiver<Arc<Snapshot>> {
        self.sender(ty).subscribe()
    }

    /// Records an accepted state-of-the-world response: `resources` is the whole set.
    pub fn replace(&self, ty: ResourceType, version_info: &str, resources: &[Any]) {
        let snapshot = Snapshot {
            version_info: version_info.to_string(),
            resources: resources
                .iter()
                .filter_map(|r| {
                    let cached = Cached {
                        version: version_info.to_string(),
                        body: r.clone(),
                    };
                    Some((Arc::from(resource_name(r)?), Arc::new(cached)))
                })
                .collect(),
        };
        self.sender(ty).send_replace(Arc::new(snapshot));
    }

    /// Records an accepted delta response.
    pub fn apply_delta(
        &self,
        ty: ResourceType,
        system_version_info: &str,
        updated: impl IntoIterator<Item = (String, String, Any)>,
        removed: &[String],
    ) {
        let tx = self.sender(ty);
        let mut next = Snapshot::clone(&tx.borrow());
        next.version_info = system_version_info.to_string();
        for (name, version, body) in updated {
            next.resources
                .insert(Arc::from(name), Arc::new(Cached { version, body }));
        }
        for name in removed {
            next.resources.remove(name.as_str());
        }
        tx.send_replace(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    fn cluster(name: &str) -> Any {
        Any {
            type_url: ResourceType::Cluster.type_url().into(),
            value: Cluster {
                name: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn names_come_from_field_one() {
        assert_eq!(resource_name(&cluster("a")).as_deref(), Some("a"));
        let cla = Any {
            type_url: ResourceType::ClusterLoadAssignment.type_url().into(),
            value: ClusterLoadAssignment {
                cluster_name: "outbound|80||svc".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        assert_eq!(resource_name(&cla).as_deref(), Some("outbound|80||svc"));
        assert_eq!(resource_name(&cluster("")), None);
    }

    #[test]
    fn replace_and_delta_update_the_watched_snapshot() {
        let c = Cache::default();
        let mut w = c.watch(ResourceType::Cluster);
        c.replace(ResourceType::Cluster, "v1", &[cluster("a"), cluster("b")]);
        assert!(w.has_changed().unwrap_or(false));
        let s = w.borrow_and_update().clone();
        assert_eq!(s.version_info, "v1");
        assert_eq!(
            s.resources.keys().map(|k| &**k).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        c.apply_delta(
            ResourceType::Cluster,
            "s2",
            [("c".to_string(), "7".to_string(), cluster("c"))],
            &["a".to_string()],
        );
        let s = w.borrow_and_update().clone();
        assert_eq!(
            s.resources.keys().map(|k| &**k).collect::<Vec<_>>(),
            vec!["b", "c"]
        );
        assert_eq!(s.resources["c"].version, "7");
        // Snapshots are immutable: an old one is unchanged by later updates.
        c.replace(ResourceType::Cluster, "v3", &[]);
        assert_eq!(s.resources.len(), 2);
        assert!(w.borrow().resources.is_empty());
    }
}
