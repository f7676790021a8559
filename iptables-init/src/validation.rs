//! `--run-validation`: proves that redirection works, as istio-validation does.
//!
//! A listener on 127.0.0.1 at the outbound and inbound capture ports answers every
//! connection with a random token and the original destination port it recovered
//! (`SO_ORIGINAL_DST`). The client connects to a port nothing listens on: as a proxy UID,
//! over loopback to 127.0.0.6 (the path Istio's validation uses, captured to the inbound
//! port); as anyone else, to 192.0.2.1 (TEST-NET-1, unroutable in practice), which
//! only the outbound capture can answer. Redirection works if the token comes back with
//! the port we dialled.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read random bytes for the token: {0}")]
    Token(std::io::Error),
    #[error(
        "traffic to {target} was not redirected to 127.0.0.1:{ports} within {timeout:?} (last: {last})"
    )]
    NotRedirected {
        target: SocketAddr,
        ports: String,
        timeout: Duration,
        last: String,
    },
}

/// Where the client connects: loopback to 127.0.0.6 as a proxy UID, else TEST-NET-1.
pub fn target(settings: &Settings, uid: u32) -> SocketAddr {
    let is_proxy = settings.proxy_uids.iter().any(|u| u == &uid.to_string());
    let ip = if is_proxy {
        Ipv4Addr::new(127, 0, 0, 6)
    } else {
        Ipv4Addr::new(192, 0, 2, 1)
    };
    SocketAddr::V4(SocketAddrV4::new(ip, settings.probe_port))
}

fn token() -> Result<String, ValidationError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ValidationError::Token)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serves `token original-port` on each listener until `stop` is set.
fn serve(listener: TcpListener, token: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let original = socket2::SockRef::from(&conn)
                    .original_dst_v4()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map_or(0, |a| a.port());
                let _ = conn.write_all(format!("{token} {original}\n").as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn probe(target: SocketAddr, step: Duration) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&target, step).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(step))
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply)
}

/// Runs the validation; `Ok` with the reply when redirection works.
pub fn run(settings: &Settings, target: SocketAddr) -> Result<String, ValidationError> {
    let token = token()?;
    let stop = Arc::new(AtomicBool::new(false));
    let ports = [settings.proxy_port, settings.inbound_capture_port];
    let mut servers = Vec::new();
    for port in ports {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener =
            TcpListener::bind(addr).map_err(|source| ValidationError::Listen { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ValidationError::Listen { addr, source })?;
        let (token, stop) = (token.clone(), stop.clone());
        servers.push(std::thread::spawn(move || serve(listener, token, stop)));
    }
    let want = format!("{token} {}", target.port());
    let deadline = Instant::now() + settings.probe_timeout;
    let step = Duration::from_millis(500).min(settings.probe_timeout);
    let result = loop {
        let last = match probe(target, step) {
            Ok(reply) if reply.trim() == want => break Ok(reply.trim().to_owned()),
            Ok(reply) => format!("unexpected reply '{}'", reply.trim()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            break Err(ValidationError::NotRedirected {
                target,
                ports: format!("{} or {}", ports[0], ports[1]),
                timeout: settings.probe_timeout,
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        let _ = s.join();
    }
    result
}
