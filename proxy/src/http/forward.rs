//! Forwarding a routed request: cluster and host selection, path and host rewrites, the
//! pooled upstream connection, the route timeout, and the response on its way back.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};

use super::body::{BodyTimers, BoxedRequest, BoxedResponse, InFlight, MoreTimers, PooledBody};
use super::handler::ResponseMutations;
use super::headers::names;
use super::local_reply::LocalReply;
use super::retry::RetryState;
use super::stream_info::{Forwarded, StreamInfo};
use super::{
    attempts, grpc_timeout, hash_policy, headers, mirror, timeouts, upgrade, Downstream,
    HttpContext,
};
use crate::config::circuit_breakers::Priority;
use crate::config::cluster::UpstreamProtocol;
use crate::config::route::{ClusterTarget, Forward, HostRewrite, PathMatch, Route};
use crate::config::stream_duration::StreamDuration;
use crate::routing::is_grpc;
use crate::stats::GaugeGuard;
use crate::upstream::cluster::ClusterState;
use crate::upstream::lb;
use crate::upstream::pool::{Proto, ProxyBody, ResponseBody, SendError, UpstreamError};

/// What the handler decided about a request before it is forwarded.
pub struct Routed<'r, 'a> {
    /// The request's host, lower-cased (port stripped if the manager says so).
    pub host: &'a str,
    /// The path and query, normalized.
    pub path: &'a str,
    pub route: &'r Route,
    pub fwd: &'r Forward,
    /// The request asks for an upgrade the route allows.
    pub is_upgrade: bool,
    /// When the stream's duration limit ends it.
    pub stream_end: Option<Instant>,
}

