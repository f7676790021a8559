use std::net::SocketAddr;

use super::*;
use crate::config::cluster::{EdsHealth, Locality};
use crate::config::lb::DEFAULT_MAGLEV_TABLE;
use crate::stats::Store;
use crate::upstream::host::{flags, Host, HostAddr};

fn host(port: u16, weight: u32, priority: u32, locality: &Arc<Locality>) -> Arc<HostEntry> {
    HostEntry::new(Host {
        addr: HostAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
        hostname: None,
        weight,
        priority,
        locality: locality.clone(),
        eds_health: EdsHealth::Healthy,
        check: Default::default(),
    })
}

fn cfg(policy: Policy) -> LbConfig {
    LbConfig {
        policy,
        ..LbConfig::default()
    }
}

/// How many of `n` picks each port got.
fn spread(view: &LbView, n: usize) -> std::collections::BTreeMap<u16, usize> {
    let panic = Store::default().counter("panic");
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        let h = view.pick(Context::default(), &panic).expect("a host");
        let HostAddr::Tcp(a) = &h.addr else {
            panic!("tcp")
        };
        *out.entry(a.port()).or_default() += 1;
    }
    out
}

#[test]
fn weighted_round_robin_is_proportional_and_interleaved() {
    let schedule = wrr_schedule(&[3, 1]);
    assert_eq!(schedule.len(), 4);
    assert_eq!(schedule.iter().filter(|i| **i == 0).count(), 3);
    assert_ne!(schedule, vec![1, 0, 0, 0]);
    assert_eq!(wrr_schedule(&[10, 10]), vec![0, 1]);
    let l = Arc::new(Locality::default());
    let view = LbView::build(
        vec![host(1, 3, 0, &l), host(2, 1, 0, &l)],
        &cfg(Policy::RoundRobin),
        140,
    );
    let s = spread(&view, 400);
    assert_eq!((s[&1], s[&2]), (300, 100));
}

#[test]
fn ejected_hosts_leave_rotation_until_panic() {
    let l = Arc::new(Locality::default());
    let hosts: Vec<_> = (1..=4).map(|p| host(p, 1, 0, &l)).collect();
    hosts[0].state.set(flags::FAILED_OUTLIER_CHECK);
    let view = LbView::build(hosts.clone(), &cfg(Policy::RoundRobin), 140);
    assert_eq!(view.healthy, 3);
    assert!(!spread(&view, 30).contains_key(&1));
    // Three of four out: 25% available is below the 50% panic threshold, so all four
    // hosts take traffic again.
    hosts[1].state.set(flags::FAILED_OUTLIER_CHECK);
    hosts[2].state.set(flags::FAILED_OUTLIER_CHECK);
    let view = LbView::build(hosts.clone(), &cfg(Policy::RoundRobin), 140);
    let store = Store::default();
    let panic = store.counter("panic");
    for _ in 0..8 {
        view.pick(Context::default(), &panic)
            .expect("panic picks any host");
    }
    assert_eq!(panic.get(), 8);
    assert_eq!(spread(&view, 40).len(), 4);
    // With the threshold at 0 there is no panic: only the healthy host serves.
    let no_panic = LbConfig {
        panic_threshold: 0.0,
        ..cfg(Policy::RoundRobin)
    };
    let view = LbView::build(hosts, &no_panic, 140);
    assert_eq!(
        spread(&view, 20).keys().copied().collect::<Vec<_>>(),
        vec![4]
    );
}

#[test]
fn priorities_fail_over_with_the_overprovisioning_factor() {
    let l = Arc::new(Locality::default());
    let mut hosts: Vec<_> = (1..=4).map(|p| host(p, 1, 0, &l)).collect();
    hosts.extend((11..=14).map(|p| host(p, 1, 1, &l)));
    let view = LbView::build(hosts.clone(), &cfg(Policy::RoundRobin), 140);
    assert!(spread(&view, 100).keys().all(|p| *p < 10));
    // Two of four P0 hosts out: P0's health is 50% * 1.4 = 70%, P1 takes 30%.
    hosts[0].state.set(flags::FAILED_OUTLIER_CHECK);
    hosts[1].state.set(flags::FAILED_OUTLIER_CHECK);
    let view = LbView::build(hosts, &cfg(Policy::RoundRobin), 140);
    let s = spread(&view, 10_000);
    let p1: usize = s.iter().filter(|(p, _)| **p > 10).map(|(_, n)| n).sum();
    assert!((2_600..3_400).contains(&p1), "{s:?}");
}

#[test]
fn locality_weights_split_the_load() {
    let east = Arc::new(Locality {
        zone: "east".into(),
        weight: 9,
        ..Locality::default()
    });
    let west = Arc::new(Locality {
        zone: "west".into(),
        weight: 1,
        ..Locality::default()
    });
    let hosts = vec![
        host(1, 1, 0, &east),
        host(2, 1, 0, &east),
        host(3, 1, 0, &west),
    ];
    let locality_cfg = LbConfig {
        locality_weighted: true,
        ..cfg(Policy::RoundRobin)
    };
    let view = LbView::build(hosts, &locality_cfg, 140);
    let s = spread(&view, 1000);
    assert_eq!(s[&1] + s[&2], 900);
    assert_eq!(s[&3], 100);
}

