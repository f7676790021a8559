//! CDS and EDS: clusters by name, endpoints by EDS service name, and the warming of
//! clusters: an EDS cluster until its endpoints arrive, then a cluster with active
//! health checks until its first round of checks (Envoy's cluster warming); the version
//! it replaces serves meanwhile.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;

use super::{decode_named, rejection, removed_names, Applier, Batch};
use crate::config::cluster::Cluster;
use crate::server::Server;
use crate::upstream::cluster::{spawn_tasks, ClusterState};
use crate::upstream::dns;
use crate::upstream::host::Assignment;
use crate::xds::convert;
use crate::xds::dump::{self, Change, Entry};

/// A cluster that CDS delivered.
#[derive(Debug)]
struct DynCluster {
    /// Hash of the latest version received (active or warming).
    hash: u64,
    /// The latest version while it warms. Boxed: most clusters are not warming, and a
    /// mesh has thousands.
    warming: Option<Box<Warming>>,
    /// The EDS service of the latest version.
    service: Option<String>,
}

/// What a warming cluster waits for (boxed as a whole in [`DynCluster`]).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Warming {
    /// Its endpoints, until its `initial_fetch_timeout` (the deadline).
    Endpoints(Cluster, Option<Instant>),
    /// Built, with its endpoints: the first round of its health checks.
    Health(Arc<ClusterState>),
}

