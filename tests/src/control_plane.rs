//! A fake xDS control plane (tonic + envoy-types) serving ADS, state of the world and
//! delta, on `127.0.0.1:0` or a Unix socket. Tests set the resources of each type; every
//! open stream gets what changed, for the names it subscribed (LDS and CDS: all), and
//! every ACK and NACK is recorded. Resources are written as YAML and converted with
//! Remora's own loader (protobuf JSON mapping, `@type` for `Any`).
//!
//! For bad-input tests, a raw response can be pushed to every state-of-the-world stream
//! and streams can be cut.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
pub use xds_client::ResourceType;

/// An ACK or NACK the control plane received.
#[derive(Debug, Clone)]
pub struct Answer {
    pub ty: ResourceType,
    /// The version of the response answered (`version_info`, or delta's
    /// `system_version_info`).
    pub version_info: String,
    /// SotW: the `version_info` the client sent (its last accepted one on a NACK).
    pub client_version: String,
    pub nonce: String,
    /// The NACK's `error_detail.message`.
    pub error: Option<String>,
}

/// The resources of one type: name -> (version, resource), shared by the streams (a
/// snapshot is an `Arc` clone, so a large config costs nothing per stream and push).
type Resources = BTreeMap<String, Arc<(String, Any)>>;

#[derive(Default)]
struct Store {
    /// Per type: the resources and the type's version (bumped on every change).
    types: HashMap<ResourceType, (u64, Arc<Resources>)>,
    /// Per type: the names each version touched, so a delta stream that saw version v
    /// diffs only what changed after it.
    log: HashMap<ResourceType, Vec<(u64, Vec<String>)>>,
}

struct Shared {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
    answers: Mutex<Vec<Answer>>,
    answered: watch::Sender<usize>,
    requests: Mutex<Vec<(ResourceType, Vec<String>)>>,
    cut: broadcast::Sender<()>,
    raw: broadcast::Sender<DiscoveryResponse>,
    streams: watch::Sender<usize>,
}

impl Shared {
    fn record(&self, a: Answer) {
        let n = {
            let mut v = self.answers.lock().expect("answers");
            v.push(a);
            v.len()
        };
        self.answered.send_replace(n);
    }

    /// The names of `ty` touched after version `since` (`None`: since the beginning).
    fn touched_since(&self, ty: ResourceType, since: u64) -> Option<BTreeSet<String>> {
        if since == 0 {
            return None;
        }
        let store = self.store.lock().expect("store");
        let log = store.log.get(&ty)?;
        Some(
            log.iter()
                .filter(|(v, _)| *v > since)
                .flat_map(|(_, names)| names.iter().cloned())
                .collect(),
        )
    }

    fn snapshot(&self, ty: ResourceType) -> (u64, Arc<Resources>) {
        self.store
            .lock()
            .expect("store")
            .types
            .get(&ty)
            .cloned()
            .unwrap_or_default()
    }
}

