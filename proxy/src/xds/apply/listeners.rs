//! LDS and RDS: listeners by name, route configurations by name (each behind the slot its
//! connection managers read), and the warming of listeners until their routes arrive.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::{decode_named, rejection, removed_names, Applier, Batch};
use crate::config::hcm::RouteSpec;
use crate::config::listener::{Listener, NetworkFilter};
use crate::config::route::RouteTable;
use crate::listener::{BoundSocket, ListenerRuntime};
use crate::routing::RouteSlot;
use crate::xds::convert;
use crate::xds::dump::{self, Change, Entry};
use crate::xds::stats::SubscriptionStats;

#[derive(Debug)]
struct DynListener {
    hash: u64,
    /// The latest version while it waits for its routes, with its deadline.
    warming: Option<(Listener, Option<Instant>)>,
    /// Route configurations the latest version names.
    rds: Vec<String>,
    /// Route configurations the active version names (kept subscribed while a newer
    /// version warms).
    active_rds: Vec<String>,
}

/// A route configuration: the slot connection managers read, and whether RDS has
/// delivered it (a slot made for a listener that stopped waiting holds an empty table).
#[derive(Debug)]
struct DynRoute {
    slot: RouteSlot,
    hash: Option<u64>,
    stats: SubscriptionStats,
}

#[derive(Debug, Default)]
pub(super) struct Listeners {
    dynamic: HashMap<String, DynListener>,
    routes: HashMap<String, DynRoute>,
    subscribed: BTreeSet<String>,
}

impl Listeners {
    pub(super) fn warming_count(&self) -> usize {
        self.dynamic
            .values()
            .filter(|l| l.warming.is_some())
            .count()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.dynamic
            .values()
            .filter_map(|l| l.warming.as_ref().and_then(|w| w.1))
            .min()
    }

    /// The RDS names to subscribe, if they changed since the last call.
    pub(super) fn rds_names_changed(&mut self) -> Option<BTreeSet<String>> {
        let names: BTreeSet<String> = self
            .dynamic
            .values()
            .flat_map(|l| l.rds.iter().chain(&l.active_rds).cloned())
            .collect();
        if names == self.subscribed {
            return None;
        }
        // Route configurations no listener names any more are dropped.
        self.routes.retain(|n, _| names.contains(n));
        self.subscribed = names.clone();
        Some(names)
    }

    fn routes_ready(&self, names: &[String]) -> bool {
        names
            .iter()
            .all(|n| self.routes.get(n).is_some_and(|r| r.hash.is_some()))
    }
}

/// The RDS names a listener's connection managers use, with their stat prefixes and
/// fetch timeouts.
fn rds_refs(l: &Listener) -> Vec<(String, String, Option<std::time::Duration>)> {
    let mut out = Vec::new();
    for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        if let NetworkFilter::Http(h) = &fc.filter {
            if let RouteSpec::Rds {
                name,
                initial_fetch_timeout,
            } = &h.routes
            {
                out.push((name.clone(), h.stat_prefix.clone(), *initial_fetch_timeout));
            }
        }
    }
    out
}

/// What to do with a listener that is ready to serve.
enum Placement {
    /// Same address as the active version: keep its sockets.
    Replace,
    /// New, or at a new address: these sockets, bound beforehand.
    Bind(Vec<BoundSocket>),
}

impl Applier {
    /// Builds the run-time listener, its connection managers reading the route slots.
    fn build_listener(&mut self, config: Listener) -> Arc<ListenerRuntime> {
        for (name, prefix, _) in rds_refs(&config) {
            self.route_entry(&name, &prefix);
        }
        let routes = &self.listeners.routes;
        let resolve = |name: &str| -> RouteSlot {
            routes.get(name).map(|r| r.slot.clone()).unwrap_or_default()
        };
        Arc::new(ListenerRuntime::new(
            config,
            self.server.build_context(&resolve),
        ))
    }

    /// The route configuration `name`, made empty if unknown; its stats take the stat
    /// prefix of the first connection manager that names it (as Envoy's do).
    fn route_entry(&mut self, name: &str, prefix: &str) {
        let store = &self.server.stats;
        self.listeners
            .routes
            .entry(name.to_owned())
            .or_insert_with(|| DynRoute {
                slot: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
                hash: None,
                stats: SubscriptionStats::new(store, &format!("http.{prefix}.rds.{name}")),
            });
    }

    fn placement(&self, config: &Listener) -> std::io::Result<Placement> {
        if let Some(active) = self.server.listeners.find(&config.name) {
            let old = active.slot.current();
            if old.config.address == config.address
                && old.config.bind_to_port == config.bind_to_port
            {
                return Ok(Placement::Replace);
            }
        }
        self.server.listeners.bind(config).map(Placement::Bind)
    }

    fn place(&mut self, config: Listener, placement: Placement) {
        let name = config.name.clone();
        let runtime = self.build_listener(config);
        match placement {
            Placement::Replace => {
                self.server.listeners.replace(&name, runtime);
            }
            Placement::Bind(sockets) => {
                self.server.listeners.remove(&name);
                let active = self.server.listeners.install(runtime, sockets);
                if let Some(a) = active.addr {
                    tracing::info!(listener = %name, address = %a, "listening");
                }
            }
        }
    }

