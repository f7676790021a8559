//! A downstream connection's state, shared by the connection's own loop (which reads
//! request heads and writes responses) and the body of the request in flight (which
//! reads the rest of the request, wherever it is polled from).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h1::decoder::Decoder;
use crate::h1::BodyError;
use crate::upstream::connect::Io;

/// The connection, behind a lock that is never contended: the loop and the body run on
/// the same worker thread, and neither holds it across a wait.
pub type Conn = Arc<Mutex<Shared<dyn Io>>>;

pub struct Shared<I: ?Sized> {
    /// Bytes read and not yet consumed.
    pub rbuf: BytesMut,
    read_size: usize,
    /// The body of the request in flight (`Done` once all of it has been read).
    pub body: Decoder,
    /// The request body failed (malformed, or the client went away mid-body): the
    /// connection cannot carry another request.
    pub broken: bool,
    pub io: I,
}

/// A new connection's state.
pub fn new<I: Io>(io: I) -> Conn {
    Arc::new(Mutex::new(Shared {
        rbuf: BytesMut::new(),
        read_size: crate::h1::READ_MIN,
        body: Decoder::Done,
        broken: false,
        io,
    }))
}

/// The state, for a moment (a poisoned lock only means a panic elsewhere; the state
/// itself is whole).
pub fn lock(conn: &Conn) -> MutexGuard<'_, Shared<dyn Io>> {
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared<dyn Io> {
    /// Reads what the socket has into the read buffer.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            self.rbuf = super::scratch::take_read();
        }
        crate::h1::poll_fill(&mut self.io, &mut self.rbuf, &mut self.read_size, cx)
    }

    /// Writes all of `buf`, from `*written` on.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        written: &mut usize,
    ) -> Poll<std::io::Result<()>> {
        while *written < buf.len() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &buf[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("{0}")]
    Malformed(#[from] BodyError),
    #[error("connection closed before the request body was complete")]
    Closed,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Polled again after one of the above.
    #[error("the request body failed earlier")]
    Failed,
}

/// The body of a request, read from its connection as it is polled.
pub struct RequestBody {
    conn: Conn,
}

impl RequestBody {
    pub fn new(conn: Conn) -> RequestBody {
        RequestBody { conn }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let mut s = lock(&self.conn);
        let s = &mut *s;
        if s.broken {
            return Poll::Ready(Some(Err(BodyReadError::Failed)));
        }
        loop {
            match s.body.decode(&mut s.rbuf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if s.body.is_done() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return fail(s, e.into()),
            }
            match s.poll_read(cx) {
                Poll::Ready(Ok(0)) => return fail(s, BodyReadError::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return fail(s, e.into()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        lock(&self.conn).body.is_done()
    }

    pub fn size_hint(&self) -> SizeHint {
        match lock(&self.conn).body.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

fn fail(
    s: &mut Shared<dyn Io>,
    e: BodyReadError,
) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
    s.broken = true;
    s.body = Decoder::Done;
    Poll::Ready(Some(Err(e)))
}

/// A connection after `101 Switching Protocols` (or a `CONNECT`'s 2xx): the bytes the
/// client sent after its request head come first, then the socket's.
pub struct Upgraded {
    conn: Conn,
}

impl Upgraded {
    pub fn new(conn: Conn) -> Upgraded {
        Upgraded { conn }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut s = lock(&self.conn);
        if !s.rbuf.is_empty() {
            let n = s.rbuf.len().min(buf.remaining());
            buf.put_slice(&s.rbuf.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut s.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut Locked(&self.conn)).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut Locked(&self.conn)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut Locked(&self.conn)).poll_shutdown(cx)
    }
}

/// The connection's socket, locked for each write (never while the body being written is
/// polled: that body may be reading the request from this same connection).
pub struct Locked<'a>(pub &'a Conn);

impl AsyncWrite for Locked<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut lock(self.0).io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut lock(self.0).io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut lock(self.0).io).poll_shutdown(cx)
    }
}
