//! Applying xDS responses to the running proxy, one response as one batch: validate every
//! resource first (any failure rejects the response and changes nothing), then swap in
//! the new immutable snapshots.
//!
//! Warming follows Envoy: a new or changed EDS cluster becomes active once its endpoints
//! arrive (or its `initial_fetch_timeout` passes); a new or changed listener once every
//! route configuration it names has arrived. Until then the previous version, if any,
//! keeps serving. Endpoints and route configurations already received are used at once,
//! so a changed cluster or listener whose dependencies are known does not warm.
//!
//! `clusters.rs` holds CDS and EDS, `listeners.rs` LDS and RDS.

mod clusters;
mod listeners;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use xds_client::ResourceType;

use super::convert::{Decoded, Invalid};
use super::dump::DynamicDump;
use super::stats::XdsStats;
use crate::server::Server;

/// Responses with at least this many resources are followed by returning freed heap to
/// the OS (a few milliseconds, paid only by mesh-sized pushes).
const BIG_BATCH: usize = 256;

/// One response (or one file's content) for one resource type.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub ty: ResourceType,
    pub version_info: &'a str,
    pub resources: &'a [Any],
    /// Delta: names of removed resources.
    pub removed: &'a [String],
    /// State of the world: `resources` is every resource of the type, so LDS and CDS
    /// resources missing from it are removed.
    pub complete: bool,
}

/// Changes subscriptions as the config's references change (the ADS client's handle).
pub trait Subscriber: Send {
    fn subscribe(&self, ty: ResourceType, names: BTreeSet<String>);
}

impl Subscriber for xds_client::Handle {
    fn subscribe(&self, ty: ResourceType, names: BTreeSet<String>) {
        xds_client::Handle::subscribe(self, ty, names)
    }
}

/// Start-up: the first CDS round (and its warming), then the first LDS round.
#[derive(Debug)]
struct Init {
    /// `Some(deadline)` while waiting for the first response of the type (`None` inside:
    /// no timeout); `None` once it came, timed out, or the type is not dynamic.
    cds: Option<Option<Instant>>,
    lds: Option<Option<Instant>>,
    done: Option<oneshot::Sender<()>>,
}

/// The dynamic config and what it waits for; owned by the task that applies updates.
pub struct Applier {
    server: Arc<Server>,
    subscriber: Option<Box<dyn Subscriber>>,
    stats: XdsStats,
    static_clusters: HashSet<String>,
    static_listeners: HashSet<String>,
    clusters: clusters::Clusters,
    listeners: listeners::Listeners,
    init: Init,
    /// Clusters whose first round of health checks is over (name, warming version);
    /// the receiver goes to the task that drives the applier.
    warmed_tx: mpsc::UnboundedSender<Warmed>,
    warmed_rx: Option<mpsc::UnboundedReceiver<Warmed>>,
}

/// A cluster version that warmed on its health checks.
pub type Warmed = (
    String,
    std::sync::Weak<crate::upstream::cluster::ClusterState>,
);

/// When the first CDS and LDS responses are due, if they come from anywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitialFetch {
    pub cds: Option<Option<std::time::Duration>>,
    pub lds: Option<Option<std::time::Duration>>,
}

impl Applier {
    /// `done` fires once the first CDS and LDS rounds have completed with their warming.
    pub fn new(
        server: Arc<Server>,
        subscriber: Option<Box<dyn Subscriber>>,
        fetch: InitialFetch,
        done: oneshot::Sender<()>,
    ) -> Self {
        let now = Instant::now();
        let deadline = |t: Option<std::time::Duration>| t.map(|t| now + t);
        let static_clusters = server
            .clusters
            .snapshot()
            .keys()
            .map(|k| k.to_string())
            .collect();
        let static_listeners = server.listeners.list().iter().map(|l| l.name()).collect();
        let (warmed_tx, warmed_rx) = mpsc::unbounded_channel();
        let mut a = Applier {
            warmed_tx,
            warmed_rx: Some(warmed_rx),
            stats: XdsStats::new(&server.stats),
            clusters: clusters::Clusters::default(),
            listeners: listeners::Listeners::default(),
            static_clusters,
            static_listeners,
            subscriber,
            init: Init {
                cds: fetch.cds.map(deadline),
                lds: fetch.lds.map(deadline),
                done: Some(done),
            },
            server,
        };
        a.clusters.index_static(&a.server);
        if let Some(s) = &a.subscriber {
            if a.init.cds.is_some() {
                s.subscribe(ResourceType::Cluster, BTreeSet::new());
            }
            if a.init.lds.is_some() {
                s.subscribe(ResourceType::Listener, BTreeSet::new());
            }
        }
        a.resubscribe();
        a.check_init();
        a
    }

    /// Where [`Applier::health_warmed`] events come from (once).
    pub fn take_warmed(&mut self) -> Option<mpsc::UnboundedReceiver<Warmed>> {
        self.warmed_rx.take()
    }