#[test]
fn least_request_prefers_idle_hosts() {
    let l = Arc::new(Locality::default());
    let hosts = vec![host(1, 1, 0, &l), host(2, 1, 0, &l)];
    let busy: Vec<_> = (0..10).map(|_| hosts[0].state.request()).collect();
    let lr = cfg(Policy::LeastRequest {
        choice_count: 2,
        active_request_bias: 1.0,
    });
    let view = LbView::build(hosts.clone(), &lr, 140);
    let s = spread(&view, 1000);
    // Host 1 wins only when both draws land on it (about a quarter of the time).
    assert!(s[&2] > 650, "{s:?}");
    drop(busy);
    // Unequal weights: weight / (active + 1).
    let weighted = vec![host(1, 3, 0, &l), host(2, 1, 0, &l)];
    let view = LbView::build(weighted, &lr, 140);
    let s = spread(&view, 4000);
    assert!((2_700..3_300).contains(&s[&1]), "{s:?}");
}

#[test]
fn hashing_policies_are_sticky() {
    let l = Arc::new(Locality::default());
    let hosts: Vec<_> = (1..=5).map(|p| host(p, 1, 0, &l)).collect();
    let panic = Store::default().counter("panic");
    for policy in [
        Policy::RingHash {
            min_size: 1024,
            max_size: 8 << 20,
        },
        Policy::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE,
        },
    ] {
        let view = LbView::build(hosts.clone(), &cfg(policy), 140);
        let mut seen = std::collections::HashSet::new();
        for key in 0..200u64 {
            let ctx = Context {
                hash: Some(hash(&key.to_le_bytes())),
                attempt: 0,
            };
            let a = view.pick(ctx, &panic).expect("host");
            let b = view.pick(ctx, &panic).expect("host");
            assert_eq!(a.addr, b.addr);
            seen.insert(a.addr.clone());
        }
        assert_eq!(seen.len(), 5, "{policy:?} spreads keys");
    }
}

#[test]
fn degraded_hosts_serve_only_what_healthy_ones_cannot() {
    let l = Arc::new(Locality::default());
    let mut hosts: Vec<_> = [1, 2, 4, 5].map(|p| host(p, 1, 0, &l)).to_vec();
    let degraded = HostEntry::new(Host {
        eds_health: EdsHealth::Degraded,
        ..hosts[0].host.clone()
    });
    let degraded = HostEntry::new(Host {
        addr: HostAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 3))),
        ..degraded.host.clone()
    });
    hosts.push(degraded);
    let view = LbView::build(hosts.clone(), &cfg(Policy::RoundRobin), 140);
    // Four of five healthy: 80% * 1.4 is over 100, so the degraded host is idle.
    assert!(!spread(&view, 300).contains_key(&3));
    assert_eq!(view.degraded, 1);
    for h in &hosts[..2] {
        h.state.set(flags::FAILED_OUTLIER_CHECK);
    }
    let view = LbView::build(hosts, &cfg(Policy::RoundRobin), 140);
    // Two of five healthy (56% availability) and one degraded (28%), normalized:
    // 67% to the healthy hosts, 33% to the degraded one.
    let s = spread(&view, 10_000);
    assert!((2_900..3_700).contains(&s[&3]), "{s:?}");
}

#[test]
fn excluded_hosts_do_not_count_toward_panic() {
    let loc = Arc::new(Locality::default());
    let hosts = vec![
        host(1, 1, 0, &loc),
        host(2, 1, 0, &loc),
        host(3, 1, 0, &loc),
    ];
    // One healthy host of three is below the panic threshold (1.4 x 33% < 50%): the
    // picks spread over all three.
    hosts[0].state.set(flags::FAILED_ACTIVE_HC);
    hosts[1].state.set(flags::FAILED_ACTIVE_HC);
    let view = LbView::build(hosts.clone(), &cfg(Policy::RoundRobin), 140);
    assert_eq!(spread(&view, 9), [(1, 3), (2, 3), (3, 3)].into());
    // One of the failed ones excluded: one healthy of two counted, no panic.
    hosts[0].state.set(flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL);
    let view = LbView::build(hosts.clone(), &cfg(Policy::RoundRobin), 140);
    assert_eq!((view.healthy, view.excluded), (1, 1));
    assert_eq!(spread(&view, 9), [(3, 9)].into());
    // Every host excluded and failed: nothing counted, panic over all of them.
    for h in &hosts {
        h.state
            .set(flags::FAILED_ACTIVE_HC | flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL);
    }
    let view = LbView::build(hosts, &cfg(Policy::RoundRobin), 140);
    assert_eq!(view.excluded, 3);
    assert_eq!(spread(&view, 9), [(1, 3), (2, 3), (3, 3)].into());
}