/// A running fake control plane.
pub struct ControlPlane {
    shared: Arc<Shared>,
    /// Where it listens: a TCP address or a Unix socket path.
    pub addr: Option<SocketAddr>,
    pub path: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(sotw_stream(self.0.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(delta_stream(self.0.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn type_of(url: &str) -> Option<ResourceType> {
    ResourceType::from_type_url(url)
}

fn resource_version(any: &Any) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether a stream with `names` subscribed to `ty` gets resource `name` (wildcard: all).
fn visible(ty: ResourceType, names: &BTreeSet<String>) -> impl Fn(&str) -> bool + '_ {
    let wildcard = ty.is_wildcard() && (names.is_empty() || names.contains("*"));
    move |n| wildcard || names.contains(n)
}

async fn sotw_stream(
    shared: Arc<Shared>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    shared.streams.send_modify(|n| *n += 1);
    let mut changed = shared.changed.subscribe();
    let mut cut = shared.cut.subscribe();
    let mut raw = shared.raw.subscribe();
    // Per type: subscribed names and the type version last sent.
    let mut subs: HashMap<ResourceType, BTreeSet<String>> = HashMap::new();
    let mut sent: HashMap<ResourceType, (u64, BTreeSet<String>)> = HashMap::new();
    let mut versions: HashMap<String, String> = HashMap::new();
    let mut nonce = 0u64;
    loop {
        let mut dirty = false;
        tokio::select! {
            req = inbound.next() => {
                let Some(Ok(req)) = req else { return };
                let Some(ty) = type_of(&req.type_url) else { continue };
                if !req.response_nonce.is_empty() {
                    shared.record(Answer {
                        ty,
                        version_info: versions.get(&req.response_nonce).cloned().unwrap_or_default(),
                        client_version: req.version_info.clone(),
                        nonce: req.response_nonce.clone(),
                        error: req.error_detail.as_ref().map(|e| e.message.clone()),
                    });
                }
                shared.requests.lock().expect("requests").push((ty, req.resource_names.clone()));
                subs.insert(ty, req.resource_names.into_iter().collect());
                dirty = true;
            }
            _ = changed.changed() => dirty = true,
            _ = cut.recv() => {
                let _ = tx.send(Err(Status::unavailable("control plane restarting"))).await;
                return;
            }
            r = raw.recv() => {
                if let Ok(r) = r {
                    versions.insert(r.nonce.clone(), r.version_info.clone());
                    if tx.send(Ok(r)).await.is_err() { return; }
                }
            }
        }
        if !dirty {
            continue;
        }
        for (ty, names) in &subs {
            let (version, all) = shared.snapshot(*ty);
            if sent
                .get(ty)
                .is_some_and(|(v, n)| *v == version && n == names)
            {
                continue;
            }
            // Nothing to say about a type the control plane has never had.
            if version == 0 {
                continue;
            }
            sent.insert(*ty, (version, names.clone()));
            nonce += 1;
            versions.insert(nonce.to_string(), version.to_string());
            let shown = visible(*ty, names);
            let resources = all
                .iter()
                .filter(|(n, _)| shown(n))
                .map(|(_, r)| r.1.clone())
                .collect();
            let resp = DiscoveryResponse {
                version_info: version.to_string(),
                resources,
                type_url: ty.type_url().into(),
                nonce: nonce.to_string(),
                ..Default::default()
            };
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
}

async fn delta_stream(
    shared: Arc<Shared>,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    shared.streams.send_modify(|n| *n += 1);
    let mut changed = shared.changed.subscribe();
    let mut cut = shared.cut.subscribe();
    // Per type: subscribed names, and name -> version the client has.
    let mut subs: HashMap<ResourceType, BTreeSet<String>> = HashMap::new();
    let mut has: HashMap<ResourceType, BTreeMap<String, String>> = HashMap::new();
    // The system version of each response, by nonce.
    let mut versions: HashMap<String, String> = HashMap::new();
    // Per type: the store version last diffed.
    let mut seen: HashMap<ResourceType, u64> = HashMap::new();
    let mut nonce = 0u64;
    loop {
        let mut resubscribed = BTreeSet::new();
        tokio::select! {
            req = inbound.next() => {
                let Some(Ok(req)) = req else { return };
                let Some(ty) = type_of(&req.type_url) else { continue };
                if !req.response_nonce.is_empty() {
                    shared.record(Answer {
                        ty,
                        version_info: versions.get(&req.response_nonce).cloned().unwrap_or_default(),
                        client_version: String::new(),
                        nonce: req.response_nonce.clone(),
                        error: req.error_detail.as_ref().map(|e| e.message.clone()),
                    });
                }
                let s = subs.entry(ty).or_default();
                s.extend(req.resource_names_subscribe.iter().cloned());
                for n in &req.resource_names_unsubscribe {
                    s.remove(n);
                    has.entry(ty).or_default().remove(n);
                }
                if !req.initial_resource_versions.is_empty() {
                    has.insert(ty, req.initial_resource_versions.clone().into_iter().collect());
                }
                // A bare ACK or NACK changes no subscription.
                if !req.resource_names_subscribe.is_empty()
                    || !req.resource_names_unsubscribe.is_empty()
                    || req.response_nonce.is_empty()
                {
                    resubscribed.insert(ty);
                }
                let mut names = req.resource_names_subscribe.clone();
                names.extend(req.resource_names_unsubscribe.iter().map(|n| format!("-{n}")));
                shared.requests.lock().expect("requests").push((ty, names));
            }
            _ = changed.changed() => {}
            _ = cut.recv() => {
                let _ = tx.send(Err(Status::unavailable("control plane restarting"))).await;
                return;
            }
        }
        for (ty, names) in &subs {
            let (version, all) = shared.snapshot(*ty);
            let resubscribed = resubscribed.contains(ty);
            let last = seen.get(ty).copied();
            // Nothing changed for this type since it was last looked at.
            if last == Some(version) && !resubscribed {
                continue;
            }
            seen.insert(*ty, version);
            let shown = visible(*ty, names);
            let have = has.entry(*ty).or_default();
            // Only the names touched since the last look, unless the subscription moved.
            let touched = match (resubscribed, last) {
                (false, Some(v)) => shared.touched_since(*ty, v),
                _ => None,
            };
            let candidates: BTreeSet<&String> = match &touched {
                Some(t) => t.iter().collect(),
                None => all.keys().chain(have.keys()).collect(),
            };
            let mut added = Vec::new();
            let mut removed = Vec::new();
            for n in candidates {
                match all.get(n) {
                    Some(r) if shown(n) => {
                        if have.get(n) != Some(&r.0) {
                            added.push(Resource {
                                name: n.clone(),
                                version: r.0.clone(),
                                resource: Some(r.1.clone()),
                                ..Default::default()
                            });
                        }
                    }
                    _ => {
                        if have.contains_key(n) {
                            removed.push(n.clone());
                        }
                    }
                }
            }
            if added.is_empty() && removed.is_empty() {
                continue;
            }
            for r in &added {
                have.insert(r.name.clone(), r.version.clone());
            }
            for n in &removed {
                have.remove(n);
            }
            nonce += 1;
            versions.insert(nonce.to_string(), version.to_string());
            let resp = DeltaDiscoveryResponse {
                system_version_info: version.to_string(),
                resources: added,
                removed_resources: removed,
                type_url: ty.type_url().into(),
                nonce: nonce.to_string(),
                ..Default::default()
            };
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
}

impl ControlPlane {
    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            store: Mutex::default(),
            changed: watch::channel(0).0,
            answers: Mutex::default(),
            answered: watch::channel(0).0,
            requests: Mutex::default(),
            cut: broadcast::channel(4).0,
            raw: broadcast::channel(16).0,
            streams: watch::channel(0).0,
        })
    }

    /// The ADS service (mesh-sized responses allowed) over `shared`.
    fn router(shared: &Arc<Shared>) -> tonic::transport::server::Router {
        let svc = AggregatedDiscoveryServiceServer::new(Service(shared.clone()))
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        tonic::transport::Server::builder().add_service(svc)
    }

    /// Starts on `127.0.0.1:0`.
    pub async fn start_tcp() -> ControlPlane {
        let shared = Self::shared();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind control plane");
        let addr = l.local_addr().expect("addr");
        let router = Self::router(&shared);
        let task = tokio::spawn(async move {
            let _ = router.serve_with_incoming(TcpListenerStream::new(l)).await;
        });
        ControlPlane {
            shared,
            addr: Some(addr),
            path: None,
            task,
            _dir: None,
        }
    }

    /// Starts on a Unix socket in a fresh temporary directory.
    pub async fn start_unix() -> ControlPlane {
        let shared = Self::shared();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("XDS");
        let l = tokio::net::UnixListener::bind(&path).expect("bind control plane socket");
        let router = Self::router(&shared);
        let task = tokio::spawn(async move {
            let _ = router.serve_with_incoming(UnixListenerStream::new(l)).await;
        });
        ControlPlane {
            shared,
            addr: None,
            path: Some(path),
            task,
            _dir: Some(dir),
        }
    }

    /// The bootstrap's `xds-grpc` cluster address, as YAML (`socket_address` or `pipe`).
    pub fn address_yaml(&self) -> String {
        match (&self.addr, &self.path) {
            (Some(a), _) => format!(
                "{{socket_address: {{address: {}, port_value: {}}}}}",
                a.ip(),
                a.port()
            ),
            (None, Some(p)) => format!("{{pipe: {{path: {}}}}}", p.display()),
            (None, None) => unreachable!("a control plane listens somewhere"),
        }
    }

    /// Replaces every resource of `ty`; streams get the change. Returns the type's new
    /// version (state of the world `version_info`).
    pub fn set(&self, ty: ResourceType, resources: Vec<Any>) -> String {
        self.change(ty, |all| {
            let mut touched: Vec<String> = std::mem::take(all).into_keys().collect();
            touched.extend(insert(all, resources));
            touched
        })
    }

    /// Adds or replaces some resources of `ty`, keeping the others.
    pub fn upsert(&self, ty: ResourceType, resources: Vec<Any>) -> String {
        self.change(ty, |all| insert(all, resources))
    }

    /// Removes resources of `ty` by name.
    pub fn remove(&self, ty: ResourceType, names: &[&str]) -> String {
        self.change(ty, |all| {
            for n in names {
                all.remove(*n);
            }
            names.iter().map(|n| n.to_string()).collect()
        })
    }

    fn change(&self, ty: ResourceType, f: impl FnOnce(&mut Resources) -> Vec<String>) -> String {
        let version = {
            let mut store = self.shared.store.lock().expect("store");
            let entry = store.types.entry(ty).or_default();
            entry.0 += 1;
            // Copies the map only while a stream still holds the previous snapshot.
            let touched = f(Arc::make_mut(&mut entry.1));
            let version = entry.0;
            store.log.entry(ty).or_default().push((version, touched));
            version
        };
        self.shared.changed.send_modify(|n| *n += 1);
        version.to_string()
    }

    /// Every ACK and NACK so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.shared.answers.lock().expect("answers").clone()
    }

    /// Every request: its type and names (delta: subscribed, and `-name` unsubscribed).
    pub fn requests(&self) -> Vec<(ResourceType, Vec<String>)> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// Waits (up to 10 s) for an answer satisfying `pred` among those after the first
    /// `skip` answers; returns it.
    pub async fn wait_answer(&self, skip: usize, pred: impl Fn(&Answer) -> bool) -> Answer {
        let mut rx = self.shared.answered.subscribe();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(a) = self.answers().into_iter().skip(skip).find(|a| pred(a)) {
                    return a;
                }
                let _ = rx.changed().await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no matching answer; got {:#?}", self.answers()))
    }

    /// Waits for the ACK of version `version` of `ty` (as [`ControlPlane::set`] returned
    /// it): the client applied that version. Panics on a NACK of it.
    pub async fn wait_ack(&self, version: &str, ty: ResourceType) -> Answer {
        let a = self
            .wait_answer(0, |a| a.ty == ty && a.version_info == version)
            .await;
        assert!(
            a.error.is_none(),
            "expected an ACK of {ty:?} {version}, got a NACK: {a:?}"
        );
        a
    }

    /// Waits for a NACK of `ty` after the first `skip` answers.
    pub async fn wait_nack(&self, skip: usize, ty: ResourceType) -> Answer {
        self.wait_answer(skip, |a| a.ty == ty && a.error.is_some())
            .await
    }

    /// Ends every open stream with UNAVAILABLE (as a restarting control plane would).
    pub fn cut_streams(&self) {
        let _ = self.shared.cut.send(());
    }

    /// How many streams clients have opened so far.
    pub fn streams_opened(&self) -> usize {
        *self.shared.streams.borrow()
    }

    /// Waits until at least `n` streams have been opened.
    pub async fn wait_streams(&self, n: usize) {
        let mut rx = self.shared.streams.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| *s >= n))
            .await
            .expect("stream opened in time")
            .expect("control plane alive");
    }

    /// Sends `resp` as is on every open state-of-the-world stream.
    pub fn push_raw(&self, resp: DiscoveryResponse) {
        let _ = self.shared.raw.send(resp);
    }
}

/// Inserts `resources`; returns their names.
fn insert(all: &mut Resources, resources: Vec<Any>) -> Vec<String> {
    resources
        .into_iter()
        .map(|a| {
            let name = name_of(&a);
            all.insert(name.clone(), Arc::new((resource_version(&a), a)));
            name
        })
        .collect()
}

/// The name of a resource (field 1 of every xDS resource type, `cluster_name` of a
/// `ClusterLoadAssignment`).
pub fn name_of(a: &Any) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(string, tag = "1")]
        name: String,
    }
    Named::decode(a.value.as_slice())
        .map(|n| n.name)
        .unwrap_or_default()
}

