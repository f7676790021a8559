//! Counter and gauge handles: a handle names one cell of a shared block of cells, so
//! the stats of one cluster (or one detector) live in a single allocation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One stat's value. A gauge keeps its two's-complement value in `value` and marks
/// `used` when it is first set, as Envoy's `used` flag does.
#[derive(Debug, Default)]
pub(super) struct Cell {
    value: AtomicU64,
    used: AtomicBool,
}

impl Cell {
    pub(super) fn load(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    pub(super) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes over `other`'s value and flag (a stat moving into a block).
    pub(super) fn copy_from(&self, other: &Cell) {
        self.value.store(other.load(), Ordering::Relaxed);
        self.used.store(other.used(), Ordering::Relaxed);
    }
}

/// Cells allocated together, behind a thin pointer so that a handle is two words.
#[derive(Debug)]
pub(super) struct Values(Box<[Cell]>);

impl std::ops::Deref for Values {
    type Target = [Cell];
    fn deref(&self) -> &[Cell] {
        &self.0
    }
}

pub(super) type Cells = Arc<Values>;

pub(super) fn cells(n: usize) -> Cells {
    Arc::new(Values((0..n).map(|_| Cell::default()).collect()))
}

/// A handle on one cell; `index` is checked against the block when it is made.
#[derive(Debug, Clone)]
struct Slot {
    cells: Cells,
    index: u32,
}

impl Slot {
    fn new(cells: Cells, index: usize) -> Slot {
        match u32::try_from(index) {
            Ok(i) if index < cells.len() => Slot { cells, index: i },
            _ => Slot::detached(),
        }
    }

    /// A cell no store lists.
    fn detached() -> Slot {
        Slot {
            cells: cells(1),
            index: 0,
        }
    }

    #[inline]
    fn cell(&self) -> &Cell {
        // In range by construction.
        &self.cells[self.index as usize]
    }
}

#[derive(Debug, Clone)]
pub struct Counter(Slot);

impl Default for Counter {
    fn default() -> Self {
        Counter(Slot::detached())
    }
}

impl Counter {
    pub(super) fn at(cells: Cells, index: usize) -> Counter {
        Counter(Slot::new(cells, index))
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.cell().value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.cell().load()
    }
}

#[derive(Debug, Clone)]
pub struct Gauge(Slot);

impl Default for Gauge {
    fn default() -> Self {
        Gauge(Slot::detached())
    }
}

impl Gauge {
    pub(super) fn at(cells: Cells, index: usize) -> Gauge {
        Gauge(Slot::new(cells, index))
    }

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
        let cell = self.0.cell();
        // Two's complement: adding the bit pattern of a negative `n` subtracts.
        cell.value.fetch_add(n as u64, Ordering::Relaxed);
        cell.used.store(true, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        let cell = self.0.cell();
        cell.value.store(v as u64, Ordering::Relaxed);
        cell.used.store(true, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.cell().load() as i64
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

impl Counter {
    pub(super) fn cell(&self) -> &Cell {
        self.0.cell()
    }
}

impl Gauge {
    pub(super) fn cell(&self) -> &Cell {
        self.0.cell()
    }
}
