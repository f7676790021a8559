//! Parsing a request head (with `httparse`, values sharing the read buffer) and how its
//! body is framed, as Envoy 1.40 reads them: one framing, either `transfer-encoding:
//! chunked` (any other coding is 501) or one `content-length` (lengths that disagree, or
//! both framings, are 400). Like Envoy, a bare LF ends a line as CRLF does.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Method, Uri, Version};

use crate::h1::decoder::{Chunk, Decoder};
use crate::h1::fields::{self, Present, Span};
use crate::h1::framing::content_length;
use crate::http::body::{BoxedRequest, ProxyBody};
use crate::http::headers::has_token;

/// Room in a request's header map beyond its own headers, for what the proxy adds
/// (`x-forwarded-for`, `x-forwarded-proto`, `x-request-id`, `x-envoy-*`, route
/// additions), so that the map does not grow (rehashing every header) on the way.
const HEADER_ROOM: usize = 8;

/// Header fields parsed into stack space; a limit above this takes a heap buffer.
const STACK_HEADERS: usize = 100;

/// A parsed request head.
pub struct Head {
    /// The request, boxed where it is made (it travels far); its body is set once the
    /// connection has read the head.
    pub req: BoxedRequest,
    pub body: Decoder,
    /// The client asks for the connection to close after this request
    /// (`connection: close`, or HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// `expect: 100-continue`.
    pub expect_continue: bool,
    /// It asks to switch protocols (`upgrade`), or is a `CONNECT`.
    pub upgrade: bool,
    /// It has a `te` field.
    pub te: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not valid HTTP/1.x, or framed ambiguously: 400.
    Malformed(&'static str),
    /// Larger than the header limit, or more fields than allowed: 431.
    TooLarge,
    /// A transfer coding other than `chunked` alone: 501.
    Coding,
}

/// The connection manager's header limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of head (`max_request_headers_kb`).
    pub bytes: usize,
    /// Header fields (`max_headers_count`).
    pub count: usize,
}

/// Parses a request head from the front of `buf`, consuming it; `None` until it is all
/// there. `spans` is scratch space kept by the connection.
pub fn parse(
    buf: &mut BytesMut,
    limits: Limits,
    spans: &mut Vec<Span>,
) -> Result<Option<Head>, Refused> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if limits.count <= STACK_HEADERS {
        &mut stack[..limits.count]
    } else {
        heap.resize_with(limits.count, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.bytes => return Err(Refused::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.bytes => return Err(Refused::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLarge),
        Err(_) => return Err(Refused::Malformed("malformed head")),
    };
    let method = req.method.ok_or(Refused::Malformed("method"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Refused::Malformed("method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let path = req.path.ok_or(Refused::Malformed("request target"))?;
    let base = buf.as_ptr() as usize;
    let path_at = (path.as_ptr() as usize).wrapping_sub(base);
    let path_end = path_at.wrapping_add(path.len());
    fields::record(req.headers, buf, spans);
    let bytes = buf.split_to(len).freeze();
    let target = bytes
        .get(path_at..path_end)
        .map(|_| bytes.slice(path_at..path_end))
        .ok_or(Refused::Malformed("request target"))?;
    let uri = Uri::from_maybe_shared(target).map_err(|_| Refused::Malformed("request target"))?;
    let (headers, present) = fields::map(&bytes, spans, HEADER_ROOM).map_err(Refused::Malformed)?;
    let body = framing(&headers, version, &present)?;
    let token = |t| present.connection && has_token(&headers, header::CONNECTION, t);
    let close = if version == Version::HTTP_10 {
        !token("keep-alive")
    } else {
        token("close")
    };
    let expect_continue = version == Version::HTTP_11
        && present.expect
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = present.upgrade || method == Method::CONNECT;
    let mut req = Box::new(http::Request::new(ProxyBody::Empty));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Head {
        req,
        body,
        close,
        expect_continue,
        upgrade,
        te: present.te,
    }))
}

/// How the request body is framed (RFC 9112 §6.3), refusing what two parsers could read
/// differently, as Envoy does: a coding other than `chunked` alone (one field), a coding
/// with a length, a coding in HTTP/1.0, or lengths that disagree.
fn framing(headers: &HeaderMap, version: Version, present: &Present) -> Result<Decoder, Refused> {
    if present.coding {
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        let chunked = codings
            .next()
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked || codings.next().is_some() {
            return Err(Refused::Coding);
        }
        if version == Version::HTTP_10 {
            return Err(Refused::Malformed("transfer-encoding in HTTP/1.0"));
        }
        if present.length {
            return Err(Refused::Malformed("transfer-encoding with content-length"));
        }
        return Ok(Decoder::Chunked(Chunk::Size));
    }
    if !present.length {
        return Ok(Decoder::Done);
    }
    match content_length(headers) {
        Some(Some(0)) | Some(None) => Ok(Decoder::Done),
        Some(Some(n)) => Ok(Decoder::Length(n)),
        None => Err(Refused::Malformed("content-length")),
    }
}

/// Reads `data` as the bytes of one client connection: heads one after another, each
/// body decoded from the bytes after it, until they run out or a head is refused.
/// Returns the heads read. For the fuzz target (`fuzz/fuzz_targets/request_heads.rs`):
/// nothing in here may panic, every head consumes bytes, and every decoded body frame
/// consumes bytes or ends the body (or the server loop would spin).
#[doc(hidden)]
pub fn read_requests_for_fuzzing(data: &[u8]) -> usize {
    let mut buf = BytesMut::from(data);
    let limits = Limits {
        bytes: 60 * 1024,
        count: 100,
    };
    let mut spans = Vec::new();
    let mut heads = 0;
    loop {
        let before = buf.len();
        let head = match parse(&mut buf, limits, &mut spans) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return heads,
        };
        assert!(buf.len() < before, "a head consumed nothing");
        heads += 1;
        let mut body = head.body;
        loop {
            let before = buf.len();
            match body.decode(&mut buf) {
                Ok(Some(_)) => assert!(
                    buf.len() < before || body.is_done(),
                    "a body frame consumed nothing"
                ),
                Ok(None) if body.is_done() => break,
                Ok(None) | Err(_) => return heads,
            }
        }
    }
}

#[cfg(test)]
mod tests;
