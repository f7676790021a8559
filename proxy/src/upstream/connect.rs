//! Opening upstream connections (TCP or Unix) with the cluster's connect timeout.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::cluster::HostAddr;

/// A byte stream to an upstream host.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection timeout")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// An upstream connection of a known kind (the TCP relay splices TCP to TCP).
pub type Stream = tokio_util::either::Either<tokio::net::TcpStream, tokio::net::UnixStream>;

pub async fn connect(addr: &HostAddr, timeout: Duration) -> Result<BoxIo, ConnectError> {
    Ok(Box::new(connect_stream(addr, timeout).await?))
}

pub async fn connect_stream(addr: &HostAddr, timeout: Duration) -> Result<Stream, ConnectError> {
    let fut = async {
        Ok::<Stream, io::Error>(match addr {
            HostAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
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
