use std::time::Duration;

use super::probe::{payload_matches, Check, Failure};
use super::*;
use crate::config::health_check::{Checker, TcpCheck};

fn config(healthy: u32, unhealthy: u32) -> HealthCheck {
    let s = Duration::from_secs;
    HealthCheck {
        timeout: s(1),
        interval: s(10),
        initial_jitter: Duration::ZERO,
        interval_jitter: Duration::ZERO,
        interval_jitter_percent: 0,
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
        alt_port: None,
        reuse_connection: true,
        no_traffic_interval: s(60),
        no_traffic_healthy_interval: s(70),
        unhealthy_interval: s(20),
        unhealthy_edge_interval: s(30),
        healthy_edge_interval: s(40),
        checker: Checker::Tcp(TcpCheck {
            send: Vec::new(),
            receive: Vec::new(),
        }),
    }
}

fn new_host() -> HostState {
    let h = HostState::default();
    h.set(flags::FAILED_ACTIVE_HC);
    h
}

#[test]
fn the_first_success_makes_a_new_host_healthy_then_thresholds_apply() {
    let store = Store::default();
    let stats = HealthStats::new(&store, "c");
    let cfg = config(2, 3);
    let host = new_host();
    let mut s = Session::default();
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Changed
    );
    assert!(!host.has(flags::FAILED_ACTIVE_HC));
    assert_eq!(stats.healthy.get(), 1);
    // Network failures count toward the threshold of 3.
    for _ in 0..2 {
        assert_eq!(
            s.record(Check::Failed(Failure::Network), &host, &cfg, &stats),
            Transition::Pending
        );
    }
    assert!(!host.has(flags::FAILED_ACTIVE_HC));
    assert_eq!(
        s.record(Check::Failed(Failure::Timeout), &host, &cfg, &stats),
        Transition::Changed
    );
    assert!(host.has(flags::FAILED_ACTIVE_HC));
    assert_eq!(stats.healthy.get(), 0);
    // Two successes in a row bring it back; a failure in between restarts the count.
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Pending
    );
    assert_eq!(
        s.record(Check::Failed(Failure::Network), &host, &cfg, &stats),
        Transition::Unchanged
    );
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Pending
    );
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Changed
    );
    assert!(!host.has(flags::FAILED_ACTIVE_HC));
    assert_eq!(
        stats.attempt.get(),
        0,
        "attempts are counted by the session task"
    );
    assert_eq!(stats.success.get(), 4);
    assert_eq!(stats.failure.get(), 4);
    assert_eq!(stats.network_failure.get(), 4);
}

#[test]
fn a_wrong_answer_fails_at_once_and_a_retriable_one_counts() {
    let store = Store::default();
    let stats = HealthStats::new(&store, "c");
    let cfg = config(1, 2);
    let host = new_host();
    let mut s = Session::default();
    s.record(Check::Healthy, &host, &cfg, &stats);
    assert_eq!(
        s.record(Check::Failed(Failure::Retriable), &host, &cfg, &stats),
        Transition::Pending
    );
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Unchanged
    );
    assert_eq!(
        s.record(Check::Failed(Failure::Active), &host, &cfg, &stats),
        Transition::Changed
    );
    assert!(host.has(flags::FAILED_ACTIVE_HC));
    assert_eq!(stats.network_failure.get(), 0);
}

#[test]
fn a_new_host_failing_its_first_check_stays_unhealthy() {
    let store = Store::default();
    let stats = HealthStats::new(&store, "c");
    let cfg = config(3, 3);
    let host = new_host();
    let mut s = Session::default();
    assert_eq!(
        s.record(Check::Failed(Failure::Network), &host, &cfg, &stats),
        Transition::Unchanged
    );
    assert!(host.has(flags::FAILED_ACTIVE_HC));
    // No longer the first check: the healthy threshold applies.
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Pending
    );
    assert!(host.has(flags::FAILED_ACTIVE_HC));
}

#[test]
fn degraded_answers_flag_the_host_without_failing_it() {
    let store = Store::default();
    let stats = HealthStats::new(&store, "c");
    let cfg = config(1, 1);
    let host = new_host();
    let mut s = Session::default();
    s.record(Check::Healthy, &host, &cfg, &stats);
    assert_eq!(
        s.record(Check::Degraded, &host, &cfg, &stats),
        Transition::Changed
    );
    assert!(host.has(flags::DEGRADED_ACTIVE_HC) && !host.has(flags::FAILED_ACTIVE_HC));
    assert_eq!(stats.degraded.get(), 1);
    assert_eq!(
        s.record(Check::Healthy, &host, &cfg, &stats),
        Transition::Changed
    );
    assert_eq!(stats.degraded.get(), 0);
}

