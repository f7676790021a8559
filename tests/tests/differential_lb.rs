//! Load balancing and outlier detection, differentially: Envoy 1.40 and Remora on the
//! same config in front of the same four upstreams (`a`..`d`, named in `x-upstream`).
//!
//! - RING_HASH and MAGLEV: Remora builds Envoy's tables, so every key must land on the
//!   *same* upstream in both proxies, and stay there.
//! - Cookie hashing: a generated `set-cookie` of the same shape, and stickiness with it.
//! - Locality weights 9:1 and priority failover (P0 half unhealthy: 70/30 with the
//!   overprovisioning factor; P0 all unhealthy: everything to P1): the same split within
//!   a tolerance.
//! - Outlier detection: a host that refuses connections is ejected after exactly three
//!   failures in both, with the same `outlier_detection.*` stats.

use std::collections::BTreeMap;

use tests::client::Conn;
use tests::process::{start_envoy_and_remora, wait_for_stat, ProxyProcess};
use tests::render;
use tests::upstream::{closed_port, HttpUpstream};

const CONFIG: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {prefix: /ring/}
                route: {cluster: ring, hash_policy: [{header: {header_name: x-user}}]}
              - match: {prefix: /maglev/}
                route: {cluster: maglev, hash_policy: [{header: {header_name: x-user}}]}
              - match: {prefix: /source/}
                route: {cluster: ring, hash_policy: [{connection_properties: {source_ip: true}}]}
              - match: {prefix: /cookie/}
                route: {cluster: ring, hash_policy: [{cookie: {name: lb, ttl: 60s, path: /}}]}
              - match: {prefix: /locality/}
                route: {cluster: locality}
              - match: {prefix: /half/}
                route: {cluster: half}
              - match: {prefix: /failover/}
                route: {cluster: failover}
              - match: {prefix: /outlier/}
                route: {cluster: outlier}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: ring
    lb_policy: RING_HASH
    load_assignment: {cluster_name: ring, endpoints: [{lb_endpoints: [{{all}}]}]}
  - name: maglev
    lb_policy: MAGLEV
    load_assignment: {cluster_name: maglev, endpoints: [{lb_endpoints: [{{all}}]}]}
  - name: locality
    common_lb_config: {locality_weighted_lb_config: {}}
    load_assignment:
      cluster_name: locality
      endpoints:
      - {locality: {zone: east}, load_balancing_weight: 9, lb_endpoints: [{{a}}, {{b}}]}
      - {locality: {zone: west}, load_balancing_weight: 1, lb_endpoints: [{{c}}]}
  - name: half
    load_assignment:
      cluster_name: half
      endpoints:
      - {priority: 0, lb_endpoints: [{{a}}, {endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{closed}}}}}, health_status: UNHEALTHY}]}
      - {priority: 1, lb_endpoints: [{{c}}, {{d}}]}
  - name: failover
    load_assignment:
      cluster_name: failover
      endpoints:
      - {priority: 0, lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{pa}}}}}, health_status: UNHEALTHY}]}
      - {priority: 1, lb_endpoints: [{{b}}]}
  - name: outlier
    # Envoy otherwise merges health changes within a second before its workers see them;
    # Remora applies them at once.
    common_lb_config: {update_merge_window: 0s}
    outlier_detection: {consecutive_5xx: 3, max_ejection_percent: 100, interval: 0.1s, base_ejection_time: 0.5s}
    load_assignment:
      cluster_name: outlier
      endpoints: [{lb_endpoints: [{{a}}, {endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{closed}}}}}}]}]
"#;

fn endpoint(port: u16) -> String {
    format!(
        "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}"
    )
}

/// The upstream that answered, or the status when none did.
async fn who(c: &mut Conn, path: &str, headers: &[(&str, &str)]) -> String {
    let r = c.get("h", path, headers).await;
    match r.header("x-upstream") {
        Some(u) => u.to_owned(),
        None => r.status.as_u16().to_string(),
    }
}

async fn spread(p: &ProxyProcess, path: &str, n: usize) -> BTreeMap<String, usize> {
    spread_paced(p, path, n, 0).await
}

async fn spread_paced(
    p: &ProxyProcess,
    path: &str,
    n: usize,
    pace_ms: u64,
) -> BTreeMap<String, usize> {
    let mut c = Conn::h1(p.listener("edge")).await;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        if pace_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(pace_ms)).await;
        }
        *out.entry(who(&mut c, path, &[]).await).or_default() += 1;
    }
    out
}

