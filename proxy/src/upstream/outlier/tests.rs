use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::config::outlier::Outlier;
use crate::upstream::host::{Host, HostAddr};

fn hosts(n: u16) -> Vec<Arc<HostEntry>> {
    (1..=n)
        .map(|p| {
            HostEntry::new(Host::new(
                HostAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], p))),
                None,
                1,
            ))
        })
        .collect()
}

fn config(f: impl FnOnce(&mut Outlier)) -> Outlier {
    let mut o = Outlier::try_from(
        &envoy_types::pb::envoy::config::cluster::v3::OutlierDetection::default(),
    )
    .expect("defaults");
    o.max_ejection_percent = 100;
    f(&mut o);
    o
}

fn stat(store: &Store, name: &str) -> u64 {
    store
        .counter(&format!("cluster.c.outlier_detection.{name}"))
        .get()
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_ejects_and_time_returns_with_backoff() {
    let store = Store::default();
    let d = Detector::new(config(|_| {}), &store, "c");
    let hs = hosts(3);
    for i in 0..4 {
        assert!(!d.report(&hs[0], Outcome::Status(503), &hs), "failure {i}");
    }
    // A success in between restarts the run.
    d.report(&hs[0], Outcome::Status(200), &hs);
    for _ in 0..4 {
        d.report(&hs[0], Outcome::Status(500), &hs);
    }
    assert!(
        d.report(&hs[0], Outcome::Status(500), &hs),
        "fifth in a row ejects"
    );
    assert!(hs[0].state.has(FAILED_OUTLIER_CHECK));
    assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 1);
    assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);
    assert_eq!(stat(&store, "ejections_enforced_total"), 1);

    // Base ejection time 30 s: still out at 20 s, back at 30 s.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(!d.sweep(&hs));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(d.sweep(&hs), "returned");
    assert!(!hs[0].state.has(FAILED_OUTLIER_CHECK));

    // Ejected again at once: now for twice the base time.
    for _ in 0..5 {
        d.report(&hs[0], Outcome::ConnectFailed, &hs);
    }
    assert!(hs[0].state.has(FAILED_OUTLIER_CHECK));
    assert_eq!(hs[0].state.outlier.ejections(), 2);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!d.sweep(&hs), "still out after 30 s");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(d.sweep(&hs), "back after 60 s");
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_limits_ejections() {
    let store = Store::default();
    let d = Detector::new(config(|o| o.max_ejection_percent = 10), &store, "c");
    let hs = hosts(3);
    for _ in 0..5 {
        d.report(&hs[0], Outcome::Status(502), &hs);
    }
    // One of three is 33%, above 10%: not ejected. Five 502s are both five gateway
    // failures and five 5xx: two detections, two overflows.
    assert!(!hs[0].state.has(FAILED_OUTLIER_CHECK));
    assert_eq!(stat(&store, "ejections_overflow"), 2);
    let d = Detector::new(
        config(|o| {
            o.max_ejection_percent = 10;
            o.always_eject_one_host = true;
        }),
        &store,
        "c",
    );
    for _ in 0..5 {
        d.report(&hs[1], Outcome::Status(502), &hs);
    }
    assert!(hs[1].state.has(FAILED_OUTLIER_CHECK));
}

#[tokio::test(start_paused = true)]
async fn gateway_failures_are_detected_but_not_enforced_by_default() {
    let store = Store::default();
    let d = Detector::new(config(|o| o.consecutive_5xx = 100), &store, "c");
    let hs = hosts(2);
    for _ in 0..5 {
        d.report(&hs[0], Outcome::Timeout, &hs);
    }
    assert_eq!(
        stat(&store, "ejections_detected_consecutive_gateway_failure"),
        1
    );
    assert_eq!(
        stat(&store, "ejections_enforced_consecutive_gateway_failure"),
        0
    );
    assert!(!hs[0].state.has(FAILED_OUTLIER_CHECK));
}

#[tokio::test(start_paused = true)]
async fn split_mode_counts_local_origin_failures_apart() {
    let store = Store::default();
    let d = Detector::new(
        config(|o| o.split_external_local_origin_errors = true),
        &store,
        "c",
    );
    let hs = hosts(2);
    for _ in 0..4 {
        d.report(&hs[0], Outcome::ConnectFailed, &hs);
    }
    // An answer (even a 5xx) means the connection worked: the local run ends.
    d.report(&hs[0], Outcome::Status(500), &hs);
    for _ in 0..4 {
        d.report(&hs[0], Outcome::Reset, &hs);
    }
    assert!(!hs[0].state.has(FAILED_OUTLIER_CHECK));
    d.report(&hs[0], Outcome::Reset, &hs);
    assert!(hs[0].state.has(FAILED_OUTLIER_CHECK));
    assert_eq!(
        stat(
            &store,
            "ejections_enforced_consecutive_local_origin_failure"
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_the_outlier_each_interval() {
    let store = Store::default();
    let d = Detector::new(config(|o| o.consecutive_5xx = 1000), &store, "c");
    let hs = hosts(5);
    for h in &hs[1..] {
        for _ in 0..100 {
            d.report(h, Outcome::Status(200), &hs);
        }
    }
    for i in 0..100 {
        let status = if i % 2 == 0 { 200 } else { 500 };
        d.report(&hs[0], Outcome::Status(status), &hs);
    }
    assert!(d.sweep(&hs));
    assert!(hs[0].state.has(FAILED_OUTLIER_CHECK));
    assert_eq!(stat(&store, "ejections_enforced_success_rate"), 1);
    // Too little traffic in the next interval: nothing more happens.
    assert!(!d.sweep(&hs));
}