/// Forwards `req` as `routed` says. (The routing facts come by reference: as arguments,
/// a one-byte one was laid out past the future's largest state, so that starting each
/// request copied the whole 5 KiB state machine.)
pub async fn forward<'r>(
    mut req: BoxedRequest,
    routed: &Routed<'r, '_>,
    ctx: &HttpContext,
    down: &Downstream,
    mutations: &mut ResponseMutations<'r>,
    info: &mut StreamInfo,
) -> Result<BoxedResponse, LocalReply> {
    let Routed {
        host,
        path,
        route,
        fwd,
        is_upgrade,
        stream_end,
    } = *routed;
    let cluster_name: &str = match &fwd.target {
        ClusterTarget::Named(n) => n,
        ClusterTarget::Weighted(w) => {
            let mut pick = fastrand::u64(0..w.total);
            let chosen = w
                .clusters
                .iter()
                .find(|c| {
                    let hit = pick < u64::from(c.weight);
                    pick = pick.saturating_sub(u64::from(c.weight));
                    hit
                })
                .unwrap_or(&w.clusters[w.clusters.len() - 1]);
            chosen.request_headers.apply(req.headers_mut());
            mutations.weighted = Some(&chosen.response_headers);
            &chosen.name
        }
        ClusterTarget::Header(h) => req
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    };
    let Some(cluster) = ctx.clusters.get(cluster_name) else {
        ctx.stats.no_cluster.inc();
        return Err(LocalReply::ClusterNotFound);
    };
    if info.logging {
        info.upstream_cluster = Some(cluster.name.clone());
    }
    let lb_ctx = match (&fwd.hash_policy, cluster.config.lb.policy.is_hashing()) {
        (Some(policy), true) => {
            let head = hash_policy::RequestHead {
                headers: req.headers(),
                uri: req.uri(),
            };
            let (hash, cookie) = hash_policy::evaluate(policy, &head, down.peer, down.local);
            mutations.set_cookie = cookie;
            lb::Context { hash, attempt: 0 }
        }
        _ => lb::Context::default(),
    };
    let Some(upstream_host) = cluster.pick_for(down.local, lb_ctx) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return Err(LocalReply::NoHealthyUpstream);
    };

    // Rewrites; Envoy keeps the originals in x-envoy-original-path / -host.
    let new_path = rewrite_path(path, route, fwd);
    if matches!(new_path, Cow::Owned(_)) && new_path != path {
        if let Ok(v) = HeaderValue::from_str(path) {
            req.headers_mut().insert(names::X_ENVOY_ORIGINAL_PATH, v);
        }
    }
    let new_host = match &fwd.host_rewrite {
        HostRewrite::None => None,
        HostRewrite::Literal(v) => Some(v.clone()),
        HostRewrite::Auto => upstream_host
            .hostname
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok()),
    };
    if let Some(v) = new_host {
        if let Ok(orig) = HeaderValue::from_str(host) {
            req.headers_mut().insert(names::X_ENVOY_ORIGINAL_HOST, orig);
        }
        req.headers_mut().insert(header::HOST, v);
    }
    let policy_per_try = fwd.retry.as_ref().and_then(|p| p.per_try_timeout);
    // gRPC requests on routes with max_grpc_timeout time out by their grpc-timeout.
    let (configured, grpc_deadline) = match &fwd.stream {
        StreamDuration::Router { grpc: Some(g) } if is_grpc(req.headers()) => {
            (g.router_timeout(grpc_timeout::parse(req.headers())), true)
        }
        _ => (fwd.timeout, false),
    };
    // One look for request-control headers serves both (before
    // x-envoy-expected-rq-timeout-ms is added).
    let control = headers::has_envoy_headers(req.headers());
    let (route_timeout, per_try) =
        timeouts::settle(configured, policy_per_try, req.headers_mut(), control);
    // Upgrades are not retried; the retry headers are consumed either way.
    let retry =
        RetryState::new(fwd.retry.as_ref(), req.headers_mut(), control).filter(|_| !is_upgrade);
    // What the upstream may expect: under the route's own timeouts, the value made with
    // the config.
    if route_timeout == fwd.timeout && per_try == fwd.per_try_timeout() && !grpc_deadline {
        if let Some(v) = &fwd.expected_timeout_header {
            req.headers_mut()
                .insert(names::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, v.clone());
        }
    } else if let Some(ms) = timeouts::expected_ms(route_timeout, per_try, Duration::ZERO) {
        timeouts::tell_upstream(req.headers_mut(), ms, grpc_deadline);
    }

    let proto = match (cluster.config.protocol, req.version()) {
        (UpstreamProtocol::Http2, _) => Proto::Http2,
        (UpstreamProtocol::Downstream, Version::HTTP_2) => Proto::Http2,
        _ => Proto::Http1,
    };
    if info.logging {
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        info.forwarded = Some(Box::new(Forwarded {
            headers: req.headers().clone(),
            path: new_path.to_string(),
            authority: authority.unwrap_or(host).to_string(),
        }));
    }
    let downstream_upgrade = is_upgrade.then(|| upgrade::Pending::take(&mut req));
    let wants_trailers = headers::te_trailers(req.headers());
    headers::strip_hop_by_hop(req.headers_mut(), is_upgrade);
    set_upstream_uri(&mut req, proto, host, &new_path)?;
    *req.version_mut() = match proto {
        Proto::Http2 => {
            req.headers_mut().remove(header::HOST);
            Version::HTTP_2
        }
        Proto::Http1 => Version::HTTP_11,
    };
    if wants_trailers {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // A body without a length goes upstream chunked, whatever the method: hyper's client
    // would otherwise send a GET (or HEAD, ...) with no body at all.
    let body = std::mem::replace(req.body_mut(), ProxyBody::Empty);
    let has_body = !hyper::body::Body::is_end_stream(&body);
    if proto == Proto::Http1 && has_body && !req.headers().contains_key(header::CONTENT_LENGTH) {
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let body = match body {
        ProxyBody::Downstream(body) if !fwd.mirrors.is_empty() => {
            mirror::spawn_mirrors(&req, body, fwd, ctx, down)
        }
        body => body,
    };
    let cfg = &ctx.config;
    // The route's idle_timeout replaces the connection manager's from here on.
    let stream_idle = fwd.idle_timeout.unwrap_or(cfg.stream_idle_timeout);
    let limits = timeouts::Limits {
        route: route_timeout,
        request: cfg.request_timeout,
        stream_idle,
        stream_end,
    };
    // Body activity matters only for a body still to come.
    let (body, activity) = if !hyper::body::Body::is_end_stream(&body)
        && (limits.request.is_some()
            || limits.stream_idle.is_some()
            || stream_end.is_some()
            || info.logging)
    {
        let a = timeouts::Activity::new();
        (
            ProxyBody::boxed(timeouts::TrackedBody::new(body, a.clone())),
            Some(a),
        )
    } else {
        (body, None)
    };

    let rq_active = GaugeGuard::new(&cluster.stats.upstream_rq_active);
    let started = Instant::now();
    let exchange = attempts::Exchange {
        cluster: &cluster,
        proto,
        priority: fwd.priority,
        down,
        hcm_stats: &ctx.stats,
        limits,
        activity: activity.as_deref(),
        started,
        count_in_request: fwd.attempt_count.request,
        buffer_limit: fwd.buffer_limit.unwrap_or(ctx.buffer_limit) as usize,
        per_try,
        per_try_idle: fwd.retry.as_ref().and_then(|p| p.per_try_idle_timeout),
        attempts: Default::default(),
        track_active: matches!(
            cluster.config.lb.policy,
            crate::config::lb::Policy::LeastRequest { .. }
        ),
        grpc_timeout_header: grpc_deadline,
        stopped: Default::default(),
        last_upstream: Default::default(),
        record_upstream: info.logging,
    };
    *req.body_mut() = body;
    let answer = attempts::run(req, upstream_host, lb_ctx, retry, &exchange).await;
    let attempted = exchange.attempts.load(std::sync::atomic::Ordering::Relaxed);
    if info.logging {
        if let Ok(mut used) = exchange.last_upstream.lock() {
            let used = std::mem::take(&mut *used);
            info.upstream_host = used.host;
            info.upstream_local = used.local;
            info.transport_failure = used.transport_failure;
        }
        info.request_body = activity.clone();
        info.details = "via_upstream".into();
    }
    if let Some(f) = exchange.stopped.lock().ok().and_then(|mut f| f.take()) {
        info.flags.push(f);
    }
    if fwd.attempt_count.response && attempted > 0 {
        mutations.attempt_count = Some(attempted);
    }
    let attempts::Answer {
        response: resp,
        mut lease,
        slot,
        host_request,
        idle_reports_to,
    } = *answer?;
    cluster.stats.response(resp.status().as_u16());
    let (mut parts, body) = resp.into_parts();
    let service_time = started.elapsed().as_millis() as u64;
    parts.headers.insert(
        names::X_ENVOY_UPSTREAM_SERVICE_TIME,
        headers::number(service_time),
    );

    // The stream's duration limit goes on with its body, or its tunnel.
    let limit = |at| {
        let reached = ctx.stats.downstream_rq_max_duration_reached.clone();
        timeouts::StreamEnd::new(at, reached)
    };
    if let (http::StatusCode::SWITCHING_PROTOCOLS, Some(down_up)) =
        (parts.status, downstream_upgrade)
    {
        match lease.into_upgraded() {
            Ok(up) => {
                upgrade::tunnel(down_up, up, stream_end.map(limit));
                drop(rq_active);
                return Ok(Box::new(Response::from_parts(parts, super::body::empty())));
            }
            Err(back) => lease = back,
        }
    }
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let in_flight = InFlight {
        active: rq_active,
        slot: Some(slot),
        host: host_request,
    };
    let try_idle = exchange.per_try_idle.map(|t| super::body::TryIdle {
        timer: timeouts::IdleTimer::new(t),
        expired: cluster.stats.upstream_rq_per_try_idle_timeout.clone(),
        report: idle_reports_to.map(|host| (cluster.clone(), host)),
    });
    let end = stream_end.map(limit);
    let timers = BodyTimers {
        stream_idle: stream_idle.map(timeouts::IdleTimer::new),
        more: (try_idle.is_some() || end.is_some()).then(|| Box::new(MoreTimers { try_idle, end })),
    };
    let body = PooledBody::new(body, lease, Some(in_flight), timers);
    Ok(Box::new(Response::from_parts(
        parts,
        ProxyBody::Pooled(Box::new(body)),
    )))
}

/// Sends on a pooled connection once `admit` lets the request use it (`None`: the
/// connection goes back unused and the request fails with `ActiveOverflow`); a request
/// that a stale pooled connection never wrote is sent once more on a fresh one.
pub(super) async fn send<T>(
    req: BoxedRequest,
    cluster: &Arc<ClusterState>,
    host: &crate::upstream::host::Host,
    (proto, priority): (Proto, Priority),
    down: &Downstream,
    mut admit: impl FnMut(&crate::upstream::pool::Lease) -> Option<T>,
) -> Result<(Response<ResponseBody>, crate::upstream::pool::Lease, T), UpstreamError> {
    /// Pooled connections tried before giving up on ones that turn out to be closed.
    const ATTEMPTS: usize = 3;
    let mut req = req;
    for attempt in 1..=ATTEMPTS {
        let mut lease = down.pools.acquire(cluster, host, proto, priority).await?;
        let Some(admitted) = admit(&lease) else {
            lease.release();
            return Err(UpstreamError::ActiveOverflow);
        };
        match lease.send(req).await {
            Ok(resp) => return Ok((resp, lease, admitted)),
            Err(SendError::NotSent(r)) if attempt < ATTEMPTS => req = r,
            Err(SendError::NotSent(_)) => break,
            Err(SendError::Failed(e)) => return Err(e),
        }
    }
    Err(UpstreamError::Connect(
        crate::upstream::connect::ConnectError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "upstream connection closed",
        )),
    ))
}

