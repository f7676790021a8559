//! Envoy-named counters and gauges.
//!
//! Handles are looked up once, when config is built; the data path only touches atomics.
//! A stat family with fixed names under one prefix (a cluster's `cluster.<name>.*`, its
//! circuit breakers, outlier detector and health checker) is a [`Block`]: the prefix is
//! stored once, the names are static, and the values are one allocation, so a
//! mesh-sized config (about 40 stats per cluster) costs about 16 bytes per stat plus
//! the handles. Other stats are stored one by one under their full name. Prometheus
//! names and tags (Envoy's default tag extraction) are derived only when
//! `/stats/prometheus` renders.

mod metric;
mod prometheus;

use std::cell::Cell as StdCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use metric::{cells, Cells};
pub use metric::{Counter, Gauge, GaugeGuard};
use prometheus::prometheus_name;

/// Whether a stat counts or gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One stat of a block: its name after the block's prefix, and its kind.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
}

/// A counter named `name` in a block's definition.
pub const fn counter(name: &'static str) -> Def {
    Def {
        name,
        kind: Kind::Counter,
    }
}

/// A gauge named `name` in a block's definition.
pub const fn gauge(name: &'static str) -> Def {
    Def {
        name,
        kind: Kind::Gauge,
    }
}

/// A stat stored under its full name.
#[derive(Debug, Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
}

/// A block as the store keeps it.
#[derive(Debug)]
struct Stored {
    defs: &'static [Def],
    cells: Cells,
}

#[derive(Debug, Default)]
struct Inner {
    /// Stats stored one by one, by full name.
    single: BTreeMap<Box<str>, Metric>,
    /// Blocks, by prefix (which ends with `.`).
    blocks: BTreeMap<Box<str>, Stored>,
}

impl Inner {
    /// The block cell that holds the stat `name`, if a block does.
    fn in_block(&self, name: &str) -> Option<(Cells, usize, Kind)> {
        name.match_indices('.').find_map(|(i, _)| {
            let stored = self.blocks.get(&name[..=i])?;
            let rest = &name[i + 1..];
            let at = stored.defs.iter().position(|d| d.name == rest)?;
            Some((stored.cells.clone(), at, stored.defs[at].kind))
        })
    }
}

/// The process's stat store.
#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

/// Handles on the stats of one block, looked up by name. Lookups in definition order
/// cost one comparison each.
#[derive(Debug)]
pub struct Block {
    defs: &'static [Def],
    cells: Cells,
    next: StdCell<usize>,
}

impl Block {
    fn position(&self, name: &str, kind: Kind) -> Option<usize> {
        let start = self.next.get();
        let n = self.defs.len();
        let at = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.defs[i].name == name)?;
        self.next.set(at + 1);
        (self.defs[at].kind == kind).then_some(at)
    }

    /// The counter `name` of this block. A name the definition lacks (a bug, caught by
    /// the debug assertion) gets a counter no store lists.
    pub fn counter(&self, name: &str) -> Counter {
        match self.position(name, Kind::Counter) {
            Some(i) => Counter::at(self.cells.clone(), i),
            None => {
                debug_assert!(false, "no counter {name} in this stat block");
                Counter::default()
            }
        }
    }

    /// The gauge `name` of this block (see [`Block::counter`]).
    pub fn gauge(&self, name: &str) -> Gauge {
        match self.position(name, Kind::Gauge) {
            Some(i) => Gauge::at(self.cells.clone(), i),
            None => {
                debug_assert!(false, "no gauge {name} in this stat block");
                Gauge::default()
            }
        }
    }
}

/// One stat as rendered by the admin endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Unsigned, as Envoy's counters and gauges are (a gauge's bits, read as u64).
    pub value: u64,
    pub is_counter: bool,
    pub used: bool,
    pub prom_name: String,
    pub tags: Vec<(&'static str, String)>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn counter(&self, name: &str) -> Counter {
        match self.entry(name, Kind::Counter) {
            Metric::Counter(c) => c,
            Metric::Gauge(_) => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        match self.entry(name, Kind::Gauge) {
            Metric::Gauge(g) => g,
            Metric::Counter(_) => Gauge::default(),
        }
    }

    fn entry(&self, name: &str, kind: Kind) -> Metric {
        let mut inner = self.lock();
        if let Some((cells, i, kind)) = inner.in_block(name) {
            return match kind {
                Kind::Counter => Metric::Counter(Counter::at(cells, i)),
                Kind::Gauge => Metric::Gauge(Gauge::at(cells, i)),
            };
        }
        if let Some(m) = inner.single.get(name) {
            return m.clone();
        }
        let metric = match kind {
            Kind::Counter => Metric::Counter(Counter::default()),
            Kind::Gauge => Metric::Gauge(Gauge::default()),
        };
        inner.single.insert(name.into(), metric.clone());
        metric
    }

    /// The block of stats `defs` under `prefix` (which ends with `.`). Asking again
    /// with the same names gives the same stats (a cluster updated in place keeps its
    /// counters); other names replace the block and keep the values of the names both
    /// have. Stats already stored one by one under these names move into the block
    /// with their values.
    pub fn block(&self, prefix: &str, defs: &'static [Def]) -> Block {
        let mut inner = self.lock();
        let same = |s: &Stored| {
            s.defs.len() == defs.len() && s.defs.iter().zip(defs).all(|(a, b)| a.name == b.name)
        };
        let cells = match inner.blocks.get(prefix).filter(|s| same(s)) {
            Some(s) => s.cells.clone(),
            None => {
                let new = cells(defs.len());
                let old = inner.blocks.remove(prefix);
                let singles = inner
                    .single
                    .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(prefix));
                for (cell, def) in new.iter().zip(defs) {
                    if let Some(prev) = old.as_ref().and_then(|o| o.cell(def.name)) {
                        cell.copy_from(prev);
                    }
                    if singles {
                        let full = format!("{prefix}{}", def.name);
                        if let Some(m) = inner.single.remove(full.as_str()) {
                            cell.copy_from(m.cell());
                        }
                    }
                }
                let stored = Stored {
                    defs,
                    cells: new.clone(),
                };
                inner.blocks.insert(prefix.into(), stored);
                new
            }
        };
        Block {
            defs,
            cells,
            next: StdCell::new(0),
        }
    }

    /// All stats, sorted by name; with their Prometheus names and tags when `prometheus`.
    pub fn snapshot_with(&self, prometheus: bool) -> Vec<Sample> {
        let inner = self.lock();
        let singles = inner.single.iter().map(|(name, m)| {
            let (cell, kind) = match m {
                Metric::Counter(c) => (c.cell(), Kind::Counter),
                Metric::Gauge(g) => (g.cell(), Kind::Gauge),
            };
            sample(name.to_string(), cell, kind)
        });
        let blocked = inner.blocks.iter().flat_map(|(prefix, s)| {
            s.defs
                .iter()
                .zip(s.cells.iter())
                .map(move |(d, cell)| sample(format!("{prefix}{}", d.name), cell, d.kind))
        });
        let mut all: Vec<Sample> = singles.chain(blocked).collect();
        drop(inner);
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if prometheus {
            for s in &mut all {
                (s.prom_name, s.tags) = prometheus_name(&s.name);
            }
        }
        all
    }

    /// All stats, sorted by name (no Prometheus names).
    pub fn snapshot(&self) -> Vec<Sample> {
        self.snapshot_with(false)
    }
}

