//! The ADS stream loop: connect, (re)subscribe, hand each response to the consumer as
//! one [`Update`], send its verdict as the ACK or NACK, and reconnect with backoff when
//! the stream ends. The consumer keeps serving its last good config while the control
//! plane is away; this loop never gives up on reconnecting. State of the world or delta
//! is chosen by [`Config::api`] (the bootstrap's `api_type`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::cache::{Cache, Snapshot};
use crate::delta::DeltaState;
use crate::protocol::{invalid, Pending, Protocol, Received};
use crate::resource::ResourceType;
use crate::sotw::SotwState;
use crate::transport::{self, ChannelOptions, Target};

/// The largest discovery response accepted.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// `api_type` of the bootstrap's `ads_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GRPC`: `StreamAggregatedResources`, state of the world.
    StateOfTheWorld,
    /// `DELTA_GRPC`: `DeltaAggregatedResources`, incremental.
    Delta,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub api: Api,
    pub node: Node,
    pub set_node_on_first_message_only: bool,
    pub channel: ChannelOptions,
    pub backoff: Backoff,
    /// `initial_fetch_timeout`: how long a newly subscribed type waits for its first
    /// response before [`Event::InitialFetchTimeout`] (none: wait forever).
    pub initial_fetch_timeout: Option<Duration>,
    /// Keep every accepted resource for [`Handle::watch`]. A consumer that keeps what it
    /// needs itself turns this off and saves a copy of every resource (with a mesh-sized
    /// config, megabytes); [`Handle::watch`] then never sees a resource.
    pub keep_resources: bool,
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
    /// A subscribed type got no response within `initial_fetch_timeout`: the consumer
    /// stops waiting for it (Envoy ends warming); later responses still come.
    InitialFetchTimeout(ResourceType),
}

/// One discovery response for `ty`. Answer with [`Update::accept`] once applied or
/// [`Update::reject`] to keep the last good config; dropping it unanswered rejects it.
#[derive(Debug)]
pub struct Update {
    pub ty: ResourceType,
    /// `version_info` (state of the world) or `system_version_info` (delta).
    pub version_info: String,
    /// State of the world: every resource of the type. Delta: the added or changed ones.
    pub resources: Vec<Any>,
    /// Delta: names of removed resources.
    pub removed: Vec<String>,
    /// Whether `resources` is the complete set (state of the world).
    pub complete: bool,
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

/// Changes subscriptions of a running client and reads its cache.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    cache: Arc<Cache>,
}

impl Handle {
    /// The accepted resources of `ty`, updated after every accepted update (with
    /// [`Config::keep_resources`]).
    pub fn watch(&self, ty: ResourceType) -> watch::Receiver<Arc<Snapshot>> {
        self.cache.watch(ty)
    }

    /// Subscribes `ty` to `names` (replacing its previous names). For LDS and CDS, no
    /// names is the wildcard subscription.
    pub fn subscribe(&self, ty: ResourceType, names: BTreeSet<String>) {
        let _ = self.commands.send(Command::Subscribe(ty, names));
    }
}

/// Starts the client on the current tokio runtime. It runs until the event receiver is
/// dropped.
pub fn spawn(config: Config) -> (Handle, mpsc::Receiver<Event>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(16);
    let cache = Arc::new(Cache::default());
    let (node, once) = (config.node.clone(), config.set_node_on_first_message_only);
    let io = Io {
        commands: cmd_rx,
        events: ev_tx,
        cache: config.keep_resources.then(|| cache.clone()),
        timers: FetchTimers {
            timeout: config.initial_fetch_timeout,
            ..FetchTimers::default()
        },
    };
    match config.api {
        Api::StateOfTheWorld => {
            tokio::spawn(run(SotwState::new(node, once), config, io));
        }
        Api::Delta => {
            tokio::spawn(run(DeltaState::new(node, once), config, io));
        }
    }
    let handle = Handle {
        commands: cmd_tx,
        cache,
    };
    (handle, ev_rx)
}

/// Why a stream ended.
enum Ended {
    /// The consumer is gone: stop.
    ConsumerGone,
    /// The stream failed or closed: reconnect.
    Stream(String),
}

/// The loop's channels to the outside, its cache and its fetch timers.
struct Io {
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    /// Where accepted resources go (none without [`Config::keep_resources`]).
    cache: Option<Arc<Cache>>,
    timers: FetchTimers,
}

/// `initial_fetch_timeout` per type: armed on a type's first subscription, disarmed by
/// its first response or its expiry, across reconnects.
#[derive(Debug, Default)]
struct FetchTimers {
    timeout: Option<Duration>,
    due: BTreeMap<ResourceType, Instant>,
    settled: BTreeSet<ResourceType>,
}

impl FetchTimers {
    fn subscribed(&mut self, ty: ResourceType) {
        if let Some(t) = self.timeout {
            if !self.settled.contains(&ty) {
                self.due.entry(ty).or_insert_with(|| Instant::now() + t);
            }
        }
    }

    fn settled(&mut self, ty: ResourceType) {
        self.due.remove(&ty);
        self.settled.insert(ty);
    }

    /// Resolves with the first type whose timer expires (never, with none armed).
    async fn expired(&self) -> ResourceType {
        match self.due.iter().min_by_key(|(_, at)| **at) {
            Some((ty, at)) => {
                tokio::time::sleep_until(*at).await;
                *ty
            }
            None => std::future::pending().await,
        }
    }
}

