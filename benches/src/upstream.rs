//! The upstream every target forwards to: a single-threaded hyper server answering every
//! request with a fixed body.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Starts the server on its own thread pinned to `cpu`; returns its address.
pub fn start(cpu: usize, body_size: usize) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        crate::procstat::pin_current_thread(cpu);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind upstream");
            tx.send(l.local_addr().expect("addr")).expect("send addr");
            let body = Bytes::from(vec![b'x'; body_size]);
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let b = body.clone();
                        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(b))) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("upstream address")
}
