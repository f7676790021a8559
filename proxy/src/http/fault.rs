//! The fault filter at run time: for a routed request, the settings in force (the
//! route's, virtual host's or route configuration's `typed_per_filter_config`, else the
//! filter's own), whether the request qualifies (upstream cluster, header matchers,
//! downstream node, `max_active_faults`), then the delay and the abort, each drawn
//! against its percentage or taken from the `x-envoy-fault-*` headers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use super::flags::{Flag, ResponseFlags};
use super::local_reply::Reply;
use crate::config::fault::{AbortKind, DelayKind, Fault};
use crate::config::hcm::{FilterKind, HttpFilter};
use crate::config::per_filter::{Override, PerFilter};
use crate::stats::{Counter, Gauge, Store};
use crate::upstream::pool::ProxyBody;

const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
const DELAY_PERCENT_HEADER: &str = "x-envoy-fault-delay-request-percentage";
const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
const ABORT_PERCENT_HEADER: &str = "x-envoy-fault-abort-request-percentage";
const DOWNSTREAM_NODE: &str = "x-envoy-downstream-service-node";

/// One fault filter of a connection manager, shared by its workers.
#[derive(Debug)]
pub struct FaultFilter {
    name: String,
    config: Arc<Fault>,
    disabled: bool,
    active: AtomicU64,
    stats: FaultStats,
}

/// `http.<prefix>.fault.*`
#[derive(Debug)]
struct FaultStats {
    delays_injected: Counter,
    aborts_injected: Counter,
    faults_overflow: Counter,
    active_faults: Gauge,
}

/// The route's levels of per-filter settings, most specific first.
pub struct Levels<'a>(pub [&'a PerFilter; 3]);

/// A request the filter delayed, holding its place among the active faults until it
/// is answered.
pub struct ActiveFault<'a>(&'a FaultFilter);

impl Drop for ActiveFault<'_> {
    fn drop(&mut self) {
        let n = self.0.active.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.stats.active_faults.set(n as i64);
    }
}

impl FaultFilter {
    pub fn from_chain(filters: &[HttpFilter], store: &Store, prefix: &str) -> Vec<FaultFilter> {
        filters
            .iter()
            .map(|f| match &f.kind {
                FilterKind::Fault(config) => {
                    let c = |s: &str| store.counter(&format!("http.{prefix}.fault.{s}"));
                    let stats = FaultStats {
                        delays_injected: c("delays_injected"),
                        aborts_injected: c("aborts_injected"),
                        faults_overflow: c("faults_overflow"),
                        active_faults: store.gauge(&format!("http.{prefix}.fault.active_faults")),
                    };
                    FaultFilter {
                        name: f.name.clone(),
                        config: config.clone(),
                        disabled: f.disabled,
                        active: AtomicU64::new(0),
                        stats,
                    }
                }
            })
            .collect()
    }

