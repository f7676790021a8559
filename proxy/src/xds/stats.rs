//! xDS stats with Envoy's names: per subscription (`cluster_manager.cds.*`,
//! `listener_manager.lds.*`, `http.<stat_prefix>.rds.<name>.*`; EDS counts under
//! `cluster.<name>.*`), the control plane connection, and the managers' change counters.

use crate::stats::{Counter, Gauge, Store};

/// `<scope>.update_attempt|update_success|update_rejected|update_failure|version`.
#[derive(Debug, Clone)]
pub struct SubscriptionStats {
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_rejected: Counter,
    pub update_failure: Counter,
    pub init_fetch_timeout: Counter,
    /// A hash of the last accepted `version_info`.
    pub version: Gauge,
}

impl SubscriptionStats {
    pub fn new(store: &Store, scope: &str) -> Self {
        let c = |s: &str| store.counter(&format!("{scope}.{s}"));
        SubscriptionStats {
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_rejected: c("update_rejected"),
            update_failure: c("update_failure"),
            init_fetch_timeout: c("init_fetch_timeout"),
            version: store.gauge(&format!("{scope}.version")),
        }
    }

    pub fn accepted(&self, version_info: &str) {
        self.update_success.inc();
        // Envoy reports a 64-bit hash of the version; the gauge keeps it non-negative.
        let h = super::convert::hash(version_info.as_bytes()) >> 1;
        self.version.set(h as i64);
    }
}

#[derive(Debug, Clone)]
pub struct XdsStats {
    pub cds: SubscriptionStats,
    pub lds: SubscriptionStats,
    pub connected_state: Gauge,
    pub rate_limit_enforced: Counter,
    pub cluster_added: Counter,
    pub cluster_modified: Counter,
    pub cluster_removed: Counter,
    pub warming_clusters: Gauge,
    pub listener_added: Counter,
    pub listener_modified: Counter,
    pub listener_removed: Counter,
    pub listener_create_failure: Counter,
    pub listeners_warming: Gauge,
}

impl XdsStats {
    pub fn new(store: &Store) -> Self {
        let cm = |s: &str| store.counter(&format!("cluster_manager.{s}"));
        let lm = |s: &str| store.counter(&format!("listener_manager.{s}"));
        XdsStats {
            cds: SubscriptionStats::new(store, "cluster_manager.cds"),
            lds: SubscriptionStats::new(store, "listener_manager.lds"),
            connected_state: store.gauge("control_plane.connected_state"),
            // Remora does not throttle its own discovery requests, so this stays 0; it
            // exists because pilot-agent's readiness check reads it.
            rate_limit_enforced: store.counter("control_plane.rate_limit_enforced"),
            cluster_added: cm("cluster_added"),
            cluster_modified: cm("cluster_modified"),
            cluster_removed: cm("cluster_removed"),
            warming_clusters: store.gauge("cluster_manager.warming_clusters"),
            listener_added: lm("listener_added"),
            listener_modified: lm("listener_modified"),
            listener_removed: lm("listener_removed"),
            listener_create_failure: lm("listener_create_failure"),
            listeners_warming: store.gauge("listener_manager.total_listeners_warming"),
        }
    }
}
