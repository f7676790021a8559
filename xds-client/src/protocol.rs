//! What differs between the two ADS variants, behind one trait the stream loop uses:
//! the message types, how a stream is opened, and how a response becomes an update and
//! an ACK or NACK.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::delta::DeltaState;
use crate::resource::ResourceType;
use crate::sotw::SotwState;

/// gRPC status code INVALID_ARGUMENT, which Envoy puts in a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

pub fn invalid(message: String) -> Status {
    Status {
        code: INVALID_ARGUMENT,
        message,
        details: Vec::new(),
    }
}

type Client = AggregatedDiscoveryServiceClient<Channel>;
type Opening<R> = Pin<Box<dyn Future<Output = Result<Streaming<R>, tonic::Status>> + Send>>;

/// A response waiting for the consumer's verdict.
#[derive(Debug, Clone)]
pub struct Pending {
    pub ty: ResourceType,
    pub nonce: String,
    pub version_info: String,
    /// Delta: (name, version) of the resources carried.
    pub versions: Vec<(String, String)>,
    /// Delta: names removed.
    pub removed: Vec<String>,
    /// Delta: (name, version) of the delivered resources, in their order.
    pub names: Vec<(String, String)>,
}

pub enum Received<R> {
    /// Not for us: no answer (Envoy ignores types it has no subscription for).
    Ignore,
    /// Answer at once without the consumer (a malformed response's NACK).
    Answer(ResourceType, R),
    /// Hand to the consumer.
    Deliver {
        pending: Pending,
        resources: Vec<Any>,
        complete: bool,
    },
}

pub trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;

    fn opening_requests(&mut self) -> Vec<Self::Request>;
    fn subscribe(&mut self, ty: ResourceType, names: BTreeSet<String>) -> Option<Self::Request>;
    fn receive(&mut self, resp: Self::Response) -> Received<Self::Request>;
    fn accept(&mut self, p: &Pending) -> Self::Request;
    fn reject(&mut self, p: &Pending, error: Status) -> Self::Request;
    fn open(client: Client, requests: ReceiverStream<Self::Request>) -> Opening<Self::Response>;
}

/// The subscribed type of a response, or why it is not for us.
fn subscribed_type(
    type_url: &str,
    subscribed: impl Fn(ResourceType) -> bool,
) -> Option<ResourceType> {
    let ty = ResourceType::from_type_url(type_url).filter(|t| subscribed(*t));
    if ty.is_none() {
        tracing::warn!(%type_url, "ignoring an xDS response of a type with no subscription");
    }
    ty
}

fn wrong_type(found: &str, expected: &str) -> Status {
    invalid(format!(
        "resource of type {found} in a response of type {expected}"
    ))
}

impl Protocol for SotwState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn opening_requests(&mut self) -> Vec<DiscoveryRequest> {
        SotwState::opening_requests(self)
    }

    fn subscribe(&mut self, ty: ResourceType, names: BTreeSet<String>) -> Option<DiscoveryRequest> {
        SotwState::subscribe(self, ty, names)
    }

    fn receive(&mut self, resp: DiscoveryResponse) -> Received<DiscoveryRequest> {
        let Some(ty) = subscribed_type(&resp.type_url, |t| self.subscription(t).is_some()) else {
            return Received::Ignore;
        };
        if let Some(bad) = resp.resources.iter().find(|r| r.type_url != resp.type_url) {
            let e = wrong_type(&bad.type_url, &resp.type_url);
            return Received::Answer(ty, self.nack(ty, &resp.nonce, e));
        }
        Received::Deliver {
            pending: Pending {
                ty,
                nonce: resp.nonce,
                version_info: resp.version_info,
                versions: Vec::new(),
                removed: Vec::new(),
                names: Vec::new(),
            },
            resources: resp.resources,
            complete: true,
        }
    }

    fn accept(&mut self, p: &Pending) -> DiscoveryRequest {
        self.ack(p.ty, &p.version_info, &p.nonce)
    }

    fn reject(&mut self, p: &Pending, error: Status) -> DiscoveryRequest {
        self.nack(p.ty, &p.nonce, error)
    }

    fn open(
        mut client: Client,
        requests: ReceiverStream<DiscoveryRequest>,
    ) -> Opening<DiscoveryResponse> {
        Box::pin(async move {
            Ok(client
                .stream_aggregated_resources(requests)
                .await?
                .into_inner())
        })
    }
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn opening_requests(&mut self) -> Vec<DeltaDiscoveryRequest> {
        DeltaState::opening_requests(self)
    }

    fn subscribe(
        &mut self,
        ty: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<DeltaDiscoveryRequest> {
        DeltaState::subscribe(self, ty, names)
    }

    fn receive(&mut self, resp: DeltaDiscoveryResponse) -> Received<DeltaDiscoveryRequest> {
        let Some(ty) = subscribed_type(&resp.type_url, |t| self.subscription(t).is_some()) else {
            return Received::Ignore;
        };
        let mut versions = Vec::with_capacity(resp.resources.len());
        let mut resources = Vec::with_capacity(resp.resources.len());
        let mut names = Vec::with_capacity(resp.resources.len());
        for r in resp.resources {
            if r.name.is_empty() {
                let e = invalid(format!(
                    "a resource in a {} response has no name",
                    ty.short_name()
                ));
                return Received::Answer(ty, self.nack(ty, &resp.nonce, e));
            }
            // A resource without a body only refreshes its version (a TTL heartbeat).
            if let Some(body) = r.resource {
                if body.type_url != resp.type_url {
                    let e = wrong_type(&body.type_url, &resp.type_url);
                    return Received::Answer(ty, self.nack(ty, &resp.nonce, e));
                }
                resources.push(body);
                names.push((r.name.clone(), r.version.clone()));
            }
            versions.push((r.name, r.version));
        }
        Received::Deliver {
            pending: Pending {
                ty,
                nonce: resp.nonce,
                version_info: resp.system_version_info,
                versions,
                removed: resp.removed_resources,
                names,
            },
            resources,
            complete: false,
        }
    }

    fn accept(&mut self, p: &Pending) -> DeltaDiscoveryRequest {
        self.ack(p.ty, &p.nonce, &p.versions, &p.removed)
    }

    fn reject(&mut self, p: &Pending, error: Status) -> DeltaDiscoveryRequest {
        self.nack(p.ty, &p.nonce, error)
    }

    fn open(
        mut client: Client,
        requests: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Opening<DeltaDiscoveryResponse> {
        Box::pin(async move {
            Ok(client
                .delta_aggregated_resources(requests)
                .await?
                .into_inner())
        })
    }
}
