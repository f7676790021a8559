//! The HTTP/1.1 wire format shared by the upstream client (`upstream::h1`) and the
//! downstream server (`http::h1`): a head's fields as a header map (`fields`), how a
//! message's body is framed (`framing`), the body decoder (`decoder`) and the body
//! writer (`writer`), header maps kept for reuse (`maps`), and the growing read both
//! use (`poll_fill`).

pub mod decoder;
pub mod fields;
pub mod framing;
pub mod maps;
pub mod writer;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// Read buffer space asked for when little is left; doubled while reads fill it.
pub const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;

/// Reads what `io` has into `buf`, asking for `*read_size` more bytes of room when
/// little is left, and doubling `*read_size` (up to 256 KiB) while reads fill the room.
pub fn poll_fill<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
    read_size: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_MIN / 2 {
        buf.reserve(*read_size);
    }
    let spare = buf.capacity() - buf.len();
    let n = std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buf))?;
    if n == spare && *read_size < READ_MAX {
        *read_size *= 2;
    }
    Poll::Ready(Ok(n))
}

/// A body whose framing is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid chunked body")]
    Chunk,
    #[error("trailer section too large")]
    TrailersTooLarge,
}

/// Why writing a message's body failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The body being sent failed (its own source went away or was malformed).
    #[error("body: {0}")]
    Body(crate::upstream::pool::BoxError),
    /// The body carried more or fewer bytes than its `content-length`.
    #[error("body does not match its content-length")]
    Length,
}