/// A resource of proto type `M` from YAML (protobuf JSON mapping, `@type` for `Any`),
/// e.g. `resource::<Cluster>("name: web ...")`.
pub fn resource<M: Message + Name + Default>(yaml: &str) -> Any {
    use remora::config::load::{decode, parse_text, UnknownFields};
    let v = parse_text(yaml, "test resource").expect("yaml");
    let (msg, _): (M, _) = decode(v, &M::full_name(), UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("test resource does not decode: {e}\n{yaml}"));
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// A `Cluster` from YAML.
pub fn cluster(yaml: &str) -> Any {
    resource::<envoy_types::pb::envoy::config::cluster::v3::Cluster>(yaml)
}

/// A `Listener` from YAML.
pub fn listener(yaml: &str) -> Any {
    resource::<envoy_types::pb::envoy::config::listener::v3::Listener>(yaml)
}

/// A `RouteConfiguration` from YAML.
pub fn route(yaml: &str) -> Any {
    resource::<envoy_types::pb::envoy::config::route::v3::RouteConfiguration>(yaml)
}

/// A `ClusterLoadAssignment` from YAML.
pub fn endpoints(yaml: &str) -> Any {
    resource::<envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>(yaml)
}

/// An EDS cluster over ADS named `name`.
pub fn eds_cluster(name: &str) -> Any {
    cluster(&format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}"
    ))
}

