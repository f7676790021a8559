//! Live reconfiguration under load: while at least 500 requests/s go through Remora, the
//! control plane pushes 100 updates (clusters added and removed, routes moved between
//! them, endpoint churn, listener updates). No request may fail, and every change must
//! show within 100 ms of its push: route and endpoint changes in every response to a
//! request sent after that; a listener update on new connections (a probe connects until
//! it sees the new version or a later one), since connections of the old version drain as
//! in Envoy, serving until the client next uses them (their responses say
//! `connection: close`). "Within 100 ms" is judged by when a request was sent: on a
//! loaded machine an answer can take longer than that to come.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tests::control_plane::{
    ads_bootstrap, eds_cluster, endpoints_of, http_listener_with, route_to, ControlPlane,
    ResourceType,
};
use tests::proxy::Proxy;
use tests::upstream::HttpUpstream;

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::RouteConfiguration;

const RATE: u64 = 800;
const PUSHES: usize = 100;
const PUSH_EVERY: Duration = Duration::from_millis(30);
const VISIBLE_WITHIN: Duration = Duration::from_millis(100);

/// One response as the load generator saw it.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    /// When the response (or the failure) came.
    done: Instant,
    /// `Err`: the request failed (connection error, or a non-200 status).
    outcome: Result<Seen, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Seen {
    route: String,
    upstream: String,
    server: String,
}

/// What a push changed, and what responses must show once it is visible.
#[derive(Debug, Clone)]
enum Expect {
    Route(String),
    Upstream(String),
    Server(String),
    /// Not visible in responses (a cluster added ahead of use, or one no route uses).
    Nothing,
}

fn ingress(server_name: &str) -> envoy_types::pb::google::protobuf::Any {
    let any_port = "127.0.0.1:0".parse().expect("addr");
    http_listener_with(
        "ingress",
        any_port,
        "routes",
        &format!("server_name: {server_name}"),
    )
}

/// The listener version a `server` header names (`srvK`: the version pushed at push K).
fn listener_version(server: Option<&str>) -> Option<usize> {
    server?.strip_prefix("srv")?.parse().ok()
}

