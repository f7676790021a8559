//! The ADS stream loop (state of the world): connect, (re)subscribe, hand each response
//! to the consumer as one [`Update`], send its verdict as the ACK or NACK, and reconnect
//! with backoff when the stream ends. The consumer keeps serving its last good config
//! while the control plane is away; this loop never gives up on reconnecting.

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::resource::ResourceType;
use crate::sotw::SotwState;
use crate::transport::{self, ChannelOptions, Target};

/// gRPC status code INVALID_ARGUMENT, which Envoy puts in a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub node: Node,
    pub set_node_on_first_message_only: bool,
    pub channel: ChannelOptions,
    pub backoff: Backoff,
}

/// What the client tells its consumer.
#[derive(Debug)]
pub enum Event {
    /// A stream to the control plane is open (and every subscription re-sent).
    Connected,
    /// The stream ended or could not be opened; the client retries after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// A response to apply.
    Update(Update),
}

/// One discovery response: every resource of `ty` (state of the world) at `version_info`.
/// Answer with [`Update::accept`] once applied or [`Update::reject`] to keep the last good
/// config; dropping it unanswered rejects it.
#[derive(Debug)]
pub struct Update {
    pub ty: ResourceType,
    pub version_info: String,
    pub resources: Vec<Any>,
    verdict: oneshot::Sender<Result<(), Rejection>>,
}

impl Update {
    pub fn accept(self) {
        let _ = self.verdict.send(Ok(()));
    }

    pub fn reject(self, rejection: Rejection) {
        let _ = self.verdict.send(Err(rejection));
    }
}

/// Why a response was not applied: becomes the NACK's `error_detail` message, which
/// should name the resource and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
}

enum Command {
    Subscribe(ResourceType, BTreeSet<String>),
}

/// Changes subscriptions of a running client.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Subscribes `ty` to `names` (replacing its previous names). For LDS and CDS, no
    /// names is the wildcard subscription.
    pub fn subscribe(&self, ty: ResourceType, names: BTreeSet<String>) {
        let _ = self.commands.send(Command::Subscribe(ty, names));
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe(t, n) => write!(f, "Subscribe({t:?}, {} names)", n.len()),
        }
    }
}

/// Starts the client on the current tokio runtime. It runs until the event receiver is
/// dropped.
pub fn spawn(config: Config) -> (Handle, mpsc::Receiver<Event>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(16);
    tokio::spawn(run(config, cmd_rx, ev_tx));
    (Handle { commands: cmd_tx }, ev_rx)
}

/// Why a stream ended.
enum Ended {
    /// The consumer is gone: stop.
    ConsumerGone,
    /// The stream failed or closed: reconnect.
    Stream(String),
}

async fn run(
    mut config: Config,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut state = SotwState::new(config.node.clone(), config.set_node_on_first_message_only);
    loop {
        let (ended, answered) = stream(&config, &mut state, &mut commands, &events).await;
        let reason = match ended {
            Ended::ConsumerGone => return,
            Ended::Stream(reason) => reason,
        };
        if answered {
            // The stream worked: the next failure starts a fresh backoff.
            config.backoff.reset();
        }
        let retry_in = config.backoff.next_delay();
        tracing::debug!(%reason, ?retry_in, "xDS stream ended");
        if events
            .send(Event::Disconnected { reason, retry_in })
            .await
            .is_err()
        {
            return;
        }
        // Subscription changes made while disconnected are kept for the next stream.
        let sleep = tokio::time::sleep(retry_in);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Subscribe(ty, names)) => { state.subscribe(ty, names); }
                    None => return,
                },
            }
        }
    }
}

/// One stream, from connect to its end; also says whether the control plane answered.
async fn stream(
    config: &Config,
    state: &mut SotwState,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::Sender<Event>,
) -> (Ended, bool) {
    let mut answered = false;
    let ended = stream_inner(config, state, commands, events, &mut answered).await;
    (ended, answered)
}

async fn stream_inner(
    config: &Config,
    state: &mut SotwState,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::Sender<Event>,
    answered: &mut bool,
) -> Ended {
    let channel = match transport::connect(&config.target, &config.channel).await {
        Ok(c) => c,
        Err(e) => return Ended::Stream(e.to_string()),
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (out_tx, out_rx) = mpsc::channel::<DiscoveryRequest>(64);
    for req in state.opening_requests() {
        if out_tx.send(req).await.is_err() {
            return Ended::Stream("request channel closed".into());
        }
    }
    let mut inbound = match client
        .stream_aggregated_resources(ReceiverStream::new(out_rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return Ended::Stream(format!("opening the stream: {status}")),
    };
    if events.send(Event::Connected).await.is_err() {
        return Ended::ConsumerGone;
    }
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return Ended::Stream("the control plane closed the stream".into()),
                    Err(status) => return Ended::Stream(format!("stream error: {status}")),
                };
                *answered = true;
                match answer(state, resp, events).await {
                    Answer::Send(req) => {
                        if out_tx.send(*req).await.is_err() {
                            return Ended::Stream("request channel closed".into());
                        }
                    }
                    Answer::Nothing => {}
                    Answer::ConsumerGone => return Ended::ConsumerGone,
                }
            }
            cmd = commands.recv() => match cmd {
                Some(Command::Subscribe(ty, names)) => {
                    if let Some(req) = state.subscribe(ty, names) {
                        if out_tx.send(req).await.is_err() {
                            return Ended::Stream("request channel closed".into());
                        }
                    }
                }
                None => return Ended::ConsumerGone,
            },
        }
    }
}

enum Answer {
    Send(Box<DiscoveryRequest>),
    Nothing,
    ConsumerGone,
}

/// Hands a response to the consumer and turns its verdict into an ACK or a NACK.
async fn answer(
    state: &mut SotwState,
    resp: DiscoveryResponse,
    events: &mpsc::Sender<Event>,
) -> Answer {
    let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
        // As Envoy does: a type nobody subscribed to is ignored (no ACK, no NACK).
        tracing::warn!(type_url = %resp.type_url, "ignoring an xDS response of a type with no subscription");
        return Answer::Nothing;
    };
    if state.subscription(ty).is_none() {
        tracing::warn!(type_url = %resp.type_url, "ignoring an xDS response of a type with no subscription");
        return Answer::Nothing;
    }
    // Resources must all be of the response's type.
    if let Some(bad) = resp.resources.iter().find(|r| r.type_url != resp.type_url) {
        let message = format!(
            "resource of type {} in a response of type {}",
            bad.type_url, resp.type_url
        );
        return Answer::Send(Box::new(state.nack(ty, &resp.nonce, invalid(message))));
    }
    let (verdict_tx, verdict_rx) = oneshot::channel();
    let update = Update {
        ty,
        version_info: resp.version_info.clone(),
        resources: resp.resources,
        verdict: verdict_tx,
    };
    if events.send(Event::Update(update)).await.is_err() {
        return Answer::ConsumerGone;
    }
    match verdict_rx.await {
        Ok(Ok(())) => Answer::Send(Box::new(state.ack(ty, &resp.version_info, &resp.nonce))),
        Ok(Err(rejection)) => Answer::Send(Box::new(state.nack(
            ty,
            &resp.nonce,
            invalid(rejection.message),
        ))),
        Err(_) => Answer::Send(Box::new(state.nack(
            ty,
            &resp.nonce,
            invalid("the update was dropped without being applied".into()),
        ))),
    }
}

fn invalid(message: String) -> Status {
    Status {
        code: INVALID_ARGUMENT,
        message,
        details: Vec::new(),
    }
}