/// The endpoints of cluster `name`: these addresses, weight 1.
pub fn endpoints_of(name: &str, addrs: &[SocketAddr]) -> Any {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    endpoints(&format!(
        "cluster_name: {name}\nendpoints: [{{lb_endpoints: [{}]}}]",
        eps.join(", ")
    ))
}

/// An HTTP listener on `addr` (port 0: any) whose routes come from RDS `route`; its
/// stat prefix is its name.
pub fn http_listener(name: &str, addr: SocketAddr, route: &str) -> Any {
    http_listener_with(name, addr, route, "")
}

/// [`http_listener`] with more connection manager fields (YAML, e.g. `server_name: x`).
pub fn http_listener_with(name: &str, addr: SocketAddr, route: &str, hcm: &str) -> Any {
    let (ip, port) = (addr.ip(), addr.port());
    listener(&format!(
        r#"
name: {name}
address: {{socket_address: {{address: {ip}, port_value: {port}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      rds: {{route_config_name: {route}, config_source: {{ads: {{}}, resource_api_version: V3}}}}
      {hcm}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    ))
}

/// A route configuration sending everything to `cluster`, adding response header
/// `x-route: <tag>` so a test can see which version answered.
pub fn route_to(name: &str, cluster: &str, tag: &str) -> Any {
    route(&format!(
        "name: {name}\nvirtual_hosts: [{{name: all, domains: ['*'], routes: [{{match: {{prefix: /}}, route: {{cluster: {cluster}}}, response_headers_to_add: [{{header: {{key: x-route, value: {tag}}}}}]}}]}}]"
    ))
}

/// A bootstrap for Remora or Envoy: admin on port 0, ADS (`api_type` GRPC or DELTA_GRPC)
/// to this control plane, LDS and CDS over it.
pub fn ads_bootstrap(cp: &ControlPlane, api_type: &str) -> String {
    format!(
        r#"
node: {{id: test-node, cluster: test}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {}}}}}]}}]
"#,
        cp.address_yaml()
    )
}
