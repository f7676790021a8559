//! One request on a connection: written while its response head is read, then the
//! response body, read by whoever polls the `BodyReader` (with what is left of the
//! request body written along the way).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use super::decode;
use super::encode;
use super::{Conn, Error, Failed};
use crate::h1::decoder::Decoder;
use crate::h1::framing::Framing;
use crate::h1::writer::Writer;
use crate::h1::WriteError;
use crate::http::body::{BoxedRequest, ProxyBody};

/// Sends a request and resolves with the response head.
pub(super) struct Exchange<'c> {
    conn: &'c mut Conn,
    /// The request until its response head arrives (or the exchange fails).
    req: Option<BoxedRequest>,
    writer: Writer,
    /// The whole request has been written.
    written: bool,
    head_request: bool,
}

impl<'c> Exchange<'c> {
    pub(super) fn new(conn: &'c mut Conn, req: BoxedRequest) -> Exchange<'c> {
        conn.wbuf.clear();
        let empty = req.body().is_end_stream();
        let framing = encode::head(
            req.method(),
            req.uri(),
            req.headers(),
            empty,
            &mut conn.wbuf,
        );
        Exchange {
            conn,
            head_request: req.method() == Method::HEAD,
            req: Some(req),
            writer: Writer::new(framing),
            written: false,
        }
    }

    /// The exchange failed: the connection is done for, and the request comes back if
    /// none of it was written and the failure was not its own (a request whose body
    /// failed, or broke its length, must not be sent again).
    fn fail(&mut self, error: Error) -> Failed {
        self.conn.reusable = false;
        let own = matches!(error, Error::RequestBody(_) | Error::RequestLength);
        let unsent = if self.writer.started() || own {
            None
        } else {
            self.req.take()
        };
        Failed { error, unsent }
    }

    fn respond(&mut self, head: decode::Head) -> Response<BodyReader> {
        let conn = &mut *self.conn;
        conn.reusable &= head.keep_alive;
        // A response already complete leaves the connection unfit if the request was
        // not all written, or bytes follow it.
        if head.body.is_done() && (!self.written || !conn.rbuf.is_empty()) {
            conn.reusable = false;
        }
        // The request head is written: its map goes back to the thread.
        let body = self.req.take().map(|mut req| {
            crate::h1::maps::put(std::mem::take(req.headers_mut()));
            req.into_body()
        });
        let rest = body
            .filter(|_| !self.written && head.parts.status != StatusCode::SWITCHING_PROTOCOLS)
            .map(|body| {
                let writer = std::mem::replace(&mut self.writer, Writer::new(Framing::None));
                Box::new(Rest { writer, body })
            });
        Response::from_parts(
            head.parts,
            BodyReader {
                decoder: head.body,
                rest,
            },
        )
    }
}

impl Future for Exchange<'_> {
    type Output = Result<Response<BodyReader>, Failed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(req) = this.req.as_mut() else {
            return Poll::Ready(Err(Failed {
                error: Error::Closed,
                unsent: None,
            }));
        };
        if !this.written {
            let conn = &mut *this.conn;
            match this
                .writer
                .poll_write(&mut conn.io, &mut conn.wbuf, req.body_mut(), cx)
            {
                Poll::Ready(Ok(())) => this.written = true,
                // The upstream may have answered already (and closed); its response is
                // read below, and failing that, the read's error is the one reported.
                Poll::Ready(Err(WriteError::Io(_))) => {
                    this.written = true;
                    this.conn.reusable = false;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(this.fail(e.into()))),
                Poll::Pending => {}
            }
        }
        loop {
            let conn = &mut *this.conn;
            match decode::head(&mut conn.rbuf, this.head_request, &mut conn.spans) {
                Ok(Some(head)) => return Poll::Ready(Ok(this.respond(head))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(this.fail(e))),
            }
            match this.conn.poll_read(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(this.fail(Error::Closed))),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(this.fail(e.into()))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Conn {
    /// Reads what the socket has into the read buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        crate::h1::poll_fill(&mut self.io, &mut self.rbuf, &mut self.read_size, cx)
    }
}

/// What is left of the request to write once its response has started.
struct Rest {
    writer: Writer,
    body: ProxyBody,
}

/// A response body, read from the connection it came on (which the caller keeps and
/// passes in).
pub struct BodyReader {
    decoder: Decoder,
    rest: Option<Box<Rest>>,
}

impl BodyReader {
    /// The next frame. When the body ends, the connection is left reusable only if the
    /// request was all written and nothing follows the response.
    pub fn poll_frame(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(rest) = self.rest.as_mut() {
            match rest
                .writer
                .poll_write(&mut conn.io, &mut conn.wbuf, &mut rest.body, cx)
            {
                Poll::Ready(Ok(())) => self.rest = None,
                Poll::Ready(Err(e)) => return self.fail(conn, e.into()),
                Poll::Pending => {}
            }
        }
        loop {
            match self.decoder.decode(&mut conn.rbuf) {
                Ok(Some(frame)) => {
                    if self.decoder.is_done() {
                        self.finish(conn);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if self.decoder.is_done() => {
                    self.finish(conn);
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => return self.fail(conn, e.into()),
            }
            match conn.poll_read(cx) {
                Poll::Ready(Ok(0)) if self.decoder.is_eof() => {
                    self.decoder = Decoder::Done;
                    self.finish(conn);
                    conn.reusable = false;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return self.fail(conn, Error::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return self.fail(conn, e.into()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn finish(&mut self, conn: &mut Conn) {
        if self.rest.take().is_some() || !conn.rbuf.is_empty() {
            conn.reusable = false;
        }
    }

    fn fail(&mut self, conn: &mut Conn, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        conn.reusable = false;
        self.rest = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(e)))
    }

    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