impl Io {
    /// Applies a subscription command to the protocol state and the timers.
    fn subscribe<P: Protocol>(
        &mut self,
        state: &mut P,
        ty: ResourceType,
        names: BTreeSet<String>,
    ) -> Option<P::Request> {
        self.timers.subscribed(ty);
        state.subscribe(ty, names)
    }

    /// Reports an expired fetch timer; false if the consumer is gone.
    async fn fetch_timed_out(&mut self, ty: ResourceType) -> bool {
        self.timers.settled(ty);
        self.events
            .send(Event::InitialFetchTimeout(ty))
            .await
            .is_ok()
    }
}

async fn run<P: Protocol>(mut state: P, mut config: Config, mut io: Io) {
    loop {
        let mut answered = false;
        let ended = stream(&config, &mut state, &mut io, &mut answered).await;
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
        if io
            .events
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
                cmd = io.commands.recv() => match cmd {
                    Some(Command::Subscribe(ty, names)) => { io.subscribe(&mut state, ty, names); }
                    None => return,
                },
                ty = io.timers.expired() => {
                    if !io.fetch_timed_out(ty).await {
                        return;
                    }
                }
            }
        }
    }
}

/// One stream, from connect to its end; `answered` says whether the control plane sent
/// anything.
async fn stream<P: Protocol>(
    config: &Config,
    state: &mut P,
    io: &mut Io,
    answered: &mut bool,
) -> Ended {
    let channel = match transport::connect(&config.target, &config.channel).await {
        Ok(c) => c,
        Err(e) => return Ended::Stream(e.to_string()),
    };
    let (out_tx, out_rx) = mpsc::channel::<P::Request>(64);
    for req in state.opening_requests() {
        if out_tx.send(req).await.is_err() {
            return Ended::Stream("request channel closed".into());
        }
    }
    // A mesh-sized response (every cluster of a large mesh in one message) exceeds
    // tonic's 4 MiB default by far.
    let client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut inbound = match P::open(client, ReceiverStream::new(out_rx)).await {
        Ok(s) => s,
        Err(status) => return Ended::Stream(format!("opening the stream: {status}")),
    };
    if io.events.send(Event::Connected).await.is_err() {
        return Ended::ConsumerGone;
    }
    loop {
        let req = tokio::select! {
            msg = inbound.message() => {
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return Ended::Stream("the control plane closed the stream".into()),
                    Err(status) => return Ended::Stream(format!("stream error: {status}")),
                };
                *answered = true;
                match answer(state, resp, io).await {
                    Ok(Some(req)) => req,
                    Ok(None) => continue,
                    Err(ended) => return ended,
                }
            }
            cmd = io.commands.recv() => match cmd {
                Some(Command::Subscribe(ty, names)) => match io.subscribe(state, ty, names) {
                    Some(req) => req,
                    None => continue,
                },
                None => return Ended::ConsumerGone,
            },
            ty = io.timers.expired() => {
                if !io.fetch_timed_out(ty).await {
                    return Ended::ConsumerGone;
                }
                continue;
            }
        };
        if out_tx.send(req).await.is_err() {
            return Ended::Stream("request channel closed".into());
        }
    }
}

/// Hands a response to the consumer and turns its verdict into the request to send (an
/// ACK or NACK), or none for an ignored response.
async fn answer<P: Protocol>(
    state: &mut P,
    resp: P::Response,
    io: &mut Io,
) -> Result<Option<P::Request>, Ended> {
    let (pending, resources, complete): (Pending, Vec<Any>, bool) = match state.receive(resp) {
        Received::Ignore => return Ok(None),
        Received::Answer(ty, req) => {
            io.timers.settled(ty);
            return Ok(Some(req));
        }
        Received::Deliver {
            pending,
            resources,
            complete,
        } => (pending, resources, complete),
    };
    io.timers.settled(pending.ty);
    let (verdict_tx, verdict_rx) = oneshot::channel();
    let kept = io.cache.is_some().then(|| resources.clone());
    let update = Update {
        ty: pending.ty,
        version_info: pending.version_info.clone(),
        resources,
        removed: pending.removed.clone(),
        complete,
        verdict: verdict_tx,
    };
    if io.events.send(Event::Update(update)).await.is_err() {
        return Err(Ended::ConsumerGone);
    }
    Ok(Some(match verdict_rx.await {
        Ok(Ok(())) => {
            if let (Some(cache), Some(kept)) = (&io.cache, kept) {
                remember(cache, &pending, kept, complete);
            }
            state.accept(&pending)
        }
        Ok(Err(rejection)) => state.reject(&pending, invalid(rejection.message)),
        Err(_) => state.reject(
            &pending,
            invalid("the update was dropped without being applied".into()),
        ),
    }))
}

/// Puts an accepted update into the cache.
fn remember(cache: &Cache, p: &Pending, resources: Vec<Any>, complete: bool) {
    if complete {
        cache.replace(p.ty, &p.version_info, &resources);
        return;
    }
    let updated = p
        .names
        .iter()
        .zip(resources)
        .map(|((name, version), body)| (name.clone(), version.clone(), body));
    cache.apply_delta(p.ty, &p.version_info, updated, &p.removed);
}
