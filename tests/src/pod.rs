//! Blocking socket helpers for the namespace tests: servers that answer in simple,
//! checkable ways, bound inside a namespace, and clients that connect from inside one
//! (as an application of the pod, not the proxy).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::netns::Netns;

/// Serves every connection on its own thread with `handle`.
pub fn serve(listener: TcpListener, handle: fn(TcpStream)) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || handle(conn));
        }
    });
}

/// Answers one HTTP/1.1 request with `200` and the body `svc-http`, then closes.
pub fn http_ok(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    let mut got: Vec<u8> = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend(&buf[..n]),
        }
    }
    let body = "svc-http";
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Sends back whatever arrives until the client closes.
pub fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Tells the client who it is talking to: `peer <ip>`.
pub fn who_am_i(mut s: TcpStream) {
    let peer = s
        .peer_addr()
        .map(|p| p.ip().to_string())
        .unwrap_or_default();
    let _ = write!(s, "peer {peer}");
}

/// A listener bound to `addr` inside `ns`.
pub fn bind(ns: &Netns, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("addr");
    ns.enter(move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
}

/// A connection made from inside `ns`, by a process that is not the proxy.
pub fn connect(ns: &Netns, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("addr");
    let s = ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)));
    let s = s.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Everything the peer sends until it closes.
pub fn read_all(mut s: TcpStream) -> String {
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Sends `msg` on a new connection from `ns` to `addr` and returns what comes back
/// (the same bytes, from an [`echo`] server).
pub fn echo_through(ns: &Netns, addr: &str, msg: &[u8]) -> Vec<u8> {
    let mut s = connect(ns, addr);
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    back
}