/// Connects afresh until a response shows listener version `k` or a later one (a later
/// push may replace it before a probe gets through). Returns how long after `pushed` the
/// last probe that still showed an older version was sent (zero if none did): as for
/// routes, staleness is measured by when a request was sent, not by how long the
/// loaded machine took to answer it.
async fn new_connections_see(addr: std::net::SocketAddr, k: usize, pushed: Instant) -> Duration {
    let deadline = pushed + Duration::from_secs(5);
    let mut stale = Duration::ZERO;
    loop {
        let sent = Instant::now();
        let r = tests::client::get(addr, "x", "/").await;
        if listener_version(r.header("server")).is_some_and(|v| v >= k) {
            return stale;
        }
        stale = sent.saturating_duration_since(pushed);
        assert!(
            Instant::now() < deadline,
            "listener version srv{k} (or a later one) not seen on new connections within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run(api: &str) {
    let ups = [
        HttpUpstream::start("a").await,
        HttpUpstream::start("b").await,
        HttpUpstream::start("c").await,
    ];
    let cp = ControlPlane::start_tcp().await;
    cp.set(CDS, vec![eds_cluster("pool0")]);
    cp.set(EDS, vec![endpoints_of("pool0", &[ups[0].addr])]);
    cp.set(LDS, vec![ingress("srv0")]);
    cp.set(RDS, vec![route_to("routes", "pool0", "r0")]);
    let yaml = ads_bootstrap(&cp, api);
    let proxy = tokio::task::spawn_blocking(move || {
        Proxy::start_with(&yaml, &["--concurrency", "2", "--drain-time-s", "2"])
    })
    .await
    .expect("proxy starts");
    let addr = proxy.addr("ingress");

    // The load: RATE requests/s from intended send times, over pooled keep-alive
    // connections.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (samples, stop) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = tokio::task::JoinSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let (client, samples) = (client.clone(), samples.clone());
                tasks.spawn(async move {
                    let sent = Instant::now();
                    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
                    let outcome = match client.get(uri).await {
                        Ok(r) if r.status() == 200 => {
                            let h = |n: &str| {
                                r.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_string()
                            };
                            let seen = Seen {
                                route: h("x-route"),
                                upstream: h("x-upstream"),
                                server: h("server"),
                            };
                            match r.into_body().collect().await {
                                Ok(_) => Ok(seen),
                                Err(e) => Err(format!("body: {e}")),
                            }
                        }
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    samples.lock().expect("samples").push(Sample {
                        sent,
                        done: Instant::now(),
                        outcome,
                    });
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // Warm up, then push.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut pushes: Vec<(Instant, Expect)> = Vec::new();
    let mut probes = Vec::new();
    let mut pool = 0usize;
    let mut upstream = 0usize;
    for k in 0..PUSHES {
        let at = Instant::now();
        let expect = match k % 5 {
            // A new cluster, its endpoints first (so it does not warm for long). The
            // route moves to it only once the proxy has it active: a route to a cluster
            // that is still warming answers 503 NC, in Envoy as in Remora, and on a
            // loaded machine warming can take longer than the push interval.
            0 => {
                let next = format!("pool{}", pool + 1);
                cp.upsert(EDS, vec![endpoints_of(&next, &[ups[upstream].addr])]);
                cp.upsert(CDS, vec![eds_cluster(&next)]);
                let deadline = at + Duration::from_secs(5);
                while proxy.server.clusters.get(&next).is_none() {
                    assert!(
                        Instant::now() < deadline,
                        "cluster {next} never became active"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Expect::Nothing
            }
            // The route moves to it.
            1 => {
                pool += 1;
                let tag = format!("r{k}");
                cp.set(RDS, vec![route_to("routes", &format!("pool{pool}"), &tag)]);
                Expect::Route(tag)
            }
            // The previous cluster goes.
            2 => {
                cp.remove(CDS, &[&format!("pool{}", pool - 1)]);
                cp.remove(EDS, &[&format!("pool{}", pool - 1)]);
                Expect::Nothing
            }
            // Endpoint churn on the cluster in use.
            3 => {
                upstream = (upstream + 1) % ups.len();
                cp.upsert(
                    EDS,
                    vec![endpoints_of(&format!("pool{pool}"), &[ups[upstream].addr])],
                );
                Expect::Upstream(ups[upstream].name.clone())
            }
            // Listener update (same address): a new server name, seen by new connections.
            _ => {
                let name = format!("srv{k}");
                cp.set(LDS, vec![ingress(&name)]);
                probes.push((k, tokio::spawn(new_connections_see(addr, k, at))));
                Expect::Server(name)
            }
        };
        pushes.push((at, expect));
        tokio::time::sleep(PUSH_EVERY).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.expect("load generator");
    let elapsed = started.elapsed() + Duration::from_millis(300);
    let samples = samples.lock().expect("samples").clone();

    let failures: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    let during = samples.iter().filter(|s| s.sent >= started).count();
    let rate = during as f64 / elapsed.as_secs_f64();
    // For each visible change: the latest request sent after the push that still saw an
    // older state. A response may show this push's value or that of any later push made
    // before the response came.
    let shows = |expect: &Expect, seen: &Seen| match expect {
        Expect::Route(r) => &seen.route == r,
        Expect::Upstream(u) => &seen.upstream == u,
        Expect::Server(s) => &seen.server == s,
        Expect::Nothing => true,
    };
    let mut worst = Duration::ZERO;
    let mut worst_push = None;
    for (k, p) in probes {
        let stale = p.await.expect("probe");
        if stale > worst {
            worst = stale;
            let seen = Seen {
                server: "(an older version, on a new connection)".into(),
                ..Seen::default()
            };
            worst_push = Some((k, pushes[k].1.clone(), seen));
        }
    }
    for (i, (at, expect)) in pushes.iter().enumerate() {
        // Listener updates were checked on new connections above.
        if matches!(expect, Expect::Nothing | Expect::Server(_)) {
            continue;
        }
        let kind = std::mem::discriminant(expect);
        for s in &samples {
            let Ok(seen) = &s.outcome else { continue };
            if s.sent < *at {
                continue;
            }
            let current = std::iter::once(expect).chain(
                pushes[i + 1..]
                    .iter()
                    .filter(|(t, e)| std::mem::discriminant(e) == kind && *t < s.done)
                    .map(|(_, e)| e),
            );
            if current.into_iter().any(|e| shows(e, seen)) {
                continue;
            }
            if s.sent - *at > worst {
                worst = s.sent - *at;
                worst_push = Some((i, expect.clone(), seen.clone()));
            }
        }
    }
    println!(
        "{api}: {} requests ({rate:.0}/s during pushes), {} pushes, {} failed, stale for at most {worst:?} after a push",
        samples.len(),
        pushes.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests (routed to no cluster: {}): {:?}",
        proxy.stat("http.ingress.no_cluster"),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    assert!(rate >= 500.0, "load was only {rate:.0} requests/s");
    assert!(
        worst < VISIBLE_WITHIN,
        "a change took {worst:?} to show (limit {VISIBLE_WITHIN:?}): push {worst_push:?}"
    );
    assert!(proxy.stat("cluster_manager.cds.update_rejected") == 0);
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_pushes_under_load_state_of_the_world() {
    run("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_pushes_under_load_delta() {
    run("DELTA_GRPC").await;
}
