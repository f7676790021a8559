//! Writing a message's head and body with the body's framing (a length or chunks).

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;

use super::framing::{fields, Framing};
use super::WriteError;

/// How much to gather into one write before writing it.
const GATHER_MAX: usize = 64 * 1024;
use crate::http::body::ProxyBody;

/// Writes a message: the head in `wbuf`, then the body frame by frame, until all is
/// written or the socket or the body has to wait.
pub struct Writer {
    framing: Framing,
    /// How much of `wbuf` has been written.
    written: usize,
    /// The body has ended (its end encoded in `wbuf`).
    body_done: bool,
    /// Some of the message has reached the connection.
    started: bool,
    /// Trailers are written (chunked only); otherwise the body ends without them.
    trailers: bool,
}

impl Writer {
    pub fn new(framing: Framing) -> Writer {
        Writer {
            framing,
            written: 0,
            body_done: framing == Framing::None,
            started: false,
            trailers: true,
        }
    }

    /// A writer that ends a chunked body without the trailers it may carry (a response
    /// to a client that did not ask for them with `te: trailers`).
    pub fn without_trailers(mut self) -> Writer {
        self.trailers = false;
        self
    }

    /// Whether any byte has been written.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Drives the write: `Ready(Ok)` once the whole message is written. Body frames that
    /// are ready go into the same write as what precedes them (the head and the first
    /// frame leave in one system call and, on a socket, one segment).
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        wbuf: &mut Vec<u8>,
        body: &mut ProxyBody,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            while !self.body_done && wbuf.len() - self.written < GATHER_MAX {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => self.encode(frame, wbuf)?,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(WriteError::Body(e))),
                    Poll::Ready(None) => self.end(wbuf)?,
                    Poll::Pending => break,
                }
            }
            if self.written == wbuf.len() {
                wbuf.clear();
                self.written = 0;
                // Nothing to write: done, or the body has to wait (and will wake us).
                return match self.body_done {
                    true => Poll::Ready(Ok(())),
                    false => Poll::Pending,
                };
            }
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &wbuf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(
                    std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                ));
            }
            self.written += n;
            self.started = true;
            if self.written == wbuf.len() {
                wbuf.clear();
                self.written = 0;
            }
        }
    }

    fn encode(&mut self, frame: Frame<bytes::Bytes>, wbuf: &mut Vec<u8>) -> Result<(), WriteError> {
        let frame = match frame.into_data() {
            Ok(data) => {
                self.data(data, wbuf)?;
                return Ok(());
            }
            Err(frame) => frame,
        };
        // Trailers end the body; only chunked coding can carry them.
        if let (Ok(trailers), Framing::Chunked, true) =
            (frame.into_trailers(), self.framing, self.trailers)
        {
            wbuf.extend_from_slice(b"0\r\n");
            fields(&trailers, wbuf);
            wbuf.extend_from_slice(b"\r\n");
            self.body_done = true;
            return Ok(());
        }
        self.end(wbuf)
    }

    fn data(&mut self, data: bytes::Bytes, wbuf: &mut Vec<u8>) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Framing::Chunked => {
                // Writing to a Vec cannot fail.
                let _ = write!(wbuf, "{:x}\r\n", data.len());
                wbuf.extend_from_slice(data.chunk());
                wbuf.extend_from_slice(b"\r\n");
            }
            Framing::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(WriteError::Length)?;
                wbuf.extend_from_slice(data.chunk());
            }
            Framing::Close => wbuf.extend_from_slice(data.chunk()),
            Framing::None => return Err(WriteError::Length),
        }
        Ok(())
    }

    /// The body ended: the last chunk, or a check that the length was met.
    fn end(&mut self, wbuf: &mut Vec<u8>) -> Result<(), WriteError> {
        self.body_done = true;
        match self.framing {
            Framing::Chunked => wbuf.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(0) | Framing::None | Framing::Close => {}
            Framing::Length(_) => return Err(WriteError::Length),
        }
        Ok(())
    }
}