impl Drop for DynCluster {
    /// A version superseded or removed while its health checks warmed it stops them.
    fn drop(&mut self) {
        if let Some(Warming::Health(state)) = self.warming.as_deref() {
            state.retired.start();
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Clusters {
    dynamic: HashMap<String, DynCluster>,
    /// Endpoints received, by EDS service name, with the hash of their encoding.
    endpoints: HashMap<String, (u64, Arc<Assignment>)>,
    /// EDS service name -> clusters (static or dynamic) that take their endpoints from it.
    by_service: HashMap<String, BTreeSet<String>>,
    /// The EDS names last subscribed.
    subscribed: BTreeSet<String>,
    /// Whether `by_service` gained or lost a name since the last subscription.
    names_changed: bool,
}

impl Clusters {
    /// Static EDS clusters in the bootstrap take endpoints over ADS too.
    pub(super) fn index_static(&mut self, server: &Server) {
        for c in server.clusters.snapshot().values() {
            if let Some(eds) = &c.config.eds {
                self.index(&eds.service_name, &c.name);
            }
        }
    }

    pub(super) fn warming_count(&self) -> usize {
        self.dynamic
            .values()
            .filter(|c| c.warming.is_some())
            .count()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.dynamic
            .values()
            .filter_map(|c| match c.warming.as_deref() {
                Some(Warming::Endpoints(_, deadline)) => *deadline,
                _ => None,
            })
            .min()
    }

    /// The EDS names to subscribe, if they changed since the last call.
    pub(super) fn eds_names_changed(&mut self) -> Option<BTreeSet<String>> {
        if !std::mem::take(&mut self.names_changed) {
            return None;
        }
        let names: BTreeSet<String> = self.by_service.keys().cloned().collect();
        if names == self.subscribed {
            return None;
        }
        self.subscribed = names.clone();
        Some(names)
    }

    fn index(&mut self, service: &str, cluster: &str) {
        let set = self
            .by_service
            .entry(service.to_owned())
            .or_insert_with(|| {
                self.names_changed = true;
                BTreeSet::new()
            });
        set.insert(cluster.to_owned());
    }

    fn unindex(&mut self, cluster: &str, service: Option<&String>) {
        if let Some(s) = service {
            if let Some(set) = self.by_service.get_mut(s) {
                set.remove(cluster);
                if set.is_empty() {
                    self.by_service.remove(s);
                    self.endpoints.remove(s);
                    self.names_changed = true;
                }
            }
        }
    }
}

impl Applier {
    /// Makes the run-time state of a cluster version, with its endpoints if it is EDS.
    fn activate(&self, config: Cluster) -> Arc<ClusterState> {
        let eds = config.eds.as_ref().map(|e| e.service_name.clone());
        let dns = config.discovery.is_dns();
        let state = Arc::new(ClusterState::new(config, &self.server.stats));
        if let Some(service) = eds {
            if let Some((_, a)) = self.clusters.endpoints.get(&service) {
                state.set_assignment(a.hosts.clone(), a.overprovisioning_factor);
            }
        }
        if dns {
            let c = state.clone();
            let stop = self.server.shutdown.watch();
            tokio::spawn(async move {
                dns::update(&c).await;
                dns::refresh_loop(c, stop).await;
            });
        }
        spawn_tasks(&state, &self.server.shutdown);
        state
    }

    pub(super) fn apply_cds(&mut self, b: Batch<'_>) -> Result<(), String> {
        self.stats.cds.update_attempt.inc();
        let (decoded, errors) = decode_named(b, "Cluster", &self.static_clusters, convert::cluster);
        if let Err(e) = rejection(errors) {
            self.stats.cds.update_rejected.inc();
            return Err(e);
        }
        let present: HashSet<&str> = decoded.iter().map(|(_, d)| d.name.as_str()).collect();
        let removals = removed_names(b, &self.clusters.dynamic, &present);
        let now = Instant::now();
        let mut upserts = Vec::new();
        let mut dump = Vec::new();
        for (i, d) in decoded {
            let old = self.clusters.dynamic.get(&d.name);
            match old {
                Some(c) if c.hash == d.hash => continue,
                Some(_) => self.stats.cluster_modified.inc(),
                None => self.stats.cluster_added.inc(),
            }
            let old_service = old.and_then(|c| c.service.clone());
            self.clusters.unindex(&d.name, old_service.as_ref());
            let service = d.value.eds.as_ref().map(|e| e.service_name.clone());
            if let Some(s) = &service {
                self.clusters.index(s, &d.name);
            }
            let entry = Entry::new(b.version_info, &b.resources[i].value);
            let ready = service
                .as_ref()
                .is_none_or(|s| self.clusters.endpoints.contains_key(s));
            let warming = if ready {
                let state = self.activate(d.value);
                if self.warms_on_health(&d.name, &state) {
                    dump.push((d.name.clone(), Change::Warming(entry)));
                    Some(Box::new(Warming::Health(state)))
                } else {
                    upserts.push(state);
                    dump.push((d.name.clone(), Change::Active(entry)));
                    None
                }
            } else {
                let deadline = d
                    .value
                    .eds
                    .as_ref()
                    .and_then(|e| e.initial_fetch_timeout)
                    .map(|t| now + t);
                dump.push((d.name.clone(), Change::Warming(entry)));
                Some(Box::new(Warming::Endpoints(d.value, deadline)))
            };
            self.clusters.dynamic.insert(
                d.name,
                DynCluster {
                    hash: d.hash,
                    warming,
                    service,
                },
            );
        }
        for name in &removals {
            if let Some(c) = self.clusters.dynamic.remove(name) {
                self.clusters.unindex(name, c.service.as_ref());
            }
            self.stats.cluster_removed.inc();
        }
        self.server.clusters.update(upserts, &removals);
        {
            let mut d = self.dump();
            dump::record(&mut d.clusters, dump, &removals);
            d.cds_version = b.version_info.to_owned();
        }
        self.stats.cds.accepted(b.version_info);
        Ok(())
    }

    pub(super) fn apply_eds(&mut self, b: Batch<'_>) -> Result<(), String> {
        let mut decoded = Vec::with_capacity(b.resources.len());
        let mut errors = Vec::new();
        for (i, any) in b.resources.iter().enumerate() {
            match convert::endpoints(any, i) {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    self.for_service(&e.name, |c| c.stats.update_rejected.inc());
                    errors.push(e.to_string());
                }
            }
        }
        rejection(errors)?;
        let mut activated = Vec::new();
        for d in decoded {
            if self
                .clusters
                .endpoints
                .get(&d.name)
                .is_some_and(|(h, _)| *h == d.hash)
            {
                continue;
            }
            if !self.clusters.by_service.contains_key(&d.name) {
                // Not (or no longer) asked for.
                continue;
            }
            let hosts = Arc::new(d.value);
            self.clusters
                .endpoints
                .insert(d.name.clone(), (d.hash, hosts.clone()));
            self.endpoints_arrived(&d.name, &hosts, &mut activated);
        }
        for name in b.removed {
            if self.clusters.by_service.contains_key(name) {
                let hosts = Arc::new(Assignment::default());
                self.clusters
                    .endpoints
                    .insert(name.clone(), (0, hosts.clone()));
                self.endpoints_arrived(name, &hosts, &mut activated);
            }
        }
        self.install_warmed(activated);
        Ok(())
    }

    /// Whether a cluster just built warms on its first round of health checks; if so,
    /// [`Applier::health_warmed`] hears of it when the round is over.
    fn warms_on_health(&self, name: &str, state: &Arc<ClusterState>) -> bool {
        let Some(checker) = state.health.clone() else {
            return false;
        };
        let tx = self.warmed_tx.clone();
        let (name, warmed) = (name.to_owned(), Arc::downgrade(state));
        tokio::spawn(async move {
            checker.initialized(checker.first_round_limit()).await;
            let _ = tx.send((name, warmed));
        });
        true
    }

    /// The first round of health checks of `name`'s warming version `state` is over:
    /// it replaces the active version (unless a newer one superseded it meanwhile).
    pub fn health_warmed(&mut self, name: &str, state: &std::sync::Weak<ClusterState>) {
        let Some(c) = self.clusters.dynamic.get_mut(name) else {
            return;
        };
        let this = |w: &mut Box<Warming>| matches!(&**w, Warming::Health(s) if std::ptr::eq(Arc::as_ptr(s), state.as_ptr()));
        let Some(Warming::Health(state)) = c.warming.take_if(this).map(|w| *w) else {
            return;
        };
        self.install(vec![name.to_owned()], vec![state]);
        self.server
            .listeners
            .prune_idle(self.server.clusters.snapshot());
        self.publish_gauges();
        self.check_init();
    }

    /// Runs `f` on the active state of every cluster fed by EDS service `service`.
    fn for_service(&self, service: &str, mut f: impl FnMut(&ClusterState)) {
        if let Some(names) = self.clusters.by_service.get(service) {
            for n in names {
                if let Some(c) = self.server.clusters.get(n) {
                    f(&c);
                }
            }
        }
    }

    /// New endpoints for `service`: active clusters swap their host set; warming ones
    /// become active (collected in `activated`).
    fn endpoints_arrived(
        &mut self,
        service: &str,
        hosts: &Arc<Assignment>,
        activated: &mut Vec<(String, Cluster)>,
    ) {
        let Some(names) = self.clusters.by_service.get(service).cloned() else {
            return;
        };
        for name in names {
            if let Some(c) = self.clusters.dynamic.get_mut(&name) {
                if let Some(Warming::Endpoints(config, _)) = c
                    .warming
                    .take_if(|w| matches!(**w, Warming::Endpoints(..)))
                    .map(|w| *w)
                {
                    activated.push((name, config));
                    continue;
                }
                // Warming on its health checks: it takes the endpoints, and so does
                // the version still serving.
                if let Some(Warming::Health(state)) = c.warming.as_deref() {
                    state.set_assignment(hosts.hosts.clone(), hosts.overprovisioning_factor);
                }
            }
            if let Some(c) = self.server.clusters.get(&name) {
                c.stats.update_attempt.inc();
                c.stats.update_success.inc();
                if hosts.hosts.is_empty() {
                    c.stats.update_empty.inc();
                }
                c.set_assignment(hosts.hosts.clone(), hosts.overprovisioning_factor);
            }
        }
    }

    /// Activates clusters whose endpoints came (or did not in time) in one swap and
    /// moves their dump entries to active; those with health checks warm on them first.
    fn install_warmed(&mut self, warmed: Vec<(String, Cluster)>) {
        if warmed.is_empty() {
            return;
        }
        let mut names = Vec::with_capacity(warmed.len());
        let mut states = Vec::with_capacity(warmed.len());
        for (name, config) in warmed {
            let state = self.activate(config);
            if self.warms_on_health(&name, &state) {
                if let Some(c) = self.clusters.dynamic.get_mut(&name) {
                    c.warming = Some(Box::new(Warming::Health(state)));
                }
            } else {
                names.push(name);
                states.push(state);
            }
        }
        self.install(names, states);
    }

    /// Puts warmed versions in service in one swap and moves their dump entries to
    /// active.
    fn install(&mut self, names: Vec<String>, states: Vec<Arc<ClusterState>>) {
        if states.is_empty() {
            return;
        }
        for s in &states {
            s.stats.update_attempt.inc();
            s.stats.update_success.inc();
        }
        self.server.clusters.update(states, &[]);
        let mut d = self.dump();
        for n in names {
            dump::promote(&mut d.clusters, &n);
        }
    }

    /// Warming clusters past their deadline become active without endpoints.
    pub(super) fn expire_clusters(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (name, c) in &mut self.clusters.dynamic {
            let due = |w: &mut Box<Warming>| matches!(&**w, Warming::Endpoints(_, Some(deadline)) if *deadline <= now);
            if let Some(Warming::Endpoints(config, _)) = c.warming.take_if(due).map(|w| *w) {
                tracing::warn!(cluster = %name, "no endpoints within initial_fetch_timeout; activating without");
                expired.push((name.clone(), config));
            }
        }
        self.install_warmed(expired);
    }
}
