//! Request entry point: checks the request, normalizes it, picks the route and runs its
//! action; then finishes the response (header mutations, `server`, stats).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use super::headers::names;
use super::local_reply::{LocalReply, Reply};
use super::{forward, headers, redirect, Downstream, HttpContext};
use crate::config::common::HeaderMutations;
use crate::config::hcm::ServerHeader;
use crate::config::route::{Action, Route, RouteTable, VirtualHost};
use crate::routing::{is_grpc, strip_port, RequestView, Routes};
use crate::stats::GaugeGuard;
use crate::upstream::pool::ProxyBody;

/// Serves one request. Never fails: every error becomes a local reply.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<HttpContext>,
    down: Arc<Downstream>,
) -> Result<Response<ProxyBody>, Infallible> {
    let stats = &ctx.stats;
    stats.downstream_rq_total.inc();
    match req.version() {
        Version::HTTP_2 => stats.downstream_rq_http2_total.inc(),
        _ => stats.downstream_rq_http1_total.inc(),
    }
    let _active = GaugeGuard::new(&stats.downstream_rq_active);
    // While the listener drains gently (replaced by LDS), HTTP/1.1 clients are asked to
    // reconnect, to its new version, one response at a time.
    let close = req.version() < Version::HTTP_2 && down.drain.is_draining();
    let rds;
    let routes = match &ctx.routes {
        Routes::Fixed(t) => t,
        Routes::Rds(slot) => {
            rds = slot.load_full();
            &rds
        }
    };
    let mut resp = process(req, &ctx, &down, routes).await;
    finish(&mut resp, &ctx, close);
    stats.response(resp.status().as_u16());
    Ok(resp)
}

/// The response header mutations that apply to a routed request, applied most specific
/// first so the route configuration's additions win (Envoy's default order).
pub struct ResponseMutations<'a> {
    /// The chosen weighted cluster's, if any (set by the router).
    pub weighted: Option<&'a HeaderMutations>,
    /// `x-envoy-attempt-count` for the response (`include_attempt_count_in_response`),
    /// local replies after upstream attempts included.
    pub attempt_count: Option<u32>,
    route: &'a HeaderMutations,
    vhost: &'a HeaderMutations,
    table: &'a HeaderMutations,
}

impl ResponseMutations<'_> {
    fn apply(&self, headers: &mut http::HeaderMap) {
        let levels = self
            .weighted
            .into_iter()
            .chain([self.route, self.vhost, self.table]);
        for m in levels.filter(|m| !m.is_empty()) {
            m.apply(headers);
        }
        if let Some(n) = self.attempt_count {
            headers.insert(names::X_ENVOY_ATTEMPT_COUNT, http::HeaderValue::from(n));
        }
    }
}