impl Stored {
    fn cell(&self, name: &str) -> Option<&metric::Cell> {
        let at = self.defs.iter().position(|d| d.name == name)?;
        self.cells.get(at)
    }
}

impl Metric {
    fn cell(&self) -> &metric::Cell {
        match self {
            Metric::Counter(c) => c.cell(),
            Metric::Gauge(g) => g.cell(),
        }
    }
}

fn sample(name: String, cell: &metric::Cell, kind: Kind) -> Sample {
    let (value, used) = match kind {
        Kind::Counter => (cell.load(), cell.load() > 0),
        Kind::Gauge => (cell.load(), cell.used()),
    };
    Sample {
        name,
        value,
        is_counter: kind == Kind::Counter,
        used,
        prom_name: String::new(),
        tags: Vec::new(),
    }
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

    static DEFS: [Def; 3] = [counter("rq_total"), gauge("rq_active"), counter("rq_2xx")];
    static FEWER: [Def; 2] = [counter("rq_total"), gauge("remaining")];

    #[test]
    fn blocks_share_cells_keep_values_and_list_with_the_rest() {
        let s = Store::default();
        // Read before the block exists: moves into the block with its value.
        s.counter("cluster.a.rq_2xx").add(4);
        let b = s.block("cluster.a.", &DEFS);
        let total = b.counter("rq_total");
        let active = b.gauge("rq_active");
        assert_eq!(b.counter("rq_2xx").get(), 4);
        total.inc();
        active.add(3);
        active.dec();
        // The same names again (a cluster updated in place): the same cells.
        let again = s.block("cluster.a.", &DEFS);
        again.counter("rq_total").inc();
        assert_eq!(total.get(), 2);
        // Looked up by full name: the block's cell, not a new stat.
        assert_eq!(s.gauge("cluster.a.rq_active").get(), 2);
        s.counter("cluster.a.rq_total").inc();
        assert_eq!(total.get(), 3);
        s.counter("cluster.b.rq_total").inc();

        let snap = s.snapshot();
        let names: Vec<_> = snap
            .iter()
            .map(|x| (x.name.as_str(), x.value, x.used))
            .collect();
        assert_eq!(
            names,
            vec![
                ("cluster.a.rq_2xx", 4, true),
                ("cluster.a.rq_active", 2, true),
                ("cluster.a.rq_total", 3, true),
                ("cluster.b.rq_total", 1, true),
            ]
        );

        // Other names replace the block, keeping shared values.
        let fewer = s.block("cluster.a.", &FEWER);
        assert_eq!(fewer.counter("rq_total").get(), 3);
        let remaining = fewer.gauge("remaining");
        assert!(!s.snapshot().iter().any(|x| x.name == "cluster.a.rq_2xx"));
        let r = s.snapshot();
        let rem = r.iter().find(|x| x.name == "cluster.a.remaining").unwrap();
        assert!(!rem.used && !rem.is_counter);
        remaining.set(-5);
        assert_eq!(s.gauge("cluster.a.remaining").get(), -5);
    }

    #[test]
    fn lookups_out_of_order_and_wrong_kinds() {
        let s = Store::default();
        let b = s.block("x.", &DEFS);
        b.counter("rq_2xx").inc();
        b.counter("rq_total").add(2);
        assert_eq!(s.counter("x.rq_2xx").get(), 1);
        assert_eq!(s.counter("x.rq_total").get(), 2);
        // A full-name lookup of the wrong kind gets a detached stat.
        s.counter("x.rq_active").inc();
        assert_eq!(b.gauge("rq_active").get(), 0);
    }
}
