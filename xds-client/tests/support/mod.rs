//! A fake ADS control plane (tonic, on `127.0.0.1:0` or a Unix socket) for the client's
//! tests: each stream the client opens, state of the world or delta, is handed to the
//! test, which reads its requests and writes its responses.

#![allow(dead_code)]

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
use xds_client::{Api, Config, Event, ResourceType, Target, Update};

/// One ADS stream as the fake control plane sees it.
pub struct ServerStream<Req, Resp> {
    requests: mpsc::UnboundedReceiver<Req>,
    responses: mpsc::UnboundedSender<Result<Resp, Status>>,
}

impl<Req, Resp> ServerStream<Req, Resp> {
    pub async fn request(&mut self) -> Req {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("a request within 5 s")
            .expect("stream open")
    }

    pub fn respond(&self, r: Resp) {
        self.responses.send(Ok(r)).expect("stream open");
    }
}

pub type SotwStream = ServerStream<DiscoveryRequest, DiscoveryResponse>;
pub type DeltaStream = ServerStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

struct FakeAds {
    sotw: mpsc::UnboundedSender<SotwStream>,
    delta: mpsc::UnboundedSender<DeltaStream>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Forwards the client's requests to the test; returns the stream half and the
/// responses the test writes.
fn bridge<Req: Send + 'static, Resp: Send + 'static>(
    mut inbound: Streaming<Req>,
) -> (ServerStream<Req, Resp>, ResponseStream<Resp>) {
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (resp_tx, resp_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(r)) = inbound.next().await {
            if req_tx.send(r).is_err() {
                break;
            }
        }
    });
    (
        ServerStream {
            requests: req_rx,
            responses: resp_tx,
        },
        Box::pin(UnboundedReceiverStream::new(resp_rx)),
    )
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (stream, out) = bridge(request.into_inner());
        let _ = self.sotw.send(stream);
        Ok(Response::new(out))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (stream, out) = bridge(request.into_inner());
        let _ = self.delta.send(stream);
        Ok(Response::new(out))
    }
}

pub enum Listen {
    Tcp,
    Unix(tempfile::TempDir),
}

/// The streams clients open to a fake control plane.
pub struct ControlPlane {
    pub target: Target,
    sotw: mpsc::UnboundedReceiver<SotwStream>,
    delta: mpsc::UnboundedReceiver<DeltaStream>,
}

impl ControlPlane {
    pub async fn start(listen: &Listen) -> ControlPlane {
        let (sotw_tx, sotw) = mpsc::unbounded_channel();
        let (delta_tx, delta) = mpsc::unbounded_channel();
        let svc = AggregatedDiscoveryServiceServer::new(FakeAds {
            sotw: sotw_tx,
            delta: delta_tx,
        });
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
        ControlPlane {
            target,
            sotw,
            delta,
        }
    }

    pub async fn sotw_stream(&mut self) -> SotwStream {
        tokio::time::timeout(Duration::from_secs(5), self.sotw.recv())
            .await
            .expect("a stream within 5 s")
            .expect("server running")
    }

    pub async fn delta_stream(&mut self) -> DeltaStream {
        tokio::time::timeout(Duration::from_secs(5), self.delta.recv())
            .await
            .expect("a stream within 5 s")
            .expect("server running")
    }
}

pub fn config(target: Target, api: Api) -> Config {
    Config {
        target,
        api,
        node: Node {
            id: "sidecar~10.1.2.3~app-1.default~default.svc.cluster.local".into(),
            cluster: "app.default".into(),
            ..Default::default()
        },
        set_node_on_first_message_only: true,
        channel: ChannelOptions::default(),
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        initial_fetch_timeout: None,
        keep_resources: true,
    }
}

pub fn cluster(name: &str) -> Any {
    Any {
        type_url: ResourceType::Cluster.type_url().into(),
        value: Cluster {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

pub fn cluster_name(a: &Any) -> String {
    Cluster::decode(a.value.as_slice()).expect("cluster").name
}

pub async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("client running")
}

pub async fn next_update(events: &mut mpsc::Receiver<Event>) -> Update {
    loop {
        match next_event(events).await {
            Event::Update(u) => return u,
            Event::Connected => continue,
            e @ (Event::Disconnected { .. } | Event::InitialFetchTimeout(_)) => {
                panic!("unexpected {e:?}")
            }
        }
    }
}

/// Waits for the client to report the stream's end.
pub async fn disconnected(events: &mut mpsc::Receiver<Event>) {
    loop {
        match next_event(events).await {
            Event::Disconnected { .. } => return,
            Event::Connected => continue,
            Event::Update(u) => panic!("unexpected update {u:?}"),
            e @ Event::InitialFetchTimeout(_) => panic!("unexpected {e:?}"),
        }
    }
}
