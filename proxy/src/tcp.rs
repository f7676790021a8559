//! `envoy.filters.network.tcp_proxy`: connect to a host of the chosen cluster (with up
//! to `max_connect_attempts` tries) and move bytes both ways until either side closes or
//! the connection idles out: between two TCP sockets, copied at first and then spliced in
//! the kernel (`splice.rs`); copied through buffers otherwise.

mod splice;

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::access_log::{AccessLogger, Entry};
use crate::config::circuit_breakers::Priority;
use crate::config::tcp_proxy::TcpProxy;
use crate::http::flags::{Flag, ResponseFlags};
use crate::io::{Activity, ActivityClock};
use crate::stats::{Counter, Gauge, GaugeGuard, Store};
use crate::upstream::connect::{self, ConnectError, Io};
use crate::upstream::host::HostAddr;
use crate::upstream::{lb, outlier, ClusterManager};

/// Bytes each direction of a copied (not spliced) connection reads and writes at a time.
/// Bulk throughput grows with it (the benchmark's tcp_bulk scenario: 8 KiB gave a quarter
/// of loopback, 256 KiB about four fifths). The price is memory: up to 512 KiB per
/// relayed connection (two zero-initialised buffers; pages that were never touched stay
/// out of RSS only when the allocator hands out fresh memory).
const RELAY_BUFFER: usize = 256 * 1024;

#[derive(Debug)]
pub struct TcpContext {
    pub config: Arc<TcpProxy>,
    pub clusters: Arc<ClusterManager>,
    pub stats: TcpStats,
    /// Its access logs (shared by its workers).
    pub access_logs: Arc<[AccessLogger]>,
}

/// `tcp.<stat_prefix>.*`
#[derive(Debug, Clone)]
pub struct TcpStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub idle_timeout: Counter,
    pub upstream_flush_active: Gauge,
}

impl TcpContext {
    pub fn new(config: Arc<TcpProxy>, clusters: Arc<ClusterManager>, store: &Store) -> Self {
        let p = &config.stat_prefix;
        let c = |s: &str| store.counter(&format!("tcp.{p}.{s}"));
        let stats = TcpStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_cx_no_route: c("downstream_cx_no_route"),
            idle_timeout: c("idle_timeout"),
            upstream_flush_active: store.gauge(&format!("tcp.{p}.upstream_flush_active")),
        };
        TcpContext {
            access_logs: crate::access_log::open(&config.access_logs),
            config,
            clusters,
            stats,
        }
    }

    fn pick_cluster(&self) -> &str {
        let cfg = &self.config;
        if cfg.clusters.len() == 1 {
            return &cfg.clusters[0].0;
        }
        let mut pick = fastrand::u64(0..cfg.total_weight);
        for (name, w) in &cfg.clusters {
            if pick < u64::from(*w) {
                return name;
            }
            pick -= u64::from(*w);
        }
        &cfg.clusters[cfg.clusters.len() - 1].0
    }
}

/// What a connection's access-log line reports besides its addresses and times. Only
/// the byte counts are noted when no access log wants the rest (no clones, no
/// `getsockname` per connection).
#[derive(Debug, Default)]
struct ConnInfo {
    logging: bool,
    flags: ResponseFlags,
    cluster: Option<Arc<str>>,
    /// The host of the latest connect attempt.
    host: Option<HostAddr>,
    /// The upstream connection's local address.
    local: Option<SocketAddr>,
    /// Why the latest connect attempt failed.
    transport_failure: Option<String>,
    /// (received from, sent to) the downstream.
    bytes: (u64, u64),
}