#[test]
fn an_immediate_failure_excludes_the_host_until_the_threshold_of_passes() {
    let store = Store::default();
    let checker = HealthChecker::new(Arc::new(config(2, 3)), &store, "c");
    let (cfg, stats) = (&checker.config, &checker.stats);
    let entry = HostEntry::new(crate::upstream::host::Host::new(
        crate::upstream::host::HostAddr::Tcp(([127, 0, 0, 1], 1).into()),
        None,
        1,
    ));
    let host = &entry.state;
    host.set(flags::FAILED_ACTIVE_HC);
    let mut s = Session::watching(host);
    assert_eq!(
        s.record(Check::Healthy, host, cfg, stats),
        Transition::Changed
    );
    // A second pass leaves the count of passes at the threshold.
    s.record(Check::Healthy, host, cfg, stats);

    assert!(checker.immediate_failure(&entry));
    assert!(host.has(flags::FAILED_ACTIVE_HC | flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL));
    assert_eq!(stats.healthy.get(), 0);
    assert_eq!(stats.passive_failure.get(), 1);
    assert_eq!(stats.failure.get(), 1);
    // Told again while failed: counted, nothing changes.
    assert!(!checker.immediate_failure(&entry));
    assert_eq!(stats.passive_failure.get(), 2);

    // The passes start over: two are needed, and the exclusion ends with the second.
    assert_eq!(
        s.record(Check::Healthy, host, cfg, stats),
        Transition::Pending
    );
    assert!(host.has(flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL));
    assert_eq!(
        s.record(Check::Healthy, host, cfg, stats),
        Transition::Changed
    );
    assert_eq!(host.flags(), 0);
    assert_eq!(stats.healthy.get(), 1);
}

#[test]
fn a_host_without_checks_ignores_an_immediate_failure() {
    let store = Store::default();
    let checker = HealthChecker::new(Arc::new(config(1, 1)), &store, "c");
    let mut host = crate::upstream::host::Host::new(
        crate::upstream::host::HostAddr::Tcp(([127, 0, 0, 1], 1).into()),
        None,
        1,
    );
    host.check.disabled = true;
    let entry = HostEntry::new(host);
    assert!(!checker.immediate_failure(&entry));
    assert_eq!(entry.state.flags(), 0);
    assert_eq!(checker.stats.passive_failure.get(), 0);
}

#[test]
fn intervals_follow_traffic_health_and_edges() {
    let cfg = config(2, 2);
    let s = Duration::from_secs;
    let b = |healthy, t, traffic| base_interval(&cfg, healthy, t, traffic);
    assert_eq!(b(true, Transition::Unchanged, true), s(10));
    assert_eq!(b(true, Transition::Pending, true), s(40));
    assert_eq!(b(false, Transition::Unchanged, true), s(20));
    assert_eq!(b(false, Transition::Changed, true), s(20));
    assert_eq!(b(false, Transition::Pending, true), s(30));
    // A cluster that never carried traffic is checked at the no-traffic intervals.
    assert_eq!(b(true, Transition::Unchanged, false), s(70));
    assert_eq!(b(true, Transition::Pending, false), s(60));
    assert_eq!(b(false, Transition::Unchanged, false), s(60));
}

#[test]
fn jitter_stays_within_its_bounds() {
    for _ in 0..200 {
        let d = with_jitter(Duration::from_millis(1000), 10, Duration::from_millis(50));
        assert!(d >= Duration::from_millis(1000) && d < Duration::from_millis(1150));
    }
    assert_eq!(
        with_jitter(Duration::ZERO, 0, Duration::ZERO),
        Duration::from_millis(1)
    );
}

#[test]
fn payloads_match_in_order_not_necessarily_adjacent() {
    let blocks = vec![b"HTTP".to_vec(), b"OK".to_vec()];
    assert!(payload_matches(&blocks, b"HTTP/1.1 200 OK"));
    assert!(!payload_matches(&blocks, b"OK HTTP"));
    assert!(!payload_matches(&blocks, b"HTTP/1.1 500"));
    assert!(payload_matches(&[], b"anything"));
    assert!(payload_matches(&[Vec::new()], b""));
}
