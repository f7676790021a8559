//! xDS apply: the fake control plane of the test support (delta ADS, as Istio uses)
//! pushes a mesh-sized config to a proxy that started with one cluster: N EDS clusters
//! with 3 endpoints each, their endpoints, and a route configuration with one virtual
//! host per cluster on the one HTTP listener. Measured per proxy: push to ACK (the last
//! of the CDS, EDS and RDS ACKs), push to the first request routed to the last cluster
//! (polled about every millisecond), the proxy's CPU time over the apply, and RSS
//! before and after. On the largest config, one endpoint change is pushed and timed the
//! same way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::google::protobuf::Any;
use tests::control_plane::{
    ads_bootstrap, eds_cluster, endpoints_of, http_listener, route, ControlPlane, ResourceType,
};
use tests::upstream::HttpUpstream;

use super::Ctx;
use crate::procstat;
use crate::report::{Sample, Scenario};
use crate::targets::{self, Target};

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::RouteConfiguration;

/// How long a push may take before the run gives up on it.
const PUSH_LIMIT: Duration = Duration::from_secs(120);

fn mesh_listener() -> Any {
    http_listener("mesh", ([127, 0, 0, 1], 0).into(), "mesh-routes")
}

/// One virtual host per cluster (`svcN` -> cluster `svcN`), plus the seed.
fn mesh_routes(clusters: usize) -> Any {
    let mut vhosts = vec![
        "{name: seed, domains: [seed], routes: [{match: {prefix: /}, route: {cluster: seed}}]}"
            .to_string(),
    ];
    vhosts.extend((0..clusters).map(|i| {
        format!("{{name: svc{i}, domains: [svc{i}], routes: [{{match: {{prefix: /}}, route: {{cluster: svc{i}}}}}]}}")
    }));
    route(&format!(
        "name: mesh-routes\nvirtual_hosts: [{}]",
        vhosts.join(", ")
    ))
}

/// Polls `addr` with `Host: host` (on one keep-alive connection) until a 200 from
/// upstream `want` (any upstream when `None`); returns when that first happened.
async fn first_routed(addr: SocketAddr, host: String, want: Option<String>) -> Option<Instant> {
    let deadline = Instant::now() + PUSH_LIMIT;
    let mut conn = tests::client::Conn::h1(addr).await;
    while Instant::now() < deadline {
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), conn.get(&host, "/", &[])).await
        {
            let ok = r.status == 200
                && want
                    .as_deref()
                    .is_none_or(|w| r.header("x-upstream") == Some(w));
            if ok {
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    None
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the scenario on `t` for each size in `sizes`, on fresh proxies.
pub fn run(ctx: &mut Ctx, t: Target, rep: u32, sizes: &[usize]) -> Result<(), String> {
    let Some(launch) = ctx.launch(t) else {
        return Ok(());
    };
    let load_cpu = ctx.load_cpu;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || procstat::pin_current_thread(load_cpu))
        .build()
        .map_err(|e| e.to_string())?;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut samples = Vec::new();
    for &n in sizes {
        ctx.log(&format!("rep {rep} {}: xDS push of {n} clusters", t.name()));
        let (ups, cp) = rt.block_on(async {
            let mut ups = Vec::new();
            for name in ["a", "b", "c", "d"] {
                ups.push(HttpUpstream::start(name).await);
            }
            (ups, ControlPlane::start_tcp().await)
        });
        let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
        cp.set(CDS, vec![eds_cluster("seed")]);
        cp.set(EDS, vec![endpoints_of("seed", &addrs[..1])]);
        cp.set(LDS, vec![mesh_listener()]);
        cp.set(RDS, vec![mesh_routes(0)]);
        let p = targets::spawn(launch, &ads_bootstrap(&cp, "DELTA_GRPC"), ctx.proxy_cpu)?;
        let mesh = *targets::listeners(launch.name, p.admin)?
            .get("mesh")
            .ok_or("no mesh listener")?;
        std::thread::sleep(Duration::from_millis(300));
        let pid = p.pid();
        let rss_before = procstat::memory_kib(pid).0;
        // Build the push before timing it.
        let clusters: Vec<Any> = (0..n).map(|i| eds_cluster(&format!("svc{i}"))).collect();
        let endpoints: Vec<Any> = (0..n)
            .map(|i| endpoints_of(&format!("svc{i}"), &addrs[..3]))
            .collect();
        let routes = mesh_routes(n);
        let seed = (eds_cluster("seed"), endpoints_of("seed", &addrs[..1]));
        let cpu_before = procstat::cpu_ns(pid);
        let (push_at, acked, routed) = rt.block_on(async {
            let poll = tokio::spawn(first_routed(mesh, format!("svc{}", n - 1), None));
            let at = Instant::now();
            let eds_v = cp.set(EDS, [endpoints, vec![seed.1]].concat());
            let cds_v = cp.set(CDS, [clusters, vec![seed.0]].concat());
            let rds_v = cp.set(RDS, vec![routes]);
            let acks = tokio::time::timeout(PUSH_LIMIT, async {
                cp.wait_ack(&cds_v, CDS).await;
                cp.wait_ack(&eds_v, EDS).await;
                cp.wait_ack(&rds_v, RDS).await;
                Instant::now()
            })
            .await
            .ok();
            (at, acks, poll.await.ok().flatten())
        });
        let (Some(acked), Some(routed)) = (acked, routed) else {
            return Err(format!(
                "{}: the {n}-cluster push was not applied",
                t.name()
            ));
        };
        std::thread::sleep(Duration::from_secs(1));
        let cpu_ns = procstat::cpu_ns(pid).saturating_sub(cpu_before);
        let rss_after = procstat::memory_kib(pid).0;
        let mut s = Sample::new(Scenario::Xds, format!("{n} clusters"), t, rep);
        s.set("ack_ms", ms(acked - push_at))
            .set("routed_ms", ms(routed - push_at))
            .set("cpu_ms", cpu_ns as f64 / 1e6)
            .set("rss_before_mib", rss_before as f64 / 1024.0)
            .set("rss_after_mib", rss_after as f64 / 1024.0)
            .set(
                "rss_growth_mib",
                rss_after.saturating_sub(rss_before) as f64 / 1024.0,
            );
        samples.push(s);

        if n == largest {
            // One endpoint change: svc{n/2} moves to upstream d.
            let target = format!("svc{}", n / 2);
            let (at, acked, routed) = rt.block_on(async {
                let poll = tokio::spawn(first_routed(mesh, target.clone(), Some("d".into())));
                tokio::time::sleep(Duration::from_millis(50)).await;
                let at = Instant::now();
                let v = cp.upsert(EDS, vec![endpoints_of(&target, &addrs[3..4])]);
                let acked = tokio::time::timeout(PUSH_LIMIT, cp.wait_ack(&v, EDS))
                    .await
                    .ok()
                    .map(|_| Instant::now());
                (at, acked, poll.await.ok().flatten())
            });
            let (Some(acked), Some(routed)) = (acked, routed) else {
                return Err(format!("{}: the endpoint change was not applied", t.name()));
            };
            let mut s = Sample::new(
                Scenario::Xds,
                format!("one endpoint change ({n} clusters)"),
                t,
                rep,
            );
            s.set("ack_ms", ms(acked - at))
                .set("routed_ms", ms(routed - at));
            samples.push(s);
        }
        p.stop(Duration::from_secs(10))?;
        drop(ups);
        drop(cp);
    }
    ctx.samples.extend(samples);
    Ok(())
}