/// HTTP/1.1 upstreams get origin-form (the request's own URI is kept when nothing
/// changed it, the common case); HTTP/2 upstreams get scheme and authority, the authority
/// from the (possibly rewritten) Host header.
fn set_upstream_uri(
    req: &mut Request<ProxyBody>,
    proto: Proto,
    host: &str,
    path: &str,
) -> Result<(), LocalReply> {
    let uri = match proto {
        Proto::Http1 => {
            let unchanged = req.uri().authority().is_none()
                && req
                    .uri()
                    .path_and_query()
                    .is_some_and(|pq| pq.as_str() == path);
            if unchanged {
                return Ok(());
            }
            path.parse::<Uri>()
        }
        Proto::Http2 => {
            let authority = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(host);
            format!("http://{authority}{path}").parse::<Uri>()
        }
    };
    *req.uri_mut() = uri.map_err(|_| LocalReply::BadPath)?;
    Ok(())
}

/// `prefix_rewrite` replaces the matched prefix (or the whole path for exact matches);
/// `regex_rewrite` substitutes within the path, leaving the query alone.
pub fn rewrite_path<'a>(path: &'a str, route: &Route, fwd: &Forward) -> Cow<'a, str> {
    if let Some(prefix) = &fwd.prefix_rewrite {
        let (p, q) = split_query(path);
        let matched = match &route.matcher.path {
            PathMatch::Prefix(m) | PathMatch::SeparatedPrefix(m) => m.len().min(p.len()),
            PathMatch::Exact(_) | PathMatch::Regex(_) => p.len(),
        };
        return Cow::Owned(format!("{prefix}{}{q}", &p[matched..]));
    }
    if let Some((re, sub)) = &fwd.regex_rewrite {
        let (p, q) = split_query(path);
        return Cow::Owned(format!("{}{q}", re.replace_all(p, sub.as_str())));
    }
    Cow::Borrowed(path)
}

fn split_query(path: &str) -> (&str, &str) {
    match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    }
}