fn share(s: &BTreeMap<String, usize>, keys: &[&str]) -> f64 {
    let total: usize = s.values().sum();
    let part: usize = keys.iter().filter_map(|k| s.get(*k)).sum();
    part as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_matches_envoy() {
    let ups = [
        HttpUpstream::start("a").await,
        HttpUpstream::start("b").await,
        HttpUpstream::start("c").await,
        HttpUpstream::start("d").await,
    ];
    let port = |i: usize| ups[i].addr.port();
    let all = (0..4)
        .map(|i| endpoint(port(i)))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = render(
        CONFIG,
        &[
            ("all", all),
            ("a", endpoint(port(0))),
            ("b", endpoint(port(1))),
            ("c", endpoint(port(2))),
            ("d", endpoint(port(3))),
            ("pa", port(0).to_string()),
            ("closed", closed_port().port().to_string()),
        ],
    );
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;

    // Consistent hashing: the same upstream per key in both proxies, every time.
    for prefix in ["/ring/", "/maglev/"] {
        let mut ce = Conn::h1(envoy.listener("edge")).await;
        let mut cr = Conn::h1(remora.listener("edge")).await;
        let mut used = std::collections::BTreeSet::new();
        for k in 0..40 {
            let user = format!("user-{k}");
            let h = [("x-user", user.as_str())];
            let e = who(&mut ce, prefix, &h).await;
            let r = who(&mut cr, prefix, &h).await;
            assert_eq!(r, e, "{prefix} key {user}: remora vs envoy");
            assert_eq!(who(&mut cr, prefix, &h).await, r, "{prefix} {user} sticks");
            used.insert(r);
        }
        assert!(used.len() >= 3, "{prefix} spreads keys: {used:?}");
    }
    let mut ce = Conn::h1(envoy.listener("edge")).await;
    let mut cr = Conn::h1(remora.listener("edge")).await;
    assert_eq!(
        who(&mut cr, "/source/", &[]).await,
        who(&mut ce, "/source/", &[]).await,
        "source-IP hash"
    );

    // Cookie hashing: the generated cookie, then stickiness with it.
    for p in [&envoy, &remora] {
        let mut c = Conn::h1(p.listener("edge")).await;
        let r = c.get("h", "/cookie/", &[]).await;
        let set = r.header("set-cookie").expect("set-cookie").to_owned();
        let value = set
            .strip_prefix("lb=\"")
            .and_then(|s| s.split_once('"'))
            .map(|(v, rest)| (v.to_owned(), rest.to_owned()))
            .expect("quoted value");
        assert_eq!(value.0.len(), 16, "{set}");
        assert!(value.0.chars().all(|c| c.is_ascii_hexdigit()), "{set}");
        assert_eq!(value.1, "; Max-Age=60; Path=/; HttpOnly");
        let first = r.header("x-upstream").expect("upstream").to_owned();
        let cookie = format!("lb={}", value.0);
        for _ in 0..5 {
            let again = c.get("h", "/cookie/", &[("cookie", &cookie)]).await;
            assert!(again.header("set-cookie").is_none());
            assert_eq!(again.header("x-upstream"), Some(first.as_str()));
        }
    }

    // Locality weights 9:1.
    let (e, r) = (
        spread(&envoy, "/locality/", 600).await,
        spread(&remora, "/locality/", 600).await,
    );
    for (name, s) in [("envoy", &e), ("remora", &r)] {
        let west = share(s, &["c"]);
        assert!(
            (0.06..0.14).contains(&west),
            "{name} west share {west}: {s:?}"
        );
    }

    // Priority failover: P0 half unhealthy takes 70%, P1 30%; P0 all unhealthy, none.
    let (e, r) = (
        spread(&envoy, "/half/", 600).await,
        spread(&remora, "/half/", 600).await,
    );
    for (name, s) in [("envoy", &e), ("remora", &r)] {
        let p1 = share(s, &["c", "d"]);
        assert!((0.24..0.36).contains(&p1), "{name} P1 share {p1}: {s:?}");
        assert_eq!(share(s, &["a", "c", "d"]), 1.0, "{name}: {s:?}");
    }
    let (e, r) = (
        spread(&envoy, "/failover/", 50).await,
        spread(&remora, "/failover/", 50).await,
    );
    assert_eq!(r, BTreeMap::from([("b".to_owned(), 50)]));
    assert_eq!(e, r, "failover");

    // Outlier detection: three failures (503, connection refused) eject the bad host; it
    // returns after the base ejection time and is ejected again after three more. Stats
    // are read right after each proxy's rounds (the second ejection is short too).
    let names = [
        "cluster.outlier.outlier_detection.ejections_enforced_consecutive_5xx",
        "cluster.outlier.outlier_detection.ejections_detected_consecutive_5xx",
        "cluster.outlier.outlier_detection.ejections_enforced_total",
        "cluster.outlier.outlier_detection.ejections_active",
        "cluster.outlier.outlier_detection.ejections_overflow",
        "cluster.outlier.membership_healthy",
        "cluster.half.membership_healthy",
        "cluster.half.membership_total",
        "cluster.ring.membership_change",
    ];
    let mut stats = Vec::new();
    for (name, p) in [("envoy", &envoy), ("remora", &remora)] {
        // Paced (see below), but lightly: the 30 requests must end within the 0.5 s
        // ejection. On a loaded machine Envoy's workers can see the ejection several
        // requests after it was decided.
        let first = spread_paced(p, "/outlier/", 30, 5).await;
        assert_eq!(
            first,
            BTreeMap::from([("503".to_owned(), 3), ("a".to_owned(), 27)]),
            "{name}"
        );
        let returned =
            wait_for_stat(p, "cluster.outlier.outlier_detection.ejections_active", 0).await;
        assert!(returned, "{name}: the ejected host returns");
        // Envoy applies an ejection or a return to its workers' load balancers a moment
        // after deciding it (posts to the main thread, then to the workers): paced
        // requests see each decision in both proxies.
        let second = spread_paced(p, "/outlier/", 10, 25).await;
        assert_eq!(
            second,
            BTreeMap::from([("503".to_owned(), 3), ("a".to_owned(), 7)]),
            "{name}"
        );
        let admin = p.admin;
        let body = tokio::task::spawn_blocking(move || tests::process::admin_get(admin, "/stats"))
            .await
            .expect("stats")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let values: Vec<u64> = names
            .iter()
            .map(|n| tests::process::stat_in(&body, n))
            .collect();
        stats.push(values);
    }
    assert_eq!(stats[1], [2, 2, 2, 1, 0, 1, 3, 4, 1], "remora {names:?}");
    assert_eq!(stats[0], stats[1], "envoy vs remora {names:?}");
}
