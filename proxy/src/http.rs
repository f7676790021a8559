//! The HTTP connection manager: serving downstream connections (HTTP/1.1 and HTTP/2),
//! routing each request, forwarding it upstream and answering locally when that fails.
//!
//! Stages per request: `handler` (validate, normalize, route, direct/redirect) ->
//! `forward` (cluster, host, pooled connection, rewrites, timeout) -> back through
//! `handler` (response headers, stats). `local_reply` is the only place error responses
//! are made.

mod attempts;
pub mod body;
pub mod fault;
pub mod flags;
pub mod forward;
pub mod grpc_timeout;
pub mod h1;
pub mod handler;
pub mod hash_policy;
pub mod headers;
pub mod local_reply;
pub mod mirror;
pub mod redirect;
pub mod replay;
pub mod retry;
pub mod server;
pub mod stream_info;
#[cfg(test)]
mod tests;
pub mod timeouts;
pub mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::access_log::AccessLogger;
use crate::config::hcm::HttpManager;
use crate::drain::DrainWatch;
use crate::routing::Routes;
use crate::stats::{Counter, Gauge, Store};
use crate::upstream::pool::Pools;
use crate::upstream::ClusterManager;

/// Everything a request on one filter chain needs, built with the config.
#[derive(Debug)]
pub struct HttpContext {
    pub config: Arc<HttpManager>,
    /// The route table in force (inline, or the latest RDS version).
    pub routes: Routes,
    pub clusters: Arc<ClusterManager>,
    pub stats: HcmStats,
    /// This host's address: Envoy appends it to `x-forwarded-for` for loopback peers.
    pub local_address: IpAddr,
    /// The listener's `per_connection_buffer_limit_bytes`: the HTTP/2 flow-control window
    /// granted to each downstream stream and connection.
    pub buffer_limit: u32,
    /// The connection manager's fault filters (shared by its workers).
    pub faults: Vec<fault::FaultFilter>,
    /// Its access logs (shared by its workers).
    pub access_logs: Arc<[AccessLogger]>,
}

impl HttpContext {
    pub fn with_buffer_limit(mut self, bytes: u32) -> Self {
        self.buffer_limit = bytes;
        self
    }

    pub fn new(
        config: Arc<HttpManager>,
        routes: Routes,
        clusters: Arc<ClusterManager>,
        store: &Store,
        local_address: IpAddr,
    ) -> Self {
        let stats = HcmStats::new(store, &config.stat_prefix);
        let faults = fault::FaultFilter::from_chain(&config.filters, store, &config.stat_prefix);
        let access_logs = crate::access_log::open(&config.access_logs);
        HttpContext {
            faults,
            access_logs,
            config,
            routes,
            clusters,
            stats,
            local_address,
            buffer_limit: 1024 * 1024,
        }
    }
}

/// The downstream connection a request arrived on, plus the worker's upstream pools.
#[derive(Debug)]
pub struct Downstream {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub pools: Arc<Pools>,
    /// The peer's address as a header value (`x-envoy-external-address`), made once per
    /// connection.
    pub peer_header: Option<http::HeaderValue>,
    /// What `use_remote_address` appends to `x-forwarded-for`: the peer, or this host's
    /// address for loopback peers (as Envoy does).
    pub xff_hop: Option<http::HeaderValue>,
    /// The listener's drain, as this connection sees it.
    pub drain: DrainWatch,
}

impl Downstream {
    pub fn new(
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        pools: Arc<Pools>,
        local_address: IpAddr,
        drain: DrainWatch,
    ) -> Self {
        let ip = peer.map(|p| crate::config::common::canonical(p.ip()));
        let header = |ip: IpAddr| http::HeaderValue::from_str(&ip.to_string()).ok();
        Downstream {
            peer,
            local,
            pools,
            peer_header: ip.and_then(header),
            xff_hop: ip.and_then(|ip| header(if ip.is_loopback() { local_address } else { ip })),
            drain,
        }
    }
}

/// `http.<stat_prefix>.*`
#[derive(Debug, Clone)]
pub struct HcmStats {
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_xx: [Counter; 5],
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_http2_total: Counter,
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_rq_ws_on_non_ws_route: Counter,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
    pub downstream_rq_timeout: Counter,
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_max_duration_reached: Counter,
}

impl HcmStats {
    pub fn new(store: &Store, prefix: &str) -> Self {
        let c = |s: &str| store.counter(&format!("http.{prefix}.{s}"));
        HcmStats {
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_active: store.gauge(&format!("http.{prefix}.downstream_rq_active")),
            downstream_rq_xx: [
                c("downstream_rq_1xx"),
                c("downstream_rq_2xx"),
                c("downstream_rq_3xx"),
                c("downstream_rq_4xx"),
                c("downstream_rq_5xx"),
            ],
            downstream_rq_http1_total: c("downstream_rq_http1_total"),
            downstream_rq_http2_total: c("downstream_rq_http2_total"),
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: store.gauge(&format!("http.{prefix}.downstream_cx_active")),
            downstream_cx_idle_timeout: c("downstream_cx_idle_timeout"),
            downstream_rq_ws_on_non_ws_route: c("downstream_rq_ws_on_non_ws_route"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_direct_response: c("rq_direct_response"),
            rq_redirect: c("rq_redirect"),
            downstream_rq_timeout: c("downstream_rq_timeout"),
            downstream_rq_idle_timeout: c("downstream_rq_idle_timeout"),
            downstream_rq_max_duration_reached: c("downstream_rq_max_duration_reached"),
        }
    }

    pub fn response(&self, status: u16) {
        if let Some(c) = self
            .downstream_rq_xx
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
    }
}
