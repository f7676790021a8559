//! Encoding a request: its head, straight from `Parts`, and its body's framing.

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http::header::{self, HeaderMap};
use http::{Method, Uri};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;

use super::Error;
use crate::http::body::ProxyBody;

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body follows the head.
    None,
    /// `content-length` bytes, this many still to come.
    Length(u64),
    Chunked,
}

/// Appends the request head to `out` and says how its body is framed. A body with
/// neither a length nor chunked coding is sent chunked (`transfer-encoding` added).
pub(super) fn head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_empty: bool,
    out: &mut Vec<u8>,
) -> Framing {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let declared = fields(headers, out);
    let framing = framing(&declared, body_empty);
    if framing == Framing::Chunked && declared.is_empty() {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// The framing headers of a message, noted while its fields are written (no lookups).
#[derive(Default)]
struct Declared<'a> {
    /// The last `transfer-encoding` value.
    coding: Option<&'a [u8]>,
    /// The first `content-length` value.
    length: Option<&'a [u8]>,
}

impl Declared<'_> {
    fn is_empty(&self) -> bool {
        self.coding.is_none() && self.length.is_none()
    }
}

/// Appends `name: value` lines, one per value, and notes the framing headers.
fn fields<'a>(headers: &'a HeaderMap, out: &mut Vec<u8>) -> Declared<'a> {
    let mut declared = Declared::default();
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING {
            declared.coding = Some(value.as_bytes());
        } else if *name == header::CONTENT_LENGTH && declared.length.is_none() {
            declared.length = Some(value.as_bytes());
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    declared
}

fn framing(declared: &Declared<'_>, body_empty: bool) -> Framing {
    if declared.coding.is_some_and(last_coding_is_chunked) {
        return Framing::Chunked;
    }
    let length = declared
        .length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => Framing::Length(n),
        None if body_empty => Framing::None,
        None => Framing::Chunked,
    }
}

/// Whether a `transfer-encoding` value ends with the chunked coding.
pub(super) fn last_coding_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Writes the request: the head in `wbuf`, then the body frame by frame, until all is
/// written or the socket or the body has to wait.
pub(super) struct Writer {
    framing: Framing,
    /// How much of `wbuf` has been written.
    written: usize,
    /// The body has ended (its end encoded in `wbuf`).
    body_done: bool,
    /// Some of the request has reached the connection.
    started: bool,
}

impl Writer {
    pub(super) fn new(framing: Framing) -> Writer {
        Writer {
            framing,
            written: 0,
            body_done: framing == Framing::None,
            started: false,
        }
    }

    /// Whether any byte has been written.
    pub(super) fn started(&self) -> bool {
        self.started
    }

    /// Drives the write: `Ready(Ok)` once the whole request is written.
    pub(super) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        wbuf: &mut Vec<u8>,
        body: &mut ProxyBody,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            while self.written < wbuf.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &wbuf[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                    ));
                }
                self.written += n;
                self.started = true;
            }
            wbuf.clear();
            self.written = 0;
            if self.body_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => self.encode(frame, wbuf)?,
                Some(Err(e)) => return Poll::Ready(Err(Error::RequestBody(e))),
                None => self.end(wbuf)?,
            }
        }
    }

    fn encode(&mut self, frame: Frame<bytes::Bytes>, wbuf: &mut Vec<u8>) -> Result<(), Error> {
        let frame = match frame.into_data() {
            Ok(data) => {
                self.data(data, wbuf)?;
                return Ok(());
            }
            Err(frame) => frame,
        };
        // Trailers end the body; only chunked coding can carry them.
        if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing) {
            wbuf.extend_from_slice(b"0\r\n");
            fields(&trailers, wbuf);
            wbuf.extend_from_slice(b"\r\n");
            self.body_done = true;
            return Ok(());
        }
        self.end(wbuf)
    }

    fn data(&mut self, data: bytes::Bytes, wbuf: &mut Vec<u8>) -> Result<(), Error> {
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
                    .ok_or(Error::RequestLength)?;
                wbuf.extend_from_slice(data.chunk());
            }
            Framing::None => return Err(Error::RequestLength),
        }
        Ok(())
    }

    /// The body ended: the last chunk, or a check that the length was met.
    fn end(&mut self, wbuf: &mut Vec<u8>) -> Result<(), Error> {
        self.body_done = true;
        match self.framing {
            Framing::Chunked => wbuf.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(0) | Framing::None => {}
            Framing::Length(_) => return Err(Error::RequestLength),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn encode(req: Request<()>, body_empty: bool) -> (String, Framing) {
        let mut out = Vec::new();
        let framing = head(req.method(), req.uri(), req.headers(), body_empty, &mut out);
        (String::from_utf8(out).expect("ascii head"), framing)
    }

    #[test]
    fn a_get_has_no_body() {
        let req = Request::get("/a?b=c")
            .header("host", "example")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .expect("request");
        let (head, framing) = encode(req, true);
        assert_eq!(
            head,
            "GET /a?b=c HTTP/1.1\r\nhost: example\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn a_body_without_length_goes_chunked() {
        let req = Request::post("/").body(()).expect("request");
        let (head, framing) = encode(req, false);
        assert_eq!(
            head,
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(framing, Framing::Chunked);
        let req = Request::post("/")
            .header("content-length", "5")
            .body(())
            .expect("request");
        assert_eq!(encode(req, false).1, Framing::Length(5));
        let req = Request::post("/")
            .header("transfer-encoding", "gzip, chunked")
            .body(())
            .expect("request");
        let (head, framing) = encode(req, false);
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(head.matches("transfer-encoding").count(), 1);
    }

    #[test]
    fn chunked_coding_is_found_last() {
        assert!(last_coding_is_chunked(b"chunked"));
        assert!(last_coding_is_chunked(b"gzip, Chunked "));
        assert!(!last_coding_is_chunked(b"chunked, gzip"));
        assert!(!last_coding_is_chunked(b""));
    }
}
