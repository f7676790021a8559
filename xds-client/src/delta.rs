//! Incremental (delta) ADS protocol state, without I/O: per type, the names subscribed to
//! and the version of every resource accepted so far. Every delta request the client
//! sends is built here.
//!
//! The rules (Envoy's delta xDS protocol):
//! - Subscription changes send only the difference (`resource_names_subscribe` /
//!   `resource_names_unsubscribe`); a wildcard type (LDS, CDS) subscribes with no names.
//! - An ACK carries the response's nonce; a NACK also carries an `error_detail`.
//! - A new stream re-sends each subscription with `initial_resource_versions`: the
//!   versions of the resources this client holds, so the server sends only what changed.
//! - A response's resources are kept (with their versions) and its `removed_resources`
//!   dropped only once the consumer accepts it.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::rpc::Status;

use crate::resource::ResourceType;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaSubscription {
    /// Requested names; for a wildcard type, empty means "everything".
    pub names: BTreeSet<String>,
    /// Accepted resources and their versions.
    pub versions: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct DeltaState {
    node: Node,
    node_once: bool,
    node_sent: bool,
    subs: BTreeMap<ResourceType, DeltaSubscription>,
}

impl DeltaState {
    pub fn new(node: Node, set_node_on_first_message_only: bool) -> DeltaState {
        DeltaState {
            node,
            node_once: set_node_on_first_message_only,
            node_sent: false,
            subs: BTreeMap::new(),
        }
    }

    pub fn subscription(&self, ty: ResourceType) -> Option<&DeltaSubscription> {
        self.subs.get(&ty)
    }

    fn request(&mut self, ty: ResourceType) -> DeltaDiscoveryRequest {
        let node = if self.node_once && self.node_sent {
            None
        } else {
            self.node_sent = true;
            Some(self.node.clone())
        };
        DeltaDiscoveryRequest {
            node,
            type_url: ty.type_url().to_string(),
            ..Default::default()
        }
    }

    /// The requests that open a stream: every subscription, with the versions held.
    pub fn opening_requests(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.node_sent = false;
        let types: Vec<ResourceType> = ResourceType::ALL
            .into_iter()
            .filter(|t| self.subs.contains_key(t))
            .collect();
        types
            .into_iter()
            .map(|t| {
                let mut r = self.request(t);
                if let Some(sub) = self.subs.get(&t) {
                    r.resource_names_subscribe = sub.names.iter().cloned().collect();
                    r.initial_resource_versions = sub
                        .versions
                        .iter()
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect();
                }
                r
            })
            .collect()
    }

    /// Sets the names `ty` subscribes to; returns the request carrying the difference,
    /// if there is one (the first subscription of a type always sends a request).
    pub fn subscribe(
        &mut self,
        ty: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<DeltaDiscoveryRequest> {
        let (added, removed): (Vec<String>, Vec<String>) = match self.subs.get(&ty) {
            Some(sub) if sub.names == names => return None,
            Some(sub) => (
                names.difference(&sub.names).cloned().collect(),
                sub.names.difference(&names).cloned().collect(),
            ),
            None => (names.iter().cloned().collect(), Vec::new()),
        };
        let sub = self.subs.entry(ty).or_default();
        for gone in &removed {
            sub.versions.remove(gone);
        }
        sub.names = names;
        let mut r = self.request(ty);
        r.resource_names_subscribe = added;
        r.resource_names_unsubscribe = removed;
        Some(r)
    }

    /// Accepts a response: records the versions of its resources, forgets the removed
    /// ones, and returns the ACK.
    pub fn ack(
        &mut self,
        ty: ResourceType,
        nonce: &str,
        updated: &[(String, String)],
        removed: &[String],
    ) -> DeltaDiscoveryRequest {
        let sub = self.subs.entry(ty).or_default();
        for (name, version) in updated {
            sub.versions.insert(name.clone(), version.clone());
        }
        for name in removed {
            sub.versions.remove(name);
        }
        let mut r = self.request(ty);
        r.response_nonce = nonce.to_string();
        r
    }

    /// Rejects a response: nothing it carried is recorded; returns the NACK.
    pub fn nack(&mut self, ty: ResourceType, nonce: &str, error: Status) -> DeltaDiscoveryRequest {
        let mut r = self.request(ty);
        r.response_nonce = nonce.to_string();
        r.error_detail = Some(error);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn state() -> DeltaState {
        DeltaState::new(
            Node {
                id: "sidecar~1.2.3.4~a.ns~ns.svc.cluster.local".into(),
                ..Default::default()
            },
            false,
        )
    }

    #[test]
    fn subscriptions_send_differences() {
        let mut s = state();
        let eds = ResourceType::ClusterLoadAssignment;
        let r = s.subscribe(eds, names(&["a", "b"])).expect("first");
        assert_eq!(r.resource_names_subscribe, vec!["a", "b"]);
        assert!(r.resource_names_unsubscribe.is_empty());
        s.ack(
            eds,
            "n1",
            &[("a".into(), "1".into()), ("b".into(), "1".into())],
            &[],
        );
        let r = s.subscribe(eds, names(&["b", "c"])).expect("changed");
        assert_eq!(r.resource_names_subscribe, vec!["c"]);
        assert_eq!(r.resource_names_unsubscribe, vec!["a"]);
        assert!(!s.subscription(eds).expect("sub").versions.contains_key("a"));
        assert!(s.subscribe(eds, names(&["c", "b"])).is_none());
        // A wildcard type subscribes with no names.
        let r = s
            .subscribe(ResourceType::Cluster, BTreeSet::new())
            .expect("cds");
        assert!(r.resource_names_subscribe.is_empty());
    }

    #[test]
    fn ack_records_versions_and_removals_nack_records_nothing() {
        let mut s = state();
        let cds = ResourceType::Cluster;
        s.subscribe(cds, BTreeSet::new());
        let ack = s.ack(
            cds,
            "n1",
            &[("a".into(), "1".into()), ("b".into(), "1".into())],
            &[],
        );
        assert_eq!(ack.response_nonce, "n1");
        assert!(ack.error_detail.is_none());
        let nack = s.nack(
            cds,
            "n2",
            Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            },
        );
        assert_eq!(nack.response_nonce, "n2");
        assert!(nack.error_detail.is_some());
        s.ack(cds, "n3", &[("a".into(), "2".into())], &["b".into()]);
        let v = &s.subscription(cds).expect("sub").versions;
        assert_eq!(v.len(), 1);
        assert_eq!(v.get("a").map(String::as_str), Some("2"));
    }

    #[test]
    fn a_new_stream_sends_initial_resource_versions() {
        let mut s = state();
        let cds = ResourceType::Cluster;
        s.subscribe(cds, BTreeSet::new());
        s.ack(cds, "n1", &[("a".into(), "7".into())], &[]);
        let open = s.opening_requests();
        assert_eq!(open.len(), 1);
        assert_eq!(
            open[0]
                .initial_resource_versions
                .get("a")
                .map(String::as_str),
            Some("7")
        );
        assert!(open[0].response_nonce.is_empty());
        assert!(open[0].node.is_some());
    }
}
