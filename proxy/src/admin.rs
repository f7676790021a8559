//! The admin API on `admin.address`, served from the main thread: readiness, server info,
//! stats (text, JSON, Prometheus), config dump, clusters, listeners, logging and the
//! lifecycle endpoints pilot-agent uses.

mod info;
mod stats;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::config::common::BindAddress;
use crate::server::{Server, ServerError, ServerState};

pub type AdminResponse = Response<Full<Bytes>>;

/// The admin socket, bound before the runtime starts.
#[derive(Debug)]
pub enum AdminSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

pub enum AdminListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl AdminSocket {
    /// Must be called inside the runtime that will serve it.
    pub fn into_tokio(self) -> std::io::Result<AdminListener> {
        Ok(match self {
            AdminSocket::Tcp(l) => AdminListener::Tcp(tokio::net::TcpListener::from_std(l)?),
            AdminSocket::Unix(l) => AdminListener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    }
}

/// Binds the admin address, if the bootstrap has one, and records the bound address.
pub fn bind(server: &Server) -> Result<Option<AdminSocket>, ServerError> {
    let Some(addr) = server.admin_bind.clone() else {
        return Ok(None);
    };
    let err = |source| ServerError::AdminBind {
        address: addr.to_string(),
        source,
    };
    let socket = match &addr {
        BindAddress::Tcp(sa) => {
            let l = std::net::TcpListener::bind(sa).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            let local = l.local_addr().map_err(err)?;
            *server.admin_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(local);
            if let Some(path) = &server.options.admin_address_path {
                std::fs::write(path, local.to_string()).map_err(|source| {
                    ServerError::AdminAddressPath {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
            }
            tracing::info!(address = %local, "admin listening");
            AdminSocket::Tcp(l)
        }
        BindAddress::Unix(p) => {
            if p.exists() {
                std::fs::remove_file(p).map_err(err)?;
            }
            let l = std::os::unix::net::UnixListener::bind(p).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            AdminSocket::Unix(l)
        }
    };
    Ok(Some(socket))
}

pub async fn serve(listener: AdminListener, server: Arc<Server>) {
    loop {
        let server = server.clone();
        let svc = service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(route(req, &server).await) }
        });
        let builder = hyper::server::conn::http1::Builder::new();
        match &listener {
            AdminListener::Tcp(l) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(builder.serve_connection(TokioIo::new(s), svc));
            }
            AdminListener::Unix(l) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(builder.serve_connection(TokioIo::new(s), svc));
            }
        }
    }
}

/// Query parameters of an admin request.
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(req: &Request<Incoming>) -> Self {
        Query(
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(key, _)| key == k)
    }
}

async fn route(req: Request<Incoming>, server: &Arc<Server>) -> AdminResponse {
    let q = Query::parse(&req);
    let post = req.method() == Method::POST;
    server.refresh_gauges();
    match req.uri().path() {
        "/ready" => {
            let s = server.state();
            let status = if s == ServerState::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{}\n", s.name()))
        }
        "/server_info" => json(info::server_info(server)),
        "/stats" => stats::stats(server, &q),
        "/stats/prometheus" => stats::prometheus(server, &q),
        "/config_dump" => json(server.config_dump()),
        "/clusters" => info::clusters(server, &q),
        "/listeners" => info::listeners(server, &q),
        "/logging" => logging(server, &q, post),
        "/quitquitquit" if post => {
            server.shutdown.start();
            text(StatusCode::OK, "OK\n")
        }
        "/drain_listeners" if post => {
            server.drain_listeners(q.has("inboundonly"), q.has("graceful"));
            text(StatusCode::OK, "OK\n")
        }
        "/healthcheck/fail" if post => {
            server.set_health_failed(true);
            text(StatusCode::OK, "OK\n")
        }
        "/healthcheck/ok" if post => {
            server.set_health_failed(false);
            text(StatusCode::OK, "OK\n")
        }
        "/quitquitquit" | "/drain_listeners" | "/healthcheck/fail" | "/healthcheck/ok" => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This admin endpoint requires POST\n",
        ),
        "/" | "/help" => text(StatusCode::OK, HELP),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("invalid path. admin commands are:\n{HELP}"),
        ),
    }
}

const HELP: &str = "  /clusters: upstream cluster status
  /config_dump: dump current Envoy configs
  /drain_listeners (POST): drain listeners (?graceful, ?inboundonly)
  /healthcheck/fail (POST): cause the server to fail health checks
  /healthcheck/ok (POST): cause the server to pass health checks
  /listeners: print listener info
  /logging: query/change logging levels (?level=)
  /quitquitquit (POST): exit the server
  /ready: print server state, return 200 if LIVE, otherwise return 503
  /server_info: print server version/status information
  /stats: print server stats (?filter=, ?usedonly, ?format=json)
  /stats/prometheus: print server stats in prometheus format
";

/// `/logging`: lists levels; with `?level=` sets all, with `?<component>=<level>` one
/// Envoy component (POST only, as in Envoy).
fn logging(server: &Server, q: &Query, post: bool) -> AdminResponse {
    if q.0.is_empty() {
        return text(StatusCode::OK, server.log.describe());
    }
    if !post {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This admin endpoint requires POST\n",
        );
    }
    for (k, v) in &q.0 {
        let r = if k == "level" {
            server.log.set(v)
        } else {
            server.log.set_component(k, v)
        };
        if let Err(e) = r {
            return text(StatusCode::NOT_FOUND, format!("{e}\n"));
        }
    }
    text(StatusCode::OK, server.log.describe())
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

pub fn json(v: serde_json::Value) -> AdminResponse {
    let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