/// Proxies one connection. TCP has no graceful close, so a drain leaves it running until
/// it ends or the worker's drain deadline passes.
///
/// `peer` is the client; `destination` is where it connected (its original destination
/// when intercepted): the host of an ORIGINAL_DST cluster.
pub async fn proxy<I: Io>(
    downstream: I,
    peer: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    ctx: Arc<TcpContext>,
) {
    ctx.stats.downstream_cx_total.inc();
    let logging = !ctx.access_logs.is_empty();
    let start = logging.then(|| (SystemTime::now(), tokio::time::Instant::now()));
    let mut info = ConnInfo {
        logging,
        ..ConnInfo::default()
    };
    relay(downstream, destination, &ctx, &mut info).await;
    let (rx, tx) = info.bytes;
    ctx.stats.downstream_cx_rx_bytes_total.add(rx);
    ctx.stats.downstream_cx_tx_bytes_total.add(tx);
    let Some((started, at)) = start else {
        return;
    };
    let e = Entry {
        start_time: started,
        protocol: "-",
        request: None,
        status: 0,
        response: http::HeaderMap::new(),
        flags: info.flags,
        details: "".into(),
        transport_failure: info.transport_failure,
        bytes_received: rx,
        bytes_sent: tx,
        duration: at.elapsed(),
        upstream_host: info.host,
        upstream_local: info.local,
        upstream_cluster: info.cluster,
        downstream_local: destination,
        downstream_remote: peer,
        route_name: None,
    };
    for l in ctx.access_logs.iter() {
        l.log(&e);
    }
}

