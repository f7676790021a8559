//! Request mirroring (`request_mirror_policies`): a copy of the request goes to another
//! cluster, fire and forget. The body is teed frame by frame; if a mirror falls behind,
//! its copy is cut off rather than slowing the real request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderValue;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

use super::body::{BodyTimers, PooledBody, RequestBody};
use super::{Downstream, HttpContext};
use crate::config::circuit_breakers::Priority;
use crate::config::route::{Forward, MirrorTarget};
use crate::upstream::pool::{BoxError, Proto, ProxyBody};

/// Starts the selected mirrors and returns the body to send to the primary upstream.
pub fn spawn_mirrors(
    head: &Request<ProxyBody>,
    body: RequestBody,
    fwd: &Forward,
    ctx: &HttpContext,
    down: &Downstream,
) -> ProxyBody {
    let mut senders = Vec::new();
    for m in &fwd.mirrors {
        if m.per_million < 1_000_000 && fastrand::u32(0..1_000_000) >= m.per_million {
            continue;
        }
        let name = match &m.target {
            MirrorTarget::Cluster(c) => &**c,
            MirrorTarget::Header(h) => head
                .headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        };
        let Some(cluster) = ctx.clusters.get(name) else {
            continue;
        };
        let Some(host) = cluster.pick_for(down.local, crate::upstream::lb::Context::default())
        else {
            continue;
        };
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(64);
        senders.push(tx);
        let mut p = super::headers::copy_head(head);
        // Envoy marks mirrored requests by suffixing the host with "-shadow".
        let host_header = p
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let shadow = shadow_host(host_header);
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            p.headers.insert(http::header::HOST, v);
        }
        if p.version == http::Version::HTTP_2 {
            let path = p.uri.path_and_query().map_or("/", |x| x.as_str());
            if let Ok(u) = format!("http://{shadow}{path}").parse() {
                p.uri = u;
            }
        }
        let proto = if p.version == http::Version::HTTP_2 {
            Proto::Http2
        } else {
            Proto::Http1
        };
        let body = ProxyBody::boxed(StreamBody::new(tokio_stream_from(rx)));
        let pools = down.pools.clone();
        tokio::spawn(async move {
            let req = Box::new(Request::from_parts(p, body));
            let Ok(mut lease) = pools
                .acquire(&cluster, &host, proto, Priority::Default)
                .await
            else {
                return;
            };
            cluster.stats.upstream_rq_total.inc();
            if let Ok(resp) = lease.send(req).await {
                cluster.stats.response(resp.status().as_u16());
                // Read to its end, which gives the connection back to the pool.
                let body = PooledBody::new(resp.into_body(), lease, None, BodyTimers::default());
                let _ = body.collect().await;
            }
        });
    }
    if senders.is_empty() {
        return ProxyBody::Downstream(body);
    }
    ProxyBody::boxed(TeeBody {
        inner: body,
        mirrors: senders,
    })
}

fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => format!("{h}-shadow:{p}"),
        _ => format!("{host}-shadow"),
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Sync {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct TeeBody {
    inner: RequestBody,
    mirrors: Vec<mpsc::Sender<Result<Frame<Bytes>, BoxError>>>,
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.mirrors
                        .retain(|m| m.try_send(Ok(Frame::data(d.clone()))).is_ok());
                } else if let Some(t) = frame.trailers_ref() {
                    this.mirrors
                        .retain(|m| m.try_send(Ok(Frame::trailers(t.clone()))).is_ok());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.mirrors.clear();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.mirrors.clear();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow_host_keeps_port() {
        assert_eq!(super::shadow_host("a.com:8080"), "a.com-shadow:8080");
        assert_eq!(super::shadow_host("a.com"), "a.com-shadow");
    }
}