    /// Applies one response; `Err` is the NACK message (nothing was changed).
    pub fn apply(&mut self, b: Batch<'_>) -> Result<(), String> {
        let result = match b.ty {
            ResourceType::Cluster => self.apply_cds(b),
            ResourceType::ClusterLoadAssignment => self.apply_eds(b),
            ResourceType::Listener => self.apply_lds(b),
            ResourceType::RouteConfiguration => self.apply_rds(b),
            ResourceType::Secret => Err(
                "Secret: TLS secrets (SDS) are not supported yet; no listener or cluster can use them"
                    .to_owned(),
            ),
        };
        if result.is_ok() {
            match b.ty {
                ResourceType::Cluster => self.init.cds = None,
                ResourceType::Listener => self.init.lds = None,
                _ => {}
            }
            if matches!(
                b.ty,
                ResourceType::Cluster | ResourceType::ClusterLoadAssignment
            ) {
                // Pooled connections to hosts that left (or whose cluster did) close.
                self.server
                    .listeners
                    .prune_idle(self.server.clusters.snapshot());
            }
        }
        self.resubscribe();
        self.publish_gauges();
        self.check_init();
        if b.resources.len() >= BIG_BATCH {
            // Decoding a large response leaves much freed heap behind; hand it back.
            crate::server::release_config_memory();
        }
        result
    }

    /// The next time something waits for: a warming resource's or a first response's
    /// `initial_fetch_timeout`.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.clusters.next_deadline(),
            self.listeners.next_deadline(),
            self.init.cds.flatten(),
            self.init.lds.flatten(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends every wait whose deadline has passed: warming resources activate with what
    /// they have, and start-up stops waiting for a first response.
    pub fn expire(&mut self, now: Instant) {
        for (phase, stats) in [
            (&mut self.init.cds, &self.stats.cds),
            (&mut self.init.lds, &self.stats.lds),
        ] {
            if phase.flatten().is_some_and(|d| d <= now) {
                tracing::warn!("initial fetch timed out");
                stats.init_fetch_timeout.inc();
                *phase = None;
            }
        }
        self.expire_clusters(now);
        self.expire_listeners(now);
        self.resubscribe();
        self.publish_gauges();
        self.check_init();
    }

    /// The connection to the control plane opened or closed.
    pub fn connected(&self, up: bool) {
        self.stats.connected_state.set(i64::from(up));
        if !up {
            self.stats.cds.update_failure.inc();
            self.stats.lds.update_failure.inc();
        }
    }

    fn resubscribe(&mut self) {
        let Some(s) = &self.subscriber else {
            return;
        };
        if let Some(names) = self.clusters.eds_names_changed() {
            s.subscribe(ResourceType::ClusterLoadAssignment, names);
        }
        if let Some(names) = self.listeners.rds_names_changed() {
            s.subscribe(ResourceType::RouteConfiguration, names);
        }
    }

    fn publish_gauges(&self) {
        self.stats
            .warming_clusters
            .set(self.clusters.warming_count() as i64);
        self.stats
            .listeners_warming
            .set(self.listeners.warming_count() as i64);
        self.server.refresh_gauges();
    }

    fn check_init(&mut self) {
        let clusters_ready = self.init.cds.is_none() && self.clusters.warming_count() == 0;
        let listeners_ready = self.init.lds.is_none() && self.listeners.warming_count() == 0;
        if clusters_ready && listeners_ready {
            if let Some(done) = self.init.done.take() {
                tracing::info!("initial xDS configuration applied");
                let _ = done.send(());
            }
        }
    }

    fn dump(&self) -> std::sync::MutexGuard<'_, DynamicDump> {
        self.server
            .xds_dump
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Names removed by a batch: for a complete (state of the world) LDS/CDS response, every
/// known name it lacks; otherwise the delta's removals that are known.
fn removed_names<V>(
    b: Batch<'_>,
    known: &HashMap<String, V>,
    present: &HashSet<&str>,
) -> Vec<String> {
    if b.complete {
        known
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect()
    } else {
        b.removed
            .iter()
            .filter(|n| known.contains_key(n.as_str()))
            .cloned()
            .collect()
    }
}

/// Decodes every resource of an LDS or CDS response with `convert`; a resource with a
/// static resource's name, or a name already in the response, is an error too. Returns
/// the resources (with their index in the response) and the errors.
fn decode_named<T>(
    b: Batch<'_>,
    kind: &str,
    statics: &HashSet<String>,
    convert: impl Fn(&Any, usize) -> Result<Decoded<T>, Invalid>,
) -> (Vec<(usize, Decoded<T>)>, Vec<String>) {
    let mut decoded = Vec::with_capacity(b.resources.len());
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (i, any) in b.resources.iter().enumerate() {
        match convert(any, i) {
            Ok(d) if statics.contains(&d.name) => errors.push(format!(
                "{kind} '{}': name: a static {} has this name",
                d.name,
                kind.to_ascii_lowercase()
            )),
            Ok(d) if !seen.insert(d.name.clone()) => errors.push(format!(
                "{kind} '{}': name: duplicate in the response",
                d.name
            )),
            Ok(d) => decoded.push((i, d)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (decoded, errors)
}

/// Joins the errors of a rejected response into one NACK message.
fn rejection(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
