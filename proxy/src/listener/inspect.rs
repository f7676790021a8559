//! Listener filters at run time: the original destination of an intercepted connection
//! and what its first bytes say (TLS with SNI/ALPN, HTTP/1.x, h2c), found before a filter
//! chain is chosen. Bytes are peeked, never consumed, so the chain sees the stream whole.
//!
//! A client that sends nothing (a server-first protocol such as MySQL) leaves the
//! inspectors undecided until `listener_filters_timeout`; then the connection carries on
//! as plain TCP (`continue_on_listener_filters_timeout`) or is closed.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::sniff::{self, Verdict};
use crate::config::listener_filter::{Kind, ListenerFilters};
use crate::stats::{Counter, Store};

/// Largest ClientHello (or request line) looked at, as Envoy's largest buffer.
const MAX_PEEK: usize = 64 * 1024;

/// What the listener filters found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// Where the client connected: its original destination when redirected.
    pub destination: Option<SocketAddr>,
    pub server_name: Option<String>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'static str,
    pub application_protocols: Vec<String>,
}

impl Inspected {
    pub fn plain(destination: Option<SocketAddr>) -> Self {
        Inspected {
            destination,
            server_name: None,
            transport_protocol: "raw_buffer",
            application_protocols: Vec::new(),
        }
    }
}

/// Envoy's listener filter stats (`tls_inspector.*`, `http_inspector.*`).
#[derive(Debug, Clone)]
pub struct InspectorStats {
    pub tls_found: Counter,
    pub tls_not_found: Counter,
    pub sni_found: Counter,
    pub alpn_found: Counter,
    pub http11_found: Counter,
    pub http10_found: Counter,
    pub http2_found: Counter,
    pub http_not_found: Counter,
}

impl InspectorStats {
    pub fn new(store: &Store) -> Self {
        InspectorStats {
            tls_found: store.counter("tls_inspector.tls_found"),
            tls_not_found: store.counter("tls_inspector.tls_not_found"),
            sni_found: store.counter("tls_inspector.sni_found"),
            alpn_found: store.counter("tls_inspector.alpn_found"),
            http11_found: store.counter("http_inspector.http11_found"),
            http10_found: store.counter("http_inspector.http10_found"),
            http2_found: store.counter("http_inspector.http2_found"),
            http_not_found: store.counter("http_inspector.http_not_found"),
        }
    }
}

/// The destination the client dialled: `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for
/// IPv6) when netfilter redirected the connection, else the local address (a TPROXY'd
/// transparent socket's local address is already the original one).
pub fn original_destination(stream: &TcpStream, local: Option<SocketAddr>) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let original = match local {
        Some(SocketAddr::V6(_)) => sock.original_dst_v6(),
        _ => sock.original_dst_v4(),
    };
    original.ok().and_then(|a| a.as_socket()).or(local)
}

/// Peeks at what has arrived, at most `buf.len()` bytes. Returns `WouldBlock` (clearing
/// readiness) when no more than `seen` bytes are there yet, so the caller sleeps until
/// new bytes arrive instead of spinning.
fn peek_more(stream: &TcpStream, buf: &mut [MaybeUninit<u8>], seen: usize) -> io::Result<usize> {
    stream.try_io(Interest::READABLE, || {
        let n = socket2::SockRef::from(stream).peek(buf)?;
        if n == 0 || n > seen || n == buf.len() {
            Ok(n)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    })
}

/// Runs the sniffing inspectors the filters enable for `destination`'s port. `None`:
/// the timeout passed and the listener does not continue, so the connection closes.
pub async fn sniff(
    stream: &TcpStream,
    filters: &ListenerFilters,
    destination: Option<SocketAddr>,
    stats: &InspectorStats,
) -> Option<Inspected> {
    let port = destination.map_or(0, |d| d.port());
    let run_tls = filters.runs(Kind::TlsInspector, port);
    let run_http = filters.runs(Kind::HttpInspector, port);
    let mut found = Inspected::plain(destination);
    if !run_tls && !run_http {
        return Some(found);
    }
    let (mut want_tls, mut want_http) = (run_tls, run_http);
    let work = async {
        // Grown (up to MAX_PEEK) while a long ClientHello keeps filling it.
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 2048];
        let mut seen = 0;
        loop {
            let n = loop {
                if stream.readable().await.is_err() {
                    break 0;
                }
                match peek_more(stream, &mut buf, seen) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => break 0,
                }
            };
            // Nothing more will come: the peer closed, or the buffer is at its limit.
            let eof = n == 0 || n <= seen || n == MAX_PEEK;
            seen = n;
            // SAFETY: `peek` initialised the first `n` bytes.
            let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            if want_tls {
                match sniff::tls(bytes) {
                    Verdict::NeedMore if !eof => {}
                    Verdict::Yes(hello) => {
                        found.transport_protocol = "tls";
                        found.server_name = hello.server_name;
                        found.application_protocols = hello.alpn;
                        want_tls = false;
                        // HTTP inspection is for plaintext only.
                        want_http = false;
                    }
                    _ => want_tls = false,
                }
            }
            if want_http && !want_tls {
                match sniff::http(bytes) {
                    Verdict::NeedMore if !eof => {}
                    Verdict::Yes(proto) => {
                        found.application_protocols = vec![proto.to_owned()];
                        want_http = false;
                    }
                    _ => want_http = false,
                }
            }
            if !want_tls && !want_http {
                return;
            }
            if n == buf.len() {
                buf.resize((n * 2).min(MAX_PEEK), MaybeUninit::uninit());
            }
        }
    };
    let timed_out = match filters.timeout {
        Some(t) => tokio::time::timeout(t, work).await.is_err(),
        None => {
            work.await;
            false
        }
    };
    if timed_out && !filters.continue_on_timeout {
        return None;
    }
    count(&found, run_tls, run_http, stats);
    Some(found)
}

fn count(found: &Inspected, tls: bool, http: bool, stats: &InspectorStats) {
    if tls {
        if found.transport_protocol == "tls" {
            stats.tls_found.inc();
            if found.server_name.is_some() {
                stats.sni_found.inc();
            }
            if !found.application_protocols.is_empty() {
                stats.alpn_found.inc();
            }
        } else {
            stats.tls_not_found.inc();
        }
    }
    if http && found.transport_protocol != "tls" {
        match found.application_protocols.first().map(String::as_str) {
            Some("http/1.1") => stats.http11_found.inc(),
            Some("http/1.0") => stats.http10_found.inc(),
            Some("h2c") => stats.http2_found.inc(),
            _ => stats.http_not_found.inc(),
        }
    }
}
