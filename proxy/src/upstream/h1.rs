//! The HTTP/1.1 client of upstream connections.
//!
//! A request is written and its response read by the request's own task: there is no
//! connection task, so no hand-over between tasks on the way out or back. The head is
//! encoded straight from the request's `Parts`; the response head is parsed with
//! `httparse` into a `HeaderMap` whose values share the read buffer.
//!
//! While the response head is awaited, the request body keeps being written; if the
//! upstream answers before the request body has all been sent, the rest is written as
//! the response body is read (`BodyReader`). The connection is reused only after a clean
//! exchange: the whole request written, the response complete and framed by its length
//! or chunks, nothing unread, and neither side asking to close.
//!
//! - `encode`: the request head and the request body's framing (length or chunked).
//! - `decode`: the response head and its body's framing.
//! - `exchange`: writing the request while reading the response, and the body reader.
//!
//! The body decoder and writer are shared with the server (`crate::h1`).

mod decode;
mod encode;
mod exchange;

use bytes::BytesMut;
use http::Response;

use super::connect::Stream;
use crate::http::body::BoxedRequest;

pub use exchange::BodyReader;

/// How large a response head may grow before it is refused (Envoy's default header
/// limit is 60 KiB).
const MAX_HEAD: usize = 60 * 1024;
/// Response headers accepted in one head (Envoy's default `max_headers_count`).
const MAX_HEADERS: usize = 100;

/// Why an exchange on an HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The downstream request body failed (malformed, or its client went away): the
    /// request's fault, not the upstream's.
    #[error("request body: {0}")]
    RequestBody(crate::upstream::pool::BoxError),
    /// The request body carried more or fewer bytes than its `content-length`.
    #[error("request body does not match its content-length")]
    RequestLength,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before the response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The response head is not valid HTTP/1.x.
    #[error("invalid response head: {0}")]
    Head(&'static str),
    /// The response head is larger than `MAX_HEAD` or has more than `MAX_HEADERS`.
    #[error("response head too large")]
    HeadTooLarge,
    /// The chunked response body is malformed.
    #[error("invalid chunked response body")]
    Chunk,
}

impl From<crate::h1::BodyError> for Error {
    fn from(e: crate::h1::BodyError) -> Error {
        match e {
            crate::h1::BodyError::Chunk => Error::Chunk,
            crate::h1::BodyError::TrailersTooLarge => Error::HeadTooLarge,
        }
    }
}

impl From<crate::h1::WriteError> for Error {
    fn from(e: crate::h1::WriteError) -> Error {
        match e {
            crate::h1::WriteError::Io(e) => Error::Io(e),
            crate::h1::WriteError::Body(e) => Error::RequestBody(e),
            crate::h1::WriteError::Length => Error::RequestLength,
        }
    }
}

/// A failed request and whether any of it reached the connection.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    /// The request, when nothing of it was written (it can go on another connection).
    pub unsent: Option<BoxedRequest>,
}

/// An HTTP/1.1 connection to an upstream host.
pub struct Conn {
    io: Stream,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// The encoded request head (and small body frames) being written; its capacity is
    /// kept from one request to the next.
    wbuf: Vec<u8>,
    /// Whether another request may follow the current one.
    reusable: bool,
    /// How much read buffer space to ask for (grows while reads fill it).
    read_size: usize,
    /// Scratch space for parsing response heads.
    spans: Vec<crate::h1::fields::Span>,
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            reusable: true,
            read_size: crate::h1::READ_MIN,
            spans: Vec::new(),
        }
    }

    /// Whether the connection can carry another request.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Whether an idle connection is still open: nothing (no end of stream, error or
    /// stray byte) has arrived since its last response. A readiness check, with a
    /// system call only when the socket has become readable.
    pub fn idle_open(&mut self) -> bool {
        if !self.reusable || !self.rbuf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let read = match &self.io {
            Stream::Left(tcp) => tcp.try_read(&mut byte),
            Stream::Right(unix) => unix.try_read(&mut byte),
        };
        let open = matches!(read, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
        self.reusable = open;
        open
    }

    /// For an idle connection: whether it is still open (as [`Conn::idle_open`]), and if
    /// so `cx` is woken when anything arrives on it (a close, or bytes no request asked
    /// for). Without a system call unless the socket has become readable.
    pub fn watch(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let poll = |io: &Stream, cx: &mut std::task::Context<'_>| match io {
            Stream::Left(tcp) => tcp.poll_read_ready(cx).is_pending(),
            Stream::Right(unix) => unix.poll_read_ready(cx).is_pending(),
        };
        if !self.reusable || !self.rbuf.is_empty() {
            return false;
        }
        // Readable may be what was left of the last response being read; after a read
        // that finds nothing, the next check registers `cx`.
        poll(&self.io, cx) || (self.idle_open() && poll(&self.io, cx))
    }

    /// Sends `req` and reads the response head. The body comes from the `BodyReader`,
    /// polled with this connection.
    pub async fn send(&mut self, req: BoxedRequest) -> Result<Response<BodyReader>, Failed> {
        exchange::Exchange::new(self, req).await
    }

    /// The connection after a `101 Switching Protocols`: its stream, and the bytes that
    /// came after the response head.
    pub fn into_upgraded(self) -> (Stream, BytesMut) {
        (self.io, self.rbuf)
    }
}

#[cfg(test)]
mod tests;
