//! Request entry point: checks the request, normalizes it, picks the route and runs its
//! action; then finishes the response (header mutations, `server`, stats).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use super::body::{empty, full};
use super::local_reply::LocalReply;
use super::{forward, headers, redirect, Downstream, HttpContext};
use crate::config::common::HeaderMutations;
use crate::config::hcm::ServerHeader;
use crate::config::route::{Action, Route, RouteTable, VirtualHost};
use crate::routing::{strip_port, RequestView};
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
    let routes = ctx.config.routes.clone();
    let mut resp = match process(req, &ctx, &down, &routes).await {
        Ok(r) => r,
        Err(reply) => reply.into_response(),
    };
    finish(&mut resp, &ctx);
    stats.response(resp.status().as_u16());
    Ok(resp)
}

/// Response mutations collected while routing, applied in Envoy's order (most specific
/// first, so the route configuration's additions win).
pub struct ResponseMutations<'a> {
    pub levels: Vec<&'a HeaderMutations>,
}

impl ResponseMutations<'_> {
    fn apply(&self, headers: &mut http::HeaderMap) {
        for m in &self.levels {
            m.apply(headers);
        }
    }
}

async fn process(
    mut req: Request<Incoming>,
    ctx: &HttpContext,
    down: &Downstream,
    routes: &RouteTable,
) -> Result<Response<ProxyBody>, LocalReply> {
    let cfg = &ctx.config;
    if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 {
        return Err(LocalReply::Http10NotAllowed);
    }
    let host = request_host(&req).ok_or(LocalReply::MissingHost)?;
    // Keep the host in the form routing sees, and make sure HTTP/1 requests carry it.
    let mut host = host.to_ascii_lowercase();
    if cfg.strip_any_host_port {
        host = strip_port(&host).to_string();
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = if cfg.normalize_path || cfg.merge_slashes {
        headers::normalize(&path, cfg.normalize_path, cfg.merge_slashes)
            .ok_or(LocalReply::BadPath)?
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
        return Err(LocalReply::NoRoute);
    };
    if let Some(u) = &upgrade {
        if !upgrade_allowed(cfg.upgrades.as_slice(), route, u) {
            ctx.stats.downstream_rq_ws_on_non_ws_route.inc();
            return Err(LocalReply::UpgradeNotAllowed);
        }
    }
    prepare_request_headers(&mut req, ctx, down, &host);
    let mut mutations = ResponseMutations {
        levels: Vec::with_capacity(4),
    };
    let resp = match &route.action {
        Action::Direct(d) => {
            ctx.stats.rq_direct_response.inc();
            let mut r = match &d.body {
                Some(b) if !b.is_empty() => {
                    let mut r = Response::new(full(b.clone()));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
                _ => Response::new(empty()),
            };
            *r.status_mut() = d.status;
            r
        }
        Action::Redirect(rd) => {
            ctx.stats.rq_redirect.inc();
            redirect::respond(rd, route, scheme, &host, &path)
        }
        Action::Forward(fwd) => {
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
            .await?
        }
    };
    let mut resp = resp;
    mutations.levels.extend([
        &route.response_headers,
        &vhost.response_headers,
        &routes.response_headers,
    ]);
    mutations.apply(resp.headers_mut());
    Ok(resp)
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

/// Headers the connection manager adds or edits on every forwarded request:
/// `x-forwarded-for`, `x-forwarded-proto`, `x-request-id`, `x-envoy-internal`.
fn prepare_request_headers(
    req: &mut Request<Incoming>,
    ctx: &HttpContext,
    down: &Downstream,
    host: &str,
) {
    let cfg = &ctx.config;
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(header::HOST, v);
    }
    if cfg.use_remote_address {
        if let Some(peer) = down.peer {
            if !cfg.skip_xff_append {
                headers::append_xff(h, peer.ip());
            }
            if headers::is_internal(peer.ip()) {
                h.insert("x-envoy-internal", HeaderValue::from_static("true"));
            } else {
                h.remove("x-envoy-internal");
            }
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    } else if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if cfg.generate_request_id
        && !(cfg.preserve_external_request_id && h.contains_key("x-request-id"))
        && !h.contains_key("x-request-id")
    {
        h.insert("x-request-id", headers::new_request_id());
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
        m.apply(h);
    }
}

/// Final touches every response gets: the `server` header.
fn finish(resp: &mut Response<ProxyBody>, ctx: &HttpContext) {
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

/// A body-less response with a status, for redirects.
pub fn status_only(status: http::StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}
