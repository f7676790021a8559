//! Envoy-named counters and gauges.
//!
//! Handles are looked up once, when config is built; the data path only touches atomics.
//! A stat is stored as its name and its atomic; its Prometheus name and tags (Envoy's
//! default tag extraction for the prefixes Remora emits) are derived when
//! `/stats/prometheus` renders, so a mesh-sized config (17 stats per cluster) costs no
//! more memory than the names themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<(AtomicI64, std::sync::atomic::AtomicBool)>);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }
    #[inline]
    pub fn add(&self, n: i64) {
        self.0 .0.fetch_add(n, Ordering::Relaxed);
        self.0 .1.store(true, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0 .0.store(v, Ordering::Relaxed);
        self.0 .1.store(true, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0 .0.load(Ordering::Relaxed)
    }
    fn used(&self) -> bool {
        self.0 .1.load(Ordering::Relaxed)
    }
}

/// A gauge that decrements when dropped (active connections, active requests).
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(g: &Gauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
}

/// The process's stat store.
#[derive(Debug, Default)]
pub struct Store {
    stats: Mutex<BTreeMap<Box<str>, Metric>>,
}

/// One stat as rendered by the admin endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub value: i128,
    pub is_counter: bool,
    pub used: bool,
    pub prom_name: String,
    pub tags: Vec<(&'static str, String)>,
}

impl Store {
    pub fn counter(&self, name: &str) -> Counter {
        match self.entry(name, || Metric::Counter(Counter::default())) {
            Metric::Counter(c) => c,
            Metric::Gauge(_) => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        match self.entry(name, || Metric::Gauge(Gauge::default())) {
            Metric::Gauge(g) => g,
            Metric::Counter(_) => Gauge::default(),
        }
    }

    fn entry(&self, name: &str, make: impl FnOnce() -> Metric) -> Metric {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = stats.get(name) {
            return m.clone();
        }
        let metric = make();
        stats.insert(name.into(), metric.clone());
        metric
    }

    /// All stats, sorted by name; with their Prometheus names and tags when `prometheus`.
    pub fn snapshot_with(&self, prometheus: bool) -> Vec<Sample> {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats
            .iter()
            .map(|(name, m)| {
                let (value, is_counter, used) = match m {
                    Metric::Counter(c) => (i128::from(c.get()), true, c.get() > 0),
                    Metric::Gauge(g) => (i128::from(g.get()), false, g.used()),
                };
                let (prom_name, tags) = if prometheus {
                    prometheus_name(name)
                } else {
                    (String::new(), Vec::new())
                };
                Sample {
                    name: name.to_string(),
                    value,
                    is_counter,
                    used,
                    prom_name,
                    tags,
                }
            })
            .collect()
    }

    /// All stats, sorted by name (no Prometheus names).
    pub fn snapshot(&self) -> Vec<Sample> {
        self.snapshot_with(false)
    }
}

/// Envoy's default tag extraction for the stat families Remora emits:
/// `cluster.<name>.`, `http.<prefix>.`, `listener.<address>.`, `tcp.<prefix>.`, and the
/// response code class suffix `_Nxx`.
fn prometheus_name(name: &str) -> (String, Vec<(&'static str, String)>) {
    let mut tags = Vec::new();
    let mut rest = name.to_string();
    for (prefix, tag) in [
        ("cluster.", "envoy_cluster_name"),
        ("http.", "envoy_http_conn_manager_prefix"),
        ("listener.", "envoy_listener_address"),
        ("tcp.", "envoy_tcp_prefix"),
    ] {
        if let Some(after) = name.strip_prefix(prefix) {
            // The tagged value runs up to the last dot (stat names never contain dots
            // after the tagged segment for these families).
            if let Some(i) = after.rfind('.') {
                let value = &after[..i];
                if prefix == "listener." && value.starts_with("http.") {
                    break;
                }
                tags.push((tag, value.to_string()));
                rest = format!("{prefix}{}", &after[i + 1..]);
            }
            break;
        }
    }
    if let Some(base) = rest.strip_suffix("xx") {
        if let Some((head, class)) = base.rsplit_once('_') {
            if class.len() == 1 && class.as_bytes()[0].is_ascii_digit() {
                tags.push(("envoy_response_code_class", class.to_string()));
                rest = format!("{head}_xx");
            }
        }
    }
    let sanitized: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (format!("envoy_{sanitized}"), tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_values_and_prometheus_names_are_tagged() {
        let s = Store::default();
        s.counter("cluster.backend.upstream_rq_total").inc();
        s.counter("cluster.backend.upstream_rq_total").inc();
        s.counter("cluster.backend.upstream_rq_2xx").inc();
        let g = s.gauge("server.live");
        g.set(1);
        let snap = s.snapshot_with(true);
        let total = snap
            .iter()
            .find(|x| x.name == "cluster.backend.upstream_rq_total")
            .unwrap();
        assert_eq!(total.value, 2);
        assert_eq!(total.prom_name, "envoy_cluster_upstream_rq_total");
        assert_eq!(
            total.tags,
            vec![("envoy_cluster_name", "backend".to_string())]
        );
        let xx = snap
            .iter()
            .find(|x| x.name == "cluster.backend.upstream_rq_2xx")
            .unwrap();
        assert_eq!(xx.prom_name, "envoy_cluster_upstream_rq_xx");
        assert!(xx
            .tags
            .contains(&("envoy_response_code_class", "2".to_string())));
        let live = snap.iter().find(|x| x.name == "server.live").unwrap();
        assert_eq!(
            (live.prom_name.as_str(), live.value, live.is_counter),
            ("envoy_server_live", 1, false)
        );
        let l = prometheus_name("listener.0.0.0.0_10000.downstream_cx_total");
        assert_eq!(l.0, "envoy_listener_downstream_cx_total");
        assert_eq!(l.1[0].1, "0.0.0.0_10000");
    }
}