    /// Runs the filter on a request routed to `cluster` (if named): waits out a delay
    /// (returning the request's place among the active faults), and answers with the
    /// abort (`Err`) when one fires.
    pub async fn run<'a>(
        &'a self,
        headers: &HeaderMap,
        cluster: Option<&str>,
        levels: &Levels<'_>,
        grpc: bool,
        flags: &mut ResponseFlags,
    ) -> Result<Option<ActiveFault<'a>>, Response<ProxyBody>> {
        let over = levels.0.iter().find_map(|l| l.get(&self.name));
        let config = match over {
            Some(Override::Disabled) => return Ok(None),
            Some(Override::Fault(f)) => f,
            Some(Override::Enabled) => &self.config,
            None if self.disabled => return Ok(None),
            None => &self.config,
        };
        if !applies(config, headers, cluster) {
            return Ok(None);
        }
        let delay = config.delay.and_then(|d| {
            let wait = match d.kind {
                DelayKind::Fixed(t) => t,
                DelayKind::Header => Duration::from_millis(header_u64(headers, DELAY_HEADER)?),
            };
            let share = header_share(headers, DELAY_PERCENT_HEADER, d.per_million, d.scale);
            draw(share).then_some(wait)
        });
        let abort = config.abort.as_ref().and_then(|a| {
            let (status, grpc_status) = match a.kind {
                AbortKind::Http(s) => (s, None),
                AbortKind::Grpc(g) => (StatusCode::OK, Some(g)),
                AbortKind::Header => header_abort(headers)?,
            };
            let share = header_share(headers, ABORT_PERCENT_HEADER, a.per_million, a.scale);
            draw(share).then(|| (status, grpc_status, a.body.clone()))
        });
        if delay.is_none() && abort.is_none() {
            return Ok(None);
        }
        // max_active_faults: a fault that would exceed it is not injected.
        let limit = config.max_active_faults.map_or(u64::MAX, u64::from);
        let taken = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        let n = match taken {
            Ok(n) => n + 1,
            Err(_) => {
                self.stats.faults_overflow.inc();
                return Ok(None);
            }
        };
        self.stats.active_faults.set(n as i64);
        let active = ActiveFault(self);
        if let Some(wait) = delay {
            self.stats.delays_injected.inc();
            flags.push(Flag::DI);
            tokio::time::sleep(wait).await;
        }
        if let Some((status, grpc_status, body)) = abort {
            self.stats.aborts_injected.inc();
            drop(active);
            return Err(abort_response(status, grpc_status, body, grpc));
        }
        Ok(Some(active))
    }
}

fn applies(config: &Fault, headers: &HeaderMap, cluster: Option<&str>) -> bool {
    if !config.upstream_cluster.is_empty() && cluster != Some(config.upstream_cluster.as_str()) {
        return false;
    }
    if !config.headers.iter().all(|m| m.matches_headers(headers)) {
        return false;
    }
    if !config.downstream_nodes.is_empty() {
        let node = headers.get(DOWNSTREAM_NODE).and_then(|v| v.to_str().ok());
        if !node.is_some_and(|n| config.downstream_nodes.iter().any(|d| d == n)) {
            return false;
        }
    }
    true
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The configured share, lowered by the request's percentage header if it asks for
/// less (the header's number counts in the configured denominator).
fn header_share(headers: &HeaderMap, name: &str, configured: u32, scale: u32) -> u32 {
    match header_u64(headers, name) {
        Some(n) => {
            configured.min(u32::try_from(n.saturating_mul(u64::from(scale))).unwrap_or(u32::MAX))
        }
        None => configured,
    }
}

fn draw(per_million: u32) -> bool {
    per_million >= 1_000_000 || (per_million > 0 && fastrand::u32(0..1_000_000) < per_million)
}

/// The status from `x-envoy-fault-abort-request` (200..599) or the gRPC status from
/// `x-envoy-fault-abort-grpc-request`.
fn header_abort(headers: &HeaderMap) -> Option<(StatusCode, Option<u32>)> {
    if let Some(s) = header_u64(headers, ABORT_HEADER) {
        let s = u16::try_from(s).ok().filter(|s| (200..600).contains(s))?;
        return Some((StatusCode::from_u16(s).ok()?, None));
    }
    let g = header_u64(headers, ABORT_GRPC_HEADER)?;
    Some((StatusCode::OK, Some(u32::try_from(g).ok()?)))
}

fn abort_response(
    status: StatusCode,
    grpc_status: Option<u32>,
    body: String,
    grpc: bool,
) -> Response<ProxyBody> {
    // A gRPC abort answers gRPC callers with that status; others get a plain reply
    // (status 200), as Envoy does.
    Reply {
        status,
        body: Some(Bytes::from(body)),
        close: false,
        flag: Some(Flag::FI),
        details: "fault_filter_abort",
        grpc_status,
    }
    .into_response(grpc)
}