    pub(super) fn apply_lds(&mut self, b: Batch<'_>) -> Result<(), String> {
        self.stats.lds.update_attempt.inc();
        let (decoded, mut errors) =
            decode_named(b, "Listener", &self.static_listeners, convert::listener);
        let present: HashSet<&str> = decoded.iter().map(|(_, d)| d.name.as_str()).collect();
        let removals = removed_names(b, &self.listeners.dynamic, &present);
        // Bind every new address before changing anything, so a bind failure rejects
        // the response as a whole.
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut warming = Vec::new();
        for (i, d) in decoded {
            if self
                .listeners
                .dynamic
                .get(&d.name)
                .is_some_and(|l| l.hash == d.hash)
            {
                continue;
            }
            let refs = rds_refs(&d.value);
            let rds: Vec<String> = refs.iter().map(|r| r.0.clone()).collect();
            let entry = Entry::new(b.version_info, &b.resources[i].value);
            if self.listeners.routes_ready(&rds) {
                match self.placement(&d.value) {
                    Ok(p) => ready.push((d, rds, entry, p)),
                    Err(e) => errors.push(format!(
                        "Listener '{}': address: cannot bind {}: {e}",
                        d.name, d.value.address
                    )),
                }
            } else {
                let timeout = refs.iter().filter_map(|r| r.2).min();
                warming.push((d, rds, refs, entry, timeout.map(|t| now + t)));
            }
        }
        if let Err(e) = rejection(errors) {
            self.stats.lds.update_rejected.inc();
            self.stats.listener_create_failure.inc();
            return Err(e);
        }
        for name in &removals {
            self.listeners.dynamic.remove(name);
            if self.server.listeners.remove(name).is_some() {
                self.stats.listener_removed.inc();
            }
        }
        let mut dump = Vec::new();
        for (d, rds, entry, placement) in ready {
            if self.listeners.dynamic.contains_key(&d.name) {
                self.stats.listener_modified.inc();
            } else {
                self.stats.listener_added.inc();
            }
            self.listeners.dynamic.insert(
                d.name.clone(),
                DynListener {
                    hash: d.hash,
                    warming: None,
                    active_rds: rds.clone(),
                    rds,
                },
            );
            dump.push((d.name.clone(), Change::Active(entry)));
            self.place(d.value, placement);
        }
        for (d, rds, refs, entry, deadline) in warming {
            for (name, prefix, _) in &refs {
                self.route_entry(name, prefix);
            }
            dump.push((d.name.clone(), Change::Warming(entry)));
            let active_rds = self
                .listeners
                .dynamic
                .get(&d.name)
                .map(|l| l.active_rds.clone())
                .unwrap_or_default();
            self.listeners.dynamic.insert(
                d.name.clone(),
                DynListener {
                    hash: d.hash,
                    warming: Some((d.value, deadline)),
                    rds,
                    active_rds,
                },
            );
        }
        {
            let mut d = self.dump();
            dump::record(&mut d.listeners, dump, &removals);
            d.lds_version = b.version_info.to_owned();
        }
        self.stats.lds.accepted(b.version_info);
        Ok(())
    }

    pub(super) fn apply_rds(&mut self, b: Batch<'_>) -> Result<(), String> {
        let mut decoded = Vec::with_capacity(b.resources.len());
        let mut errors = Vec::new();
        for (i, any) in b.resources.iter().enumerate() {
            match convert::route(any, i) {
                Ok(d) => decoded.push((i, d)),
                Err(e) => {
                    if let Some(r) = self.listeners.routes.get(&e.name) {
                        r.stats.update_attempt.inc();
                        r.stats.update_rejected.inc();
                    }
                    errors.push(e.to_string());
                }
            }
        }
        rejection(errors)?;
        let mut arrived = false;
        for (i, d) in decoded {
            let Some(r) = self.listeners.routes.get_mut(&d.name) else {
                // Not (or no longer) asked for.
                continue;
            };
            r.stats.update_attempt.inc();
            if r.hash == Some(d.hash) {
                r.stats.update_success.inc();
                continue;
            }
            arrived |= r.hash.is_none();
            r.hash = Some(d.hash);
            r.slot.store(Arc::new(d.value));
            r.stats.accepted(b.version_info);
            self.dump().routes.insert(
                d.name.clone(),
                Entry::new(b.version_info, &b.resources[i].value),
            );
        }
        // A delta removal keeps the last version: connection managers keep routing.
        if arrived {
            self.activate_warm_listeners(|l, routes| routes.routes_ready(&l.rds));
        }
        Ok(())
    }

    /// Activates the warming listeners `ready` picks; a bind failure drops that version
    /// (the previous one, if any, keeps serving).
    fn activate_warm_listeners(&mut self, ready: impl Fn(&DynListener, &Listeners) -> bool) {
        let names: Vec<String> = self
            .listeners
            .dynamic
            .iter()
            .filter(|(_, l)| l.warming.is_some() && ready(l, &self.listeners))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some((config, _)) = self.listeners.dynamic.get_mut(&name).and_then(|l| {
                l.active_rds = l.rds.clone();
                l.warming.take()
            }) else {
                continue;
            };
            let existed = self.server.listeners.find(&name).is_some();
            match self.placement(&config) {
                Ok(p) => {
                    self.place(config, p);
                    if existed {
                        self.stats.listener_modified.inc();
                    } else {
                        self.stats.listener_added.inc();
                    }
                    dump::promote(&mut self.dump().listeners, &name);
                }
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "cannot bind a warmed listener");
                    self.stats.listener_create_failure.inc();
                    self.dump()
                        .listeners
                        .entry(name)
                        .and_modify(|s| s.warming = None);
                }
            }
        }
    }

    /// Warming listeners past their deadline start serving; route configurations that
    /// have not arrived answer 404 until they do.
    pub(super) fn expire_listeners(&mut self, now: Instant) {
        self.activate_warm_listeners(|l, _| {
            l.warming
                .as_ref()
                .and_then(|w| w.1)
                .is_some_and(|d| d <= now)
        });
    }
}