/// Connects upstream and relays until either side closes or the connection idles out,
/// noting in `info` what happened.
async fn relay<I: Io>(
    mut downstream: I,
    destination: Option<SocketAddr>,
    ctx: &TcpContext,
    info: &mut ConnInfo,
) {
    let Some(cluster) = ctx.clusters.get(ctx.pick_cluster()) else {
        ctx.stats.downstream_cx_no_route.inc();
        info.flags.push(Flag::NC);
        let _ = downstream.shutdown().await;
        return;
    };
    if info.logging {
        info.cluster = Some(cluster.name.clone());
    }
    // max_connections: over the limit, the downstream connection is closed (UO).
    let Some(_cx_slot) = cluster.breakers.at(Priority::Default).try_connection() else {
        cluster.stats.upstream_cx_overflow.inc();
        info.flags.push(Flag::UO);
        let _ = downstream.shutdown().await;
        return;
    };
    let mut upstream = None;
    let mut failed = 0;
    for _ in 0..ctx.config.max_connect_attempts {
        let Some(host) = cluster.pick_for(destination, lb::Context::default()) else {
            cluster.stats.upstream_cx_none_healthy.inc();
            info.flags.push(Flag::UH);
            break;
        };
        if info.logging {
            info.host = Some(host.addr.clone());
        }
        match connect::connect_stream(
            &host.addr,
            cluster.config.connect_timeout,
            cluster.config.bind,
        )
        .await
        {
            Ok(io) => {
                cluster.report(&host, outlier::Outcome::Connected);
                upstream = Some(io);
                break;
            }
            Err(e) => {
                cluster.report(
                    &host,
                    match e {
                        ConnectError::Timeout => outlier::Outcome::Timeout,
                        _ => outlier::Outcome::ConnectFailed,
                    },
                );
                cluster.stats.upstream_cx_connect_fail.inc();
                if matches!(e, ConnectError::Timeout) {
                    cluster.stats.upstream_cx_connect_timeout.inc();
                }
                failed += 1;
                info.flags.push(Flag::UF);
                if info.logging {
                    info.transport_failure = e.transport_failure();
                }
                tracing::debug!(cluster = %cluster.name, host = %host.addr, error = %e, "tcp_proxy connect failed");
            }
        }
    }
    let Some(upstream) = upstream else {
        if failed == ctx.config.max_connect_attempts {
            // Every attempt failed to connect, refused or timed out (Envoy: UF,URX
            // even for one attempt).
            info.flags.push(Flag::URX);
        }
        let _ = downstream.shutdown().await;
        return;
    };
    // A failed attempt before this one keeps its UF, as in Envoy.
    info.transport_failure = None;
    info.local = match &upstream {
        Either::Left(tcp) if info.logging => tcp.local_addr().ok(),
        _ => None,
    };
    cluster.stats.upstream_cx_total.inc();
    let _active = GaugeGuard::new(&cluster.stats.upstream_cx_active);
    // TCP on both sides: bulk is spliced, with no copies through user space. Anything
    // else (a Unix socket, a stream wrapped in TLS later) is copied through buffers.
    let down_tcp = (&mut downstream as &mut dyn Any).downcast_mut::<TcpStream>();
    let clock = match (down_tcp, upstream) {
        (Some(down), Either::Left(up)) => {
            let clock = ActivityClock::default();
            tokio::select! {
                _ = splice::relay(down, &up, &clock) => {}
                _ = clock.idle(ctx.config.idle_timeout) => ctx.stats.idle_timeout.inc(),
            }
            clock
        }
        (_, mut up) => {
            let mut down = Activity::new(downstream);
            let clock = down.clock();
            let copy = tokio::io::copy_bidirectional_with_sizes(
                &mut down,
                &mut up,
                RELAY_BUFFER,
                RELAY_BUFFER,
            );
            tokio::select! {
                _ = copy => {}
                _ = clock.idle(ctx.config.idle_timeout) => ctx.stats.idle_timeout.inc(),
            }
            clock
        }
    };
    info.bytes = clock.bytes();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{from_yaml, static_cluster};
    use tokio::io::AsyncReadExt;

    /// An echo upstream and a `tcp_proxy` context forwarding to it with `idle_timeout`.
    async fn echo_proxy(idle_timeout: &str) -> Arc<TcpContext> {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let store = Store::default();
        let clusters = Arc::new(ClusterManager::new(vec![static_cluster("c", addr)], &store));
        let cfg: TcpProxy = from_yaml::<
            envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy,
            _,
        >(
            &format!("stat_prefix: t\ncluster: c\nidle_timeout: {idle_timeout}"),
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        );
        Arc::new(TcpContext::new(Arc::new(cfg), clusters, &store))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes_a_quiet_connection() {
        let ctx = echo_proxy("600s").await;
        let (mut client, server_side) = tokio::io::duplex(1024);
        tokio::spawn(proxy(server_side, None, None, ctx.clone()));
        client.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        client.read_exact(&mut b).await.unwrap();
        let quiet_since = tokio::time::Instant::now();
        let n = client.read(&mut b).await.unwrap();
        assert_eq!(n, 0, "closed by the proxy");
        assert!(quiet_since.elapsed() >= std::time::Duration::from_secs(600));
        assert_eq!(ctx.stats.idle_timeout.get(), 1);
        // Bytes count however the connection ends (here: idled out, copied path).
        tokio::task::yield_now().await;
        assert_eq!(ctx.stats.downstream_cx_rx_bytes_total.get(), 1);
        assert_eq!(ctx.stats.downstream_cx_tx_bytes_total.get(), 1);
    }

    /// TCP on both sides takes the spliced path: bytes are echoed and the idle timeout
    /// still closes a quiet connection.
    #[tokio::test(start_paused = true)]
    async fn spliced_connection_relays_and_idles_out() {
        let ctx = echo_proxy("30s").await;
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (down, _) = front.accept().await.unwrap();
        let relay = tokio::spawn(proxy(down, None, None, ctx.clone()));
        let msg = vec![7u8; 100_000];
        client.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
        let quiet_since = tokio::time::Instant::now();
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).await.unwrap(), 0, "closed by the proxy");
        assert!(quiet_since.elapsed() >= std::time::Duration::from_secs(30));
        relay.await.unwrap();
        assert_eq!(ctx.stats.idle_timeout.get(), 1);
        assert_eq!(ctx.stats.downstream_cx_rx_bytes_total.get(), 100_000);
        assert_eq!(ctx.stats.downstream_cx_tx_bytes_total.get(), 100_000);
    }
}
