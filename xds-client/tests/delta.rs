//! The delta ADS client against the fake control plane: initial sync, removals, ACK and
//! NACK, subscribe/unsubscribe differences, and `initial_resource_versions` after a
//! reconnect over a Unix socket.

mod support;

use std::collections::BTreeSet;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
use envoy_types::pb::google::protobuf::Any;
use support::{
    cluster, cluster_name, config, disconnected, next_update, ControlPlane, DeltaStream, Listen,
};
use xds_client::{Api, Rejection, ResourceType};

fn resource(name: &str, version: &str, body: Any) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(body),
        ..Default::default()
    }
}

fn response(
    ty: ResourceType,
    system_version: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: system_version.into(),
        resources,
        type_url: ty.type_url().into(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

/// Subscribes CDS (wildcard) and accepts clusters a@1 and b@1.
async fn synced(
    cp: &mut ControlPlane,
) -> (
    xds_client::Handle,
    tokio::sync::mpsc::Receiver<xds_client::Event>,
    DeltaStream,
) {
    let (handle, mut events) = xds_client::spawn(config(cp.target.clone(), Api::Delta));
    handle.subscribe(ResourceType::Cluster, BTreeSet::new());
    let mut s = cp.delta_stream().await;
    let first = s.request().await;
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());
    assert!(first.resource_names_subscribe.is_empty(), "wildcard");
    assert!(first.initial_resource_versions.is_empty());
    assert!(first.node.is_some());
    s.respond(response(
        ResourceType::Cluster,
        "s1",
        "n1",
        vec![
            resource("a", "1", cluster("a")),
            resource("b", "1", cluster("b")),
        ],
        &[],
    ));
    let u = next_update(&mut events).await;
    assert!(!u.complete);
    assert_eq!(u.version_info, "s1");
    let names: Vec<String> = u.resources.iter().map(cluster_name).collect();
    assert_eq!(names, vec!["a", "b"]);
    u.accept();
    let ack = s.request().await;
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none());
    assert!(ack.node.is_none(), "set_node_on_first_message_only");
    (handle, events, s)
}

#[tokio::test]
async fn updates_removals_ack_and_nack() {
    let mut cp = ControlPlane::start(&Listen::Tcp).await;
    let (handle, mut events, mut s) = synced(&mut cp).await;

    s.respond(response(
        ResourceType::Cluster,
        "s2",
        "n2",
        vec![resource("c", "1", cluster("c"))],
        &["a"],
    ));
    let u = next_update(&mut events).await;
    assert_eq!(u.removed, vec!["a"]);
    assert_eq!(u.resources.len(), 1);
    u.accept();
    assert_eq!(s.request().await.response_nonce, "n2");
    let cached = handle.watch(ResourceType::Cluster).borrow().clone();
    assert_eq!(
        cached.resources.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["b", "c"]
    );
    assert_eq!(cached.resources["c"].version, "1");

    s.respond(response(
        ResourceType::Cluster,
        "s3",
        "n3",
        vec![resource("d", "1", cluster(""))],
        &[],
    ));
    next_update(&mut events).await.reject(Rejection {
        message: "cluster 'd': name: must not be empty".into(),
    });
    let nack = s.request().await;
    assert_eq!(nack.response_nonce, "n3");
    assert_eq!(
        nack.error_detail.expect("error_detail").message,
        "cluster 'd': name: must not be empty"
    );

    // A resource without a name is NACKed without asking the consumer.
    s.respond(response(
        ResourceType::Cluster,
        "s4",
        "n4",
        vec![resource("", "1", cluster("x"))],
        &[],
    ));
    let nack = s.request().await;
    assert_eq!(nack.response_nonce, "n4");
    assert!(nack.error_detail.is_some());
}

#[tokio::test]
async fn subscribe_and_unsubscribe_send_differences() {
    let mut cp = ControlPlane::start(&Listen::Tcp).await;
    let (handle, _events, mut s) = synced(&mut cp).await;
    let eds = ResourceType::ClusterLoadAssignment;
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    handle.subscribe(eds, names(&["a", "b"]));
    let r = s.request().await;
    assert_eq!(r.type_url, eds.type_url());
    assert_eq!(r.resource_names_subscribe, vec!["a", "b"]);
    handle.subscribe(eds, names(&["b", "c"]));
    let r = s.request().await;
    assert_eq!(r.resource_names_subscribe, vec!["c"]);
    assert_eq!(r.resource_names_unsubscribe, vec!["a"]);
}

#[tokio::test]
async fn reconnect_sends_initial_resource_versions() {
    // Kept to the end: dropping it removes the socket.
    let listen = Listen::Unix(tempfile::tempdir().expect("dir"));
    let mut cp = ControlPlane::start(&listen).await;
    let (_handle, mut events, s) = synced(&mut cp).await;
    drop(s);
    disconnected(&mut events).await;
    let mut s = cp.delta_stream().await;
    let again = s.request().await;
    assert_eq!(again.type_url, ResourceType::Cluster.type_url());
    assert!(again.response_nonce.is_empty());
    let mut held: Vec<(String, String)> = again.initial_resource_versions.into_iter().collect();
    held.sort();
    assert_eq!(
        held,
        vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "1".to_string())
        ]
    );
}

/// SDS: a secret subscribed by name arrives as an update, is ACKed once accepted, and is
/// then in the cache; a later rotation of it comes the same way.
#[tokio::test]
async fn sds_secret_arrival_and_rotation() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Message;
    let mut cp = ControlPlane::start(&Listen::Tcp).await;
    let (handle, mut events, mut s) = synced(&mut cp).await;
    let sds = ResourceType::Secret;
    let secret = |name: &str| Any {
        type_url: sds.type_url().into(),
        value: Secret {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    };
    handle.subscribe(sds, ["default".to_string()].into_iter().collect());
    let r = s.request().await;
    assert_eq!(r.type_url, sds.type_url());
    assert_eq!(r.resource_names_subscribe, vec!["default"]);
    let mut cache = handle.watch(sds);
    for (version, nonce) in [("v1", "n-s1"), ("v2", "n-s2")] {
        s.respond(response(
            sds,
            version,
            nonce,
            vec![resource("default", version, secret("default"))],
            &[],
        ));
        let u = next_update(&mut events).await;
        assert_eq!((u.ty, u.resources.len()), (sds, 1));
        u.accept();
        let ack = s.request().await;
        assert_eq!(ack.response_nonce, nonce);
        assert!(ack.error_detail.is_none());
        cache.changed().await.expect("cache updated");
        let snap = cache.borrow_and_update().clone();
        assert_eq!(snap.version_info, version);
        assert!(snap.resources.contains_key("default"));
    }
}
