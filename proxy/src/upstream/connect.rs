//! Opening upstream connections (TCP or Unix) with the cluster's connect timeout.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use std::net::SocketAddr;

use super::cluster::HostAddr;
use crate::config::cluster::UpstreamBind;

/// A byte stream to an upstream host.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection timeout")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ConnectError {
    /// The same error, for another request that waited on the same connection.
    pub fn again(&self) -> ConnectError {
        match self {
            ConnectError::Timeout => ConnectError::Timeout,
            ConnectError::Io(e) => ConnectError::Io(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }

    /// The socket's reason, as Envoy reports it in `%UPSTREAM_TRANSPORT_FAILURE_REASON%`
    /// (`delayed connect error: Connection refused`); none for a timeout.
    pub fn transport_failure(&self) -> Option<String> {
        match self {
            ConnectError::Timeout => None,
            ConnectError::Io(e) => {
                let text = e.to_string();
                // The OS's description, without std's " (os error N)".
                let text = match text.rfind(" (os error ") {
                    Some(i) => &text[..i],
                    None => &text,
                };
                Some(format!("delayed connect error: {text}"))
            }
        }
    }
}

/// An upstream connection of a known kind (the TCP relay splices TCP to TCP).
pub type Stream = tokio_util::either::Either<tokio::net::TcpStream, tokio::net::UnixStream>;

/// Connects to `addr` within `timeout`, from `bind`'s source address when set.
pub async fn connect_stream(
    addr: &HostAddr,
    timeout: Duration,
    bind: Option<UpstreamBind>,
) -> Result<Stream, ConnectError> {
    let fut = async {
        Ok::<Stream, io::Error>(match addr {
            HostAddr::Tcp(a) => {
                let s = match bind {
                    None => tokio::net::TcpStream::connect(a).await?,
                    Some(b) => bound_socket(*a, b)?.connect(*a).await?,
                };
                s.set_nodelay(true)?;
                Stream::Left(s)
            }
            HostAddr::Unix(p) => Stream::Right(tokio::net::UnixStream::connect(p).await?),
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// A socket bound to the configured source address (of the destination's family; a
/// source of the other family is left out, as Envoy does).
fn bound_socket(dest: SocketAddr, bind: UpstreamBind) -> io::Result<tokio::net::TcpSocket> {
    let socket = if dest.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if bind.source.is_ipv4() == dest.is_ipv4() {
        if bind.freebind {
            let sock = socket2::SockRef::from(&socket);
            if dest.is_ipv4() {
                sock.set_freebind_v4(true)?;
            } else {
                sock.set_freebind_v6(true)?;
            }
        }
        socket.bind(bind.source)?;
    }
    Ok(socket)
}
