//! State-of-the-world ADS protocol state, without I/O: what each subscribed type has
//! accepted (`version_info`), the last response it answered (`nonce`), and which names it
//! wants. Every request the client sends is built here.
//!
//! The rules (Envoy's xDS protocol):
//! - An ACK carries the new `version_info` and the response's nonce; a NACK carries the
//!   previous (still applied) `version_info`, the response's nonce and an `error_detail`.
//! - A subscription change carries the current version and the latest nonce.
//! - A new stream re-sends each subscription with the last accepted version and no nonce.
//! - The node goes in every request, or only the first of a stream when
//!   `set_node_on_first_message_only` is set.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status;

use crate::resource::ResourceType;

/// One type's subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Requested names; for a wildcard type, empty means "everything".
    pub names: BTreeSet<String>,
    /// The version last accepted (empty before the first ACK).
    pub version_info: String,
    /// The nonce of the last response received on the current stream.
    pub nonce: String,
}

#[derive(Debug, Clone)]
pub struct SotwState {
    node: Node,
    node_once: bool,
    node_sent: bool,
    subs: BTreeMap<ResourceType, Subscription>,
}

impl SotwState {
    pub fn new(node: Node, set_node_on_first_message_only: bool) -> SotwState {
        SotwState {
            node,
            node_once: set_node_on_first_message_only,
            node_sent: false,
            subs: BTreeMap::new(),
        }
    }

    pub fn subscription(&self, ty: ResourceType) -> Option<&Subscription> {
        self.subs.get(&ty)
    }

    fn request(&mut self, ty: ResourceType, error: Option<Status>) -> DiscoveryRequest {
        let node = if self.node_once && self.node_sent {
            None
        } else {
            self.node_sent = true;
            Some(self.node.clone())
        };
        let sub = self.subs.get(&ty).cloned().unwrap_or_default();
        DiscoveryRequest {
            version_info: sub.version_info,
            node,
            resource_names: sub.names.into_iter().collect(),
            type_url: ty.type_url().to_string(),
            response_nonce: sub.nonce,
            error_detail: error,
            ..Default::default()
        }
    }

    /// The requests that open a stream: every subscription, in Envoy's order, with its
    /// last accepted version and no nonce.
    pub fn opening_requests(&mut self) -> Vec<DiscoveryRequest> {
        self.node_sent = false;
        for sub in self.subs.values_mut() {
            sub.nonce.clear();
        }
        let types: Vec<ResourceType> = ResourceType::ALL
            .into_iter()
            .filter(|t| self.subs.contains_key(t))
            .collect();
        types.into_iter().map(|t| self.request(t, None)).collect()
    }

    /// Sets the names `ty` subscribes to (a wildcard type with no names subscribes to
    /// everything). Returns the request to send if anything changed.
    pub fn subscribe(
        &mut self,
        ty: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<DiscoveryRequest> {
        match self.subs.get_mut(&ty) {
            Some(sub) if sub.names == names => None,
            Some(sub) => {
                sub.names = names;
                Some(self.request(ty, None))
            }
            None => {
                self.subs.insert(
                    ty,
                    Subscription {
                        names,
                        ..Default::default()
                    },
                );
                Some(self.request(ty, None))
            }
        }
    }

    /// Accepts a response: remembers its version and nonce and returns the ACK.
    pub fn ack(&mut self, ty: ResourceType, version_info: &str, nonce: &str) -> DiscoveryRequest {
        let sub = self.subs.entry(ty).or_default();
        sub.version_info = version_info.to_string();
        sub.nonce = nonce.to_string();
        self.request(ty, None)
    }

    /// Rejects a response: keeps the applied version, remembers the nonce, and returns the
    /// NACK carrying `error`.
    pub fn nack(&mut self, ty: ResourceType, nonce: &str, error: Status) -> DiscoveryRequest {
        self.subs.entry(ty).or_default().nonce = nonce.to_string();
        self.request(ty, Some(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".into(),
            cluster: "pod.ns".into(),
            ..Default::default()
        }
    }

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ack_carries_the_new_version_and_nack_the_old_one() {
        let mut s = SotwState::new(node(), false);
        let first = s
            .subscribe(ResourceType::Cluster, BTreeSet::new())
            .expect("request");
        assert_eq!(first.version_info, "");
        assert_eq!(first.response_nonce, "");
        assert!(first.resource_names.is_empty(), "wildcard");
        let ack = s.ack(ResourceType::Cluster, "v1", "n1");
        assert_eq!(
            (ack.version_info.as_str(), ack.response_nonce.as_str()),
            ("v1", "n1")
        );
        assert!(ack.error_detail.is_none());
        let err = Status {
            code: 3,
            message: "cluster 'a': bad".into(),
            details: vec![],
        };
        let nack = s.nack(ResourceType::Cluster, "n2", err.clone());
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("v1", "n2")
        );
        assert_eq!(nack.error_detail, Some(err));
    }

    #[test]
    fn subscription_changes_send_only_when_the_names_change() {
        let mut s = SotwState::new(node(), false);
        let r = s
            .subscribe(ResourceType::ClusterLoadAssignment, names(&["a", "b"]))
            .expect("first");
        assert_eq!(r.resource_names, vec!["a", "b"]);
        s.ack(ResourceType::ClusterLoadAssignment, "3", "n7");
        assert!(s
            .subscribe(ResourceType::ClusterLoadAssignment, names(&["b", "a"]))
            .is_none());
        let r = s
            .subscribe(ResourceType::ClusterLoadAssignment, names(&["a"]))
            .expect("changed");
        assert_eq!(r.resource_names, vec!["a"]);
        assert_eq!(
            (r.version_info.as_str(), r.response_nonce.as_str()),
            ("3", "n7")
        );
    }

    #[test]
    fn a_new_stream_resends_versions_without_nonces_and_the_node_once() {
        let mut s = SotwState::new(node(), true);
        s.subscribe(ResourceType::Listener, BTreeSet::new());
        s.subscribe(ResourceType::Cluster, BTreeSet::new());
        s.ack(ResourceType::Cluster, "c1", "n1");
        s.ack(ResourceType::Listener, "l1", "n2");
        let open = s.opening_requests();
        let types: Vec<&str> = open.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(
            types,
            vec![
                ResourceType::Cluster.type_url(),
                ResourceType::Listener.type_url()
            ]
        );
        assert_eq!(open[0].version_info, "c1");
        assert!(open.iter().all(|r| r.response_nonce.is_empty()));
        assert!(open[0].node.is_some() && open[1].node.is_none());
    }
}
