//! The state-of-the-world ADS client against a fake control plane (tonic, on
//! `127.0.0.1:0` and on a Unix socket): initial sync, ACK, NACK and recovery, reconnect
//! with versions re-sent, subscription changes, and bad responses.

mod support;

use std::collections::BTreeSet;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use support::{cluster, cluster_name, config, disconnected, next_update, ControlPlane, Listen};
use xds_client::{Api, Rejection, ResourceType};

fn response(
    ty: ResourceType,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: ty.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn initial_sync_ack_then_nack_keeps_the_applied_version() {
    let mut cp = ControlPlane::start(&Listen::Tcp).await;
    let (handle, mut events) = xds_client::spawn(config(cp.target.clone(), Api::StateOfTheWorld));
    handle.subscribe(ResourceType::Cluster, BTreeSet::new());
    let mut s = cp.sotw_stream().await;
    let first = s.request().await;
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());
    assert_eq!(
        (first.version_info.as_str(), first.response_nonce.as_str()),
        ("", "")
    );
    assert!(
        first.resource_names.is_empty(),
        "CDS is a wildcard subscription"
    );
    assert_eq!(
        first.node.expect("node on the first request").cluster,
        "app.default"
    );

    s.respond(response(
        ResourceType::Cluster,
        "v1",
        "n1",
        vec![cluster("a"), cluster("b")],
    ));
    let u = next_update(&mut events).await;
    assert_eq!(
        (u.ty, u.version_info.as_str()),
        (ResourceType::Cluster, "v1")
    );
    let names: Vec<String> = u.resources.iter().map(cluster_name).collect();
    assert_eq!(names, vec!["a", "b"]);
    u.accept();
    let ack = s.request().await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v1", "n1")
    );
    assert!(ack.error_detail.is_none());
    assert!(ack.node.is_none(), "set_node_on_first_message_only");

    s.respond(response(
        ResourceType::Cluster,
        "v2",
        "n2",
        vec![cluster("")],
    ));
    next_update(&mut events).await.reject(Rejection {
        message: "cluster '': name: must not be empty".into(),
    });
    let nack = s.request().await;
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("v1", "n2")
    );
    // The cache holds what was accepted, not what was rejected.
    let cached = handle.watch(ResourceType::Cluster).borrow().clone();
    assert_eq!(cached.version_info, "v1");
    assert_eq!(
        cached.resources.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let err = nack.error_detail.expect("error_detail");
    assert_eq!(err.code, 3);
    assert_eq!(err.message, "cluster '': name: must not be empty");

    // Recovery: the next good version is ACKed.
    s.respond(response(
        ResourceType::Cluster,
        "v3",
        "n3",
        vec![cluster("c")],
    ));
    next_update(&mut events).await.accept();
    let ack = s.request().await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v3", "n3")
    );
}

#[tokio::test]
async fn reconnects_over_a_unix_socket_and_resends_the_accepted_version() {
    let listen = Listen::Unix(tempfile::tempdir().expect("temp dir"));
    let mut cp = ControlPlane::start(&listen).await;
    let (handle, mut events) = xds_client::spawn(config(cp.target.clone(), Api::StateOfTheWorld));
    handle.subscribe(ResourceType::Listener, BTreeSet::new());
    let mut s = cp.sotw_stream().await;
    s.request().await;
    s.respond(response(ResourceType::Listener, "l1", "n1", vec![]));
    next_update(&mut events).await.accept();
    assert_eq!(s.request().await.version_info, "l1");

    // The control plane goes away mid-stream: the client reports it and comes back.
    drop(s);
    disconnected(&mut events).await;
    let mut s = cp.sotw_stream().await;
    let again = s.request().await;
    assert_eq!(again.type_url, ResourceType::Listener.type_url());
    assert_eq!(
        (again.version_info.as_str(), again.response_nonce.as_str()),
        ("l1", "")
    );
    assert!(again.node.is_some(), "the node again on a new stream");
    drop(listen);
}

#[tokio::test]
async fn subscription_changes_and_bad_responses() {
    let mut cp = ControlPlane::start(&Listen::Tcp).await;
    let (handle, mut events) = xds_client::spawn(config(cp.target.clone(), Api::StateOfTheWorld));
    let eds = ResourceType::ClusterLoadAssignment;
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    handle.subscribe(eds, names(&["a", "b"]));
    let mut s = cp.sotw_stream().await;
    assert_eq!(s.request().await.resource_names, vec!["a", "b"]);
    handle.subscribe(eds, names(&["b"]));
    let r = s.request().await;
    assert_eq!(r.resource_names, vec!["b"]);

    // A type nobody subscribed to is ignored (Envoy's behaviour): no ACK or NACK. The
    // next request the control plane sees answers the response after it.
    s.respond(response(ResourceType::Secret, "s1", "ns", vec![]));
    // A resource of the wrong type is NACKed, naming both types, without a consumer round.
    s.respond(response(eds, "e1", "n1", vec![cluster("a")]));
    let nack = s.request().await;
    assert_eq!(nack.response_nonce, "n1");
    assert_eq!(nack.version_info, "");
    let msg = nack.error_detail.expect("error_detail").message;
    assert!(msg.contains("envoy.config.cluster.v3.Cluster"), "{msg}");
    assert!(
        msg.contains("envoy.config.endpoint.v3.ClusterLoadAssignment"),
        "{msg}"
    );

    // An update the consumer drops unanswered is NACKed too.
    s.respond(response(eds, "e2", "n2", vec![]));
    drop(next_update(&mut events).await);
    let nack = s.request().await;
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("", "n2")
    );
    assert!(nack.error_detail.is_some());
}

/// `initial_fetch_timeout`: a type the control plane never answers is reported once; a
/// type that was answered is not.
#[tokio::test]
async fn initial_fetch_timeout_reports_an_unanswered_type() {
    let mut cp = ControlPlane::start(&Listen::Tcp).await;
    let mut cfg = config(cp.target.clone(), Api::StateOfTheWorld);
    cfg.initial_fetch_timeout = Some(std::time::Duration::from_millis(150));
    let (handle, mut events) = xds_client::spawn(cfg);
    handle.subscribe(ResourceType::Cluster, BTreeSet::new());
    handle.subscribe(ResourceType::Listener, BTreeSet::new());
    let mut s = cp.sotw_stream().await;
    s.request().await;
    s.request().await;
    s.respond(response(
        ResourceType::Cluster,
        "v1",
        "n1",
        vec![cluster("a")],
    ));
    next_update(&mut events).await.accept();
    loop {
        match support::next_event(&mut events).await {
            xds_client::Event::InitialFetchTimeout(ty) => {
                assert_eq!(ty, ResourceType::Listener);
                break;
            }
            xds_client::Event::Connected => continue,
            e => panic!("unexpected {e:?}"),
        }
    }
    // Later responses for it still come through.
    s.respond(response(ResourceType::Listener, "l1", "n2", vec![]));
    let u = next_update(&mut events).await;
    assert_eq!(u.ty, ResourceType::Listener);
}
