//! Consistent hashing tables built the way Envoy builds them, so that a key lands on the
//! same host in Remora as in Envoy: a ketama-style ring (`RING_HASH`, xxHash64 of
//! `"<address>_<n>"` entries, sized from the least-weighted host) and a Maglev lookup
//! table (offset and skip from xxHash64 of the address with seeds 0 and 1, filled in
//! weighted turns).

use xxhash_rust::xxh64::xxh64;

/// xxHash64 with seed 0, Envoy's `HashUtil::xxHash64`.
pub fn hash(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// A host's share of the table: its key and weight, in host-set order.
pub struct Member<'a> {
    pub key: &'a str,
    pub weight: u32,
}

/// Sorted (hash, member index) pairs.
#[derive(Debug, Default)]
pub struct Ring {
    entries: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(members: &[Member<'_>], min_size: u64, max_size: u64) -> Ring {
        let total: f64 = members.iter().map(|m| f64::from(m.weight)).sum();
        if members.is_empty() || total == 0.0 {
            return Ring::default();
        }
        let normalized: Vec<f64> = members
            .iter()
            .map(|m| f64::from(m.weight) / total)
            .collect();
        let min_weight = normalized.iter().copied().fold(f64::INFINITY, f64::min);
        let scale = ((min_weight * min_size as f64).ceil() / min_weight).min(max_size as f64);
        let mut entries = Vec::with_capacity(scale.ceil() as usize);
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        let mut key = String::new();
        for (i, (m, w)) in members.iter().zip(&normalized).enumerate() {
            target += scale * w;
            let mut n = 0u64;
            while current < target {
                key.clear();
                key.push_str(m.key);
                key.push('_');
                key.push_str(&n.to_string());
                entries.push((hash(key.as_bytes()), i as u32));
                n += 1;
                current += 1.0;
            }
        }
        entries.sort_by_key(|e| e.0);
        Ring { entries }
    }

    /// The member owning `h`: the first entry at or after it, wrapping to the start
    /// (with the ketama search's quirks, so ties and edges fall where Envoy's do).
    /// `attempt` > 0 (a retry avoiding previous hosts) steps that many entries on.
    pub fn lookup(&self, h: u64, attempt: u32) -> Option<usize> {
        let len = self.entries.len() as i64;
        if len == 0 {
            return None;
        }
        let mut low = 0i64;
        let mut high = len;
        let index = loop {
            let mid = (low + high) / 2;
            if mid == len {
                break 0;
            }
            let midval = self.entries[mid as usize].0;
            let midval1 = if mid == 0 {
                0
            } else {
                self.entries[mid as usize - 1].0
            };
            if h <= midval && h > midval1 {
                break mid;
            }
            if midval < h {
                low = mid + 1;
            } else {
                high = mid - 1;
            }
            if low > high {
                break 0;
            }
        };
        let index = (index + i64::from(attempt)) % len;
        Some(self.entries[index as usize].1 as usize)
    }
}

/// A Maglev lookup table of member indexes.
#[derive(Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    pub fn new(members: &[Member<'_>], table_size: u64) -> Maglev {
        let total: f64 = members.iter().map(|m| f64::from(m.weight)).sum();
        if members.is_empty() || total == 0.0 || table_size < 2 {
            return Maglev::default();
        }
        struct Build {
            offset: u64,
            skip: u64,
            weight: f64,
            target: f64,
            next: u64,
        }
        let mut build: Vec<Build> = members
            .iter()
            .map(|m| Build {
                offset: xxh64(m.key.as_bytes(), 0) % table_size,
                skip: xxh64(m.key.as_bytes(), 1) % (table_size - 1) + 1,
                weight: f64::from(m.weight) / total,
                target: 0.0,
                next: 0,
            })
            .collect();
        let max_weight = build.iter().map(|b| b.weight).fold(0.0, f64::max);
        let size = table_size as usize;
        let mut table = vec![u32::MAX; size];
        let mut filled = 0usize;
        let mut iteration = 1u64;
        while filled < size {
            for (i, b) in build.iter_mut().enumerate() {
                if filled >= size {
                    break;
                }
                if (iteration as f64) * b.weight < b.target {
                    continue;
                }
                b.target += max_weight;
                let mut c = (b.offset + b.skip * b.next) % table_size;
                while table[c as usize] != u32::MAX {
                    b.next += 1;
                    c = (b.offset + b.skip * b.next) % table_size;
                }
                table[c as usize] = i as u32;
                b.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Maglev { table }
    }

    pub fn lookup(&self, h: u64, attempt: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let i = h.wrapping_add(u64::from(attempt)) % self.table.len() as u64;
        Some(self.table[i as usize] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members<'a>(keys: &'a [&'a str], weights: &[u32]) -> Vec<Member<'a>> {
        keys.iter()
            .zip(weights)
            .map(|(k, w)| Member { key: k, weight: *w })
            .collect()
    }

    #[test]
    fn xxhash_matches_the_reference_value() {
        // xxHash64("", seed 0): the published test vector.
        assert_eq!(hash(b""), 0xEF46_DB37_51D8_E999);
    }

    #[test]
    fn ring_gives_each_host_its_weighted_share_of_entries() {
        let keys = ["127.0.0.1:1", "127.0.0.1:2"];
        let ring = Ring::new(&members(&keys, &[1, 1]), 1024, 8 << 20);
        assert_eq!(ring.entries.len(), 1024);
        let ring = Ring::new(&members(&keys, &[1, 3]), 1024, 8 << 20);
        // The ring keeps its minimum size; the heavier host has three times the entries.
        assert_eq!(ring.entries.iter().filter(|e| e.1 == 0).count(), 256);
        assert_eq!(ring.entries.iter().filter(|e| e.1 == 1).count(), 768);
        // A light host with few entries scales the ring up so it still gets a whole one.
        let ring = Ring::new(&members(&keys, &[1, 4095]), 1024, 8 << 20);
        assert_eq!(ring.entries.iter().filter(|e| e.1 == 0).count(), 1);
    }

    #[test]
    fn keys_stick_and_mostly_stay_when_a_host_leaves() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let ring = Ring::new(&members(&keys, &[1, 1, 1]), 1024, 8 << 20);
        let smaller = Ring::new(&members(&keys[..2], &[1, 1]), 1024, 8 << 20);
        let mut moved = 0;
        for k in 0..1000u64 {
            let h = hash(&k.to_le_bytes());
            let a = ring.lookup(h, 0).expect("host");
            assert_eq!(ring.lookup(h, 0), Some(a));
            if a != 2 && smaller.lookup(h, 0) != Some(a) {
                moved += 1;
            }
        }
        // Ring entries belong to one host each: most keys on the hosts that stayed keep
        // their host (some move because the smaller ring gives each host more entries).
        assert!(moved < 200, "{moved} of ~667 keys moved");
    }

    #[test]
    fn maglev_fills_the_table_in_proportion_to_weight() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80"];
        let m = Maglev::new(&members(&keys, &[1, 3]), 65537);
        let first = m.table.iter().filter(|i| **i == 0).count() as f64;
        let share = first / 65537.0;
        assert!((share - 0.25).abs() < 0.01, "{share}");
        assert!(m.table.iter().all(|i| *i < 2));
        let h = hash(b"user-1");
        assert_eq!(m.lookup(h, 0), m.lookup(h, 0));
    }
}
