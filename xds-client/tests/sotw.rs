//! The state-of-the-world ADS client against a fake control plane (tonic, on
//! `127.0.0.1:0` and on a Unix socket): initial sync, ACK, NACK and recovery, reconnect
//! with versions re-sent, subscription changes, and bad responses.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use xds_client::backoff::Backoff;
use xds_client::transport::ChannelOptions;
use xds_client::{Config, Event, Rejection, ResourceType, Target, Update};

/// One ADS stream as the fake control plane sees it.
struct ServerStream {
    requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    responses: mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>,
}

impl ServerStream {
    async fn request(&mut self) -> DiscoveryRequest {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("a request within 5 s")
            .expect("stream open")
    }

    fn respond(&self, r: DiscoveryResponse) {
        self.responses.send(Ok(r)).expect("stream open");
    }
}

struct FakeAds {
    streams: mpsc::UnboundedSender<ServerStream>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (resp_tx, resp_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                if req_tx.send(r).is_err() {
                    break;
                }
            }
        });
        let _ = self.streams.send(ServerStream {
            requests: req_rx,
            responses: resp_tx,
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            resp_rx,
        ))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta is not served by this fake"))
    }
}

enum Listen {
    Tcp,
    Unix(tempfile::TempDir),
}

/// Starts the fake control plane; returns where it listens and its streams.
async fn control_plane(listen: &Listen) -> (Target, mpsc::UnboundedReceiver<ServerStream>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = AggregatedDiscoveryServiceServer::new(FakeAds { streams: tx });
    let router = tonic::transport::Server::builder().add_service(svc);
    let target = match listen {
        Listen::Tcp => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr");
            tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(l)));
            Target::Tcp(addr.to_string())
        }
        Listen::Unix(dir) => {
            let path = dir.path().join("xds.sock");
            let l = tokio::net::UnixListener::bind(&path).expect("bind unix");
            tokio::spawn(router.serve_with_incoming(UnixListenerStream::new(l)));
            Target::Unix(path)
        }
    };
    (target, rx)
}

fn config(target: Target) -> Config {
    Config {
        target,
        node: Node {
            id: "sidecar~10.1.2.3~app-1.default~default.svc.cluster.local".into(),
            cluster: "app.default".into(),
            ..Default::default()
        },
        set_node_on_first_message_only: true,
        channel: ChannelOptions::default(),
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
    }
}

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

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("client running")
}

async fn next_update(events: &mut mpsc::Receiver<Event>) -> Update {
    loop {
        match next_event(events).await {
            Event::Update(u) => return u,
            Event::Connected => continue,
            e @ Event::Disconnected { .. } => panic!("unexpected {e:?}"),
        }
    }
}

async fn accept_stream(streams: &mut mpsc::UnboundedReceiver<ServerStream>) -> ServerStream {
    tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .expect("a stream within 5 s")
        .expect("server running")
}

#[tokio::test]
async fn initial_sync_ack_then_nack_keeps_the_applied_version() {
    let (target, mut streams) = control_plane(&Listen::Tcp).await;
    let (handle, mut events) = xds_client::spawn(config(target));
    handle.subscribe(ResourceType::Cluster, BTreeSet::new());
    let mut s = accept_stream(&mut streams).await;
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
    let names: Vec<String> = u
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).expect("cluster").name)
        .collect();
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
    let (target, mut streams) = control_plane(&listen).await;
    let (handle, mut events) = xds_client::spawn(config(target));
    handle.subscribe(ResourceType::Listener, BTreeSet::new());
    let mut s = accept_stream(&mut streams).await;
    s.request().await;
    s.respond(response(ResourceType::Listener, "l1", "n1", vec![]));
    next_update(&mut events).await.accept();
    assert_eq!(s.request().await.version_info, "l1");

    // The control plane goes away mid-stream: the client reports it and comes back.
    drop(s);
    loop {
        match next_event(&mut events).await {
            Event::Disconnected { .. } => break,
            Event::Connected => continue,
            Event::Update(u) => panic!("unexpected update {u:?}"),
        }
    }
    let mut s = accept_stream(&mut streams).await;
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
    let (target, mut streams) = control_plane(&Listen::Tcp).await;
    let (handle, mut events) = xds_client::spawn(config(target));
    let eds = ResourceType::ClusterLoadAssignment;
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    handle.subscribe(eds, names(&["a", "b"]));
    let mut s = accept_stream(&mut streams).await;
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