async fn process(
    mut req: Request<Incoming>,
    ctx: &HttpContext,
    down: &Downstream,
    routes: &RouteTable,
) -> Response<ProxyBody> {
    let grpc = is_grpc(req.headers());
    let reply = |r: LocalReply| r.into_response(grpc);
    let cfg = &ctx.config;
    if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 {
        return reply(LocalReply::Http10NotAllowed);
    }
    let Some(mut host) = request_host(&req) else {
        return reply(LocalReply::MissingHost);
    };
    host.make_ascii_lowercase();
    if cfg.strip_any_host_port {
        host = strip_port(&host).to_string();
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // RFC 3986: a request target is ASCII (other bytes must be percent-encoded).
    if !path.is_ascii() {
        return reply(LocalReply::BadPath);
    }
    let path = if cfg.normalize_path || cfg.merge_slashes {
        match headers::normalize(&path, cfg.normalize_path, cfg.merge_slashes) {
            Some(p) => p,
            None => return reply(LocalReply::BadPath),
        }
    } else {
        path
    };
    let upgrade = headers::upgrade_type(req.headers());
    let scheme = "http";
    let view = RequestView {
        host: &host,
        path: &path,
        method: req.method(),
        scheme,
        headers: req.headers(),
    };
    let Some((vhost, route)) = routes.route(&view) else {
        ctx.stats.no_route.inc();
        return reply(LocalReply::NoRoute);
    };
    let mut mutations = ResponseMutations {
        weighted: None,
        attempt_count: None,
        route: &route.response_headers,
        vhost: &vhost.response_headers,
        table: &routes.response_headers,
    };
    let result = match &route.action {
        Action::Direct(d) => {
            ctx.stats.rq_direct_response.inc();
            Ok(Reply::direct(d.status, d.body.clone()).into_response(grpc))
        }
        Action::Redirect(rd) => {
            ctx.stats.rq_redirect.inc();
            Ok(redirect::respond(rd, route, scheme, &host, &path))
        }
        Action::Forward(fwd) => {
            if let Some(u) = &upgrade {
                if !upgrade_allowed(&cfg.upgrades, route, u) {
                    ctx.stats.downstream_rq_ws_on_non_ws_route.inc();
                    return reply(LocalReply::UpgradeNotAllowed);
                }
            }
            prepare_request_headers(&mut req, ctx, down, &host);
            apply_request_mutations(req.headers_mut(), route, vhost, routes);
            forward::forward(
                req,
                &host,
                &path,
                route,
                fwd,
                ctx,
                down,
                upgrade.is_some(),
                &mut mutations,
            )
            .await
        }
    };
    let mut resp = result.unwrap_or_else(reply);
    // Local replies on a matched route get its response headers too, as in Envoy.
    mutations.apply(resp.headers_mut());
    resp
}

fn upgrade_allowed(hcm: &[String], route: &Route, upgrade: &str) -> bool {
    if let Action::Forward(f) = &route.action {
        if let Some((_, enabled)) = f.upgrades.iter().find(|(t, _)| t == upgrade) {
            return *enabled;
        }
    }
    hcm.iter().any(|t| t == upgrade)
}

/// `:authority` for HTTP/2 and absolute-form requests, else the `Host` header.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Request-control headers Envoy honours only from internal clients: removed from every
/// request that is not internal (without `use_remote_address`, that is every request).
const EXTERNAL_STRIPPED: &[&str] = &[
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Also removed from edge requests (external, with `use_remote_address`).
const EDGE_STRIPPED: &[&str] = &[
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
];

/// What the connection manager adds or edits on every forwarded request, as Envoy does:
/// `x-forwarded-for` (with `use_remote_address`, the peer, or this host's address for
/// loopback peers), `x-envoy-external-address` / `x-envoy-internal`, `x-forwarded-proto`
/// and `x-request-id`.
fn prepare_request_headers(
    req: &mut Request<Incoming>,
    ctx: &HttpContext,
    down: &Downstream,
    host: &str,
) {
    let cfg = &ctx.config;
    let h = req.headers_mut();
    // HTTP/1 requests keep their Host header unless routing changed it; HTTP/2 requests
    // get one from :authority.
    if h.get(header::HOST)
        .is_none_or(|v| v.as_bytes() != host.as_bytes())
    {
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(header::HOST, v);
        }
    }
    // A client's own x-envoy-internal is never believed; the request is internal only
    // when, with use_remote_address, the peer is an internal address.
    h.remove(names::X_ENVOY_INTERNAL);
    let internal = cfg.use_remote_address
        && match down.peer {
            Some(peer) => {
                let ip = crate::config::common::canonical(peer.ip());
                cfg.internal_cidrs.iter().any(|c| c.contains(ip))
            }
            None => cfg.internal_unix_sockets,
        };
    // An edge request: the peer is the client and it is not internal.
    let edge = cfg.use_remote_address && !internal;
    if cfg.use_remote_address && down.peer.is_some() && !cfg.skip_xff_append {
        if let Some(hop) = &down.xff_hop {
            headers::append_xff(h, hop);
        }
    }
    if internal {
        h.insert(names::X_ENVOY_INTERNAL, HeaderValue::from_static("true"));
    } else if headers::has_envoy_headers(h) {
        for name in EXTERNAL_STRIPPED {
            h.remove(*name);
        }
        if edge {
            for name in EDGE_STRIPPED {
                h.remove(*name);
            }
        }
    }
    if edge {
        if let Some(v) = &down.peer_header {
            h.insert(names::X_ENVOY_EXTERNAL_ADDRESS, v.clone());
        }
    }
    if cfg.use_remote_address || !h.contains_key(names::X_FORWARDED_PROTO) {
        h.insert(names::X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    // Edge requests get a fresh id unless told to keep the client's.
    let replace = edge && !cfg.preserve_external_request_id;
    if cfg.generate_request_id && (replace || !h.contains_key(names::X_REQUEST_ID)) {
        h.insert(names::X_REQUEST_ID, headers::new_request_id());
    }
}

fn apply_request_mutations(
    h: &mut http::HeaderMap,
    route: &Route,
    vhost: &VirtualHost,
    routes: &RouteTable,
) {
    for m in [
        &route.request_headers,
        &vhost.request_headers,
        &routes.request_headers,
    ] {
        if !m.is_empty() {
            m.apply(h);
        }
    }
}

/// Final touches every response gets: the `server` header.
fn finish(resp: &mut Response<ProxyBody>, ctx: &HttpContext, close: bool) {
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let cfg = &ctx.config;
    match cfg.server_header {
        ServerHeader::Overwrite => {
            resp.headers_mut()
                .insert(header::SERVER, cfg.server_name.clone());
        }
        ServerHeader::AppendIfAbsent => {
            if !resp.headers().contains_key(header::SERVER) {
                resp.headers_mut()
                    .insert(header::SERVER, cfg.server_name.clone());
            }
        }
        ServerHeader::PassThrough => {}
    }
}
