//! How load is split between priorities, as Envoy computes it: a priority's health is
//! its healthy share of hosts times the overprovisioning factor, capped at 100%; load
//! goes to the highest priorities first, healthy hosts before degraded ones, scaled up
//! when the priorities together are less than fully available; a priority whose
//! available share is below the panic threshold balances over all of its hosts, and when
//! every priority is in panic, load follows the host counts.

/// Host counts of one priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub healthy: usize,
    pub degraded: usize,
}

/// Percent of the load per priority, to its healthy and to its degraded hosts (together
/// 100), and which priorities are in panic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loads {
    pub healthy: Vec<u32>,
    pub degraded: Vec<u32>,
    pub panic: Vec<bool>,
}

/// Which hosts of the chosen priority a pick comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Healthy,
    Degraded,
}

pub fn compute(counts: &[Counts], overprovisioning: u32, panic_threshold: f64) -> Loads {
    let n = counts.len();
    let mut loads = Loads {
        healthy: vec![0; n],
        degraded: vec![0; n],
        panic: vec![false; n],
    };
    if n == 0 {
        return loads;
    }
    let share = |part: usize, total: usize| -> u32 {
        if total == 0 {
            return 0;
        }
        let v = u64::from(overprovisioning) * part as u64 / total as u64;
        v.min(100) as u32
    };
    let health: Vec<u32> = counts.iter().map(|c| share(c.healthy, c.total)).collect();
    let degraded: Vec<u32> = counts.iter().map(|c| share(c.degraded, c.total)).collect();
    let total_availability = health
        .iter()
        .chain(degraded.iter())
        .map(|v| u64::from(*v))
        .sum::<u64>()
        .min(100) as u32;
    if total_availability > 0 {
        let (first_healthy, left) =
            distribute(&mut loads.healthy, &health, 100, total_availability);
        let (first_degraded, left) =
            distribute(&mut loads.degraded, &degraded, left, total_availability);
        if left > 0 {
            match (first_healthy, first_degraded) {
                (Some(i), _) => loads.healthy[i] += left,
                (None, Some(i)) => loads.degraded[i] += left,
                (None, None) => {}
            }
        }
    }
    if panic_threshold <= 0.0 && total_availability == 0 {
        loads.healthy[0] = 100;
        return loads;
    }
    for (i, c) in counts.iter().enumerate() {
        loads.panic[i] = total_availability == 0 || in_panic(c, panic_threshold);
    }
    if loads.panic.iter().all(|p| *p) {
        total_panic(counts, &mut loads);
    }
    loads
}

/// Assigns `total` across priorities by availability; returns the first priority with
/// any availability and what is left.
fn distribute(
    out: &mut [u32],
    availability: &[u32],
    mut total: u32,
    normalized_total: u32,
) -> (Option<usize>, u32) {
    let mut first = None;
    for (i, a) in availability.iter().enumerate() {
        if first.is_none() && *a > 0 {
            first = Some(i);
        }
        out[i] = total.min(a * 100 / normalized_total);
        total -= out[i];
    }
    (first, total)
}

fn in_panic(c: &Counts, threshold: f64) -> bool {
    if c.total == 0 {
        return 0.0 < threshold.min(100.0);
    }
    let available = 100.0 * (c.healthy + c.degraded) as f64 / c.total as f64;
    available < threshold.min(100.0)
}

/// Every priority in panic: load by host count, the rest to the first non-empty one.
fn total_panic(counts: &[Counts], loads: &mut Loads) {
    let total: usize = counts.iter().map(|c| c.total).sum();
    loads.degraded.iter_mut().for_each(|d| *d = 0);
    if total == 0 {
        loads.healthy.iter_mut().for_each(|h| *h = 0);
        loads.healthy[0] = 100;
        return;
    }
    let mut left = 100u32;
    let mut first = None;
    for (i, c) in counts.iter().enumerate() {
        if first.is_none() && c.total > 0 {
            first = Some(i);
        }
        let l = (100 * c.total / total) as u32;
        loads.healthy[i] = l;
        left -= l;
    }
    if let Some(i) = first {
        loads.healthy[i] += left;
    }
}

/// The priority for a draw in `0..100` (a random number, or the request's hash).
pub fn choose(loads: &Loads, draw: u64) -> (usize, Chosen) {
    let draw = draw % 100;
    let mut acc = 0u64;
    for (i, l) in loads.healthy.iter().enumerate() {
        acc += u64::from(*l);
        if draw < acc {
            return (i, Chosen::Healthy);
        }
    }
    for (i, l) in loads.degraded.iter().enumerate() {
        acc += u64::from(*l);
        if draw < acc {
            return (i, Chosen::Degraded);
        }
    }
    (0, Chosen::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(total: usize, healthy: usize, degraded: usize) -> Counts {
        Counts {
            total,
            healthy,
            degraded,
        }
    }

    #[test]
    fn healthy_top_priority_takes_everything() {
        let l = compute(&[c(4, 4, 0), c(4, 4, 0)], 140, 50.0);
        assert_eq!(l.healthy, vec![100, 0]);
        assert_eq!(l.panic, vec![false, false]);
    }

    /// P0 at 72% healthy still takes all traffic (72 * 1.4 is over 100), at 71% it
    /// spills 1% (integer percentages, as Envoy's); at 50% it takes 70.
    #[test]
    fn overprovisioning_spills_to_the_next_priority() {
        let l = compute(&[c(100, 72, 0), c(100, 100, 0)], 140, 50.0);
        assert_eq!(l.healthy, vec![100, 0]);
        let l = compute(&[c(100, 71, 0), c(100, 100, 0)], 140, 50.0);
        assert_eq!(l.healthy, vec![99, 1]);
        let l = compute(&[c(100, 50, 0), c(100, 100, 0)], 140, 50.0);
        assert_eq!(l.healthy, vec![70, 30]);
        let l = compute(&[c(10, 0, 0), c(10, 10, 0)], 140, 50.0);
        assert_eq!(l.healthy, vec![0, 100]);
        // P0 in panic (none healthy) but P1 is not: no total panic.
        assert_eq!(l.panic, vec![true, false]);
    }

    #[test]
    fn load_is_normalized_when_everything_is_short() {
        // 20% and 10% healthy: health 28 and 14, normalized to 66/33 (+1 to the first).
        let l = compute(&[c(10, 2, 0), c(10, 1, 0)], 140, 0.0);
        assert_eq!(l.healthy, vec![67, 33]);
    }

    #[test]
    fn degraded_hosts_take_what_healthy_ones_cannot() {
        let l = compute(&[c(10, 5, 5)], 140, 50.0);
        assert_eq!(l.healthy, vec![70]);
        assert_eq!(l.degraded, vec![30]);
        assert_eq!(choose(&l, 69), (0, Chosen::Healthy));
        assert_eq!(choose(&l, 70), (0, Chosen::Degraded));
    }

    #[test]
    fn total_panic_splits_by_host_count() {
        let l = compute(&[c(3, 1, 0), c(1, 0, 0)], 140, 50.0);
        assert_eq!(l.panic, vec![true, true]);
        assert_eq!(l.healthy, vec![75, 25]);
        let none = compute(&[c(2, 0, 0)], 140, 0.0);
        assert_eq!(none.healthy, vec![100]);
        assert_eq!(none.panic, vec![false]);
    }
}
