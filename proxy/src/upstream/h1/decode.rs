//! Decoding a response: its head (parsed with `httparse`, values sharing the read
//! buffer), how its body is framed, and the body itself.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{response, StatusCode, Version};
use hyper::body::Frame;

use super::encode::last_coding_is_chunked;
use super::{Error, MAX_HEAD, MAX_HEADERS};
use crate::http::headers::has_token;

/// A parsed response head.
pub(super) struct Head {
    pub parts: response::Parts,
    pub body: Decoder,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Room in a response's header map beyond its own headers, for what the proxy adds
/// (`server`, `x-envoy-upstream-service-time`, route additions). hyper's server reuses a
/// response's map for the connection's next request, where the proxy adds
/// `x-forwarded-proto`, `x-request-id` and `x-envoy-expected-rq-timeout-ms`: without the
/// room, both maps would grow (rehashing every header) on every request.
const HEADER_ROOM: usize = 8;

/// Where a header's name and value lie in the head: `(name start, name end, value
/// start, value end)`.
pub(super) type Span = (usize, usize, usize, usize);

/// Parses a response head from the front of `buf`, consuming it; `None` until it is all
/// there. Interim (1xx) responses other than `101` are consumed and skipped. `spans` is
/// scratch space kept by the connection (nothing here is zeroed per response).
pub(super) fn head(
    buf: &mut BytesMut,
    head_request: bool,
    spans: &mut Vec<Span>,
) -> Result<Option<Head>, Error> {
    loop {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
            Err(_) => return Err(Error::Head("malformed")),
        };
        if !crlf_only(&buf[..len]) {
            return Err(Error::Head("bare LF"));
        }
        let code = resp.code.ok_or(Error::Head("no status"))?;
        let status = StatusCode::from_u16(code).map_err(|_| Error::Head("status"))?;
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            let _ = buf.split_to(len);
            continue;
        }
        // Where each name and value lies in the head, to slice them from it.
        // (Offsets are checked against the head below rather than trusted.)
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
        spans.clear();
        spans.extend(resp.headers.iter().map(|h| {
            let (name, value) = (at(h.name.as_bytes()), at(h.value));
            let name_end = name.wrapping_add(h.name.len());
            (name, name_end, value, value.wrapping_add(h.value.len()))
        }));
        let bytes = buf.split_to(len).freeze();
        let mut map = HeaderMap::with_capacity(spans.len() + HEADER_ROOM);
        let mut present = Present::default();
        for &(ns, ne, vs, ve) in spans.iter() {
            let name = bytes.get(ns..ne).ok_or(Error::Head("header name"))?;
            let name = HeaderName::from_bytes(name).map_err(|_| Error::Head("header name"))?;
            present.note(&name);
            let value = match bytes.get(vs..ve) {
                Some([]) | None if vs == ve => HeaderValue::from_static(""),
                Some(_) => HeaderValue::from_maybe_shared(bytes.slice(vs..ve))
                    .map_err(|_| Error::Head("header value"))?,
                None => return Err(Error::Head("header value")),
            };
            map.append(name, value);
        }
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = map;
        let (body, framed) = framing(&parts, head_request, &present)?;
        let keep_alive = framed && keep_alive(&parts.headers, version, present.connection);
        return Ok(Some(Head {
            parts,
            body,
            keep_alive,
        }));
    }
}

/// Which of the headers that frame a response it has, noted as its map is built, so
/// that the usual response (a length, no `connection`) needs no lookups.
#[derive(Default)]
struct Present {
    coding: bool,
    length: bool,
    connection: bool,
}

impl Present {
    fn note(&mut self, name: &HeaderName) {
        if *name == header::TRANSFER_ENCODING {
            self.coding = true;
        } else if *name == header::CONTENT_LENGTH {
            self.length = true;
        } else if *name == header::CONNECTION {
            self.connection = true;
        }
    }
}

/// How the body is framed (RFC 9112 §6.3), and whether that framing leaves the
/// connection fit for another request.
fn framing(
    parts: &response::Parts,
    head_request: bool,
    present: &Present,
) -> Result<(Decoder, bool), Error> {
    let status = parts.status;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Decoder::Done, status != StatusCode::SWITCHING_PROTOCOLS));
    }
    let h = &parts.headers;
    if present.coding {
        let chunked = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .is_some_and(|v| last_coding_is_chunked(v.as_bytes()));
        // With a content-length too, the coding wins; such a connection is not reused.
        let alone = !present.length;
        return Ok(if chunked {
            (Decoder::Chunked(Chunk::Size), alone)
        } else {
            (Decoder::Eof, false)
        });
    }
    let mut length = None;
    let lengths = present.length.then(|| h.get_all(header::CONTENT_LENGTH));
    for v in lengths.into_iter().flatten() {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part.trim_ascii()).ok_or(Error::Head("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Head("content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Decoder::Done, true),
        Some(n) => (Decoder::Length(n), true),
        None => (Decoder::Eof, false),
    })
}

/// Whether every line in `bytes` ends with CRLF: `httparse` also takes a bare LF, which
/// llhttp and Envoy refuse (a message two parsers split differently can smuggle).
fn crlf_only(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'))
}

/// A chunk-size line (RFC 9112 §7.1), strictly: hex digits, then CRLF, or `;` and a
/// non-empty extension up to CRLF. No whitespace after the size, no empty extension
/// (`httparse::parse_chunk_size` takes both; llhttp and Envoy refuse them).
/// `None` until the whole line is buffered.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let mut size: u64 = 0;
    for &d in &buf[..digits] {
        let v = u64::from((d as char).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or(Error::Chunk)?;
    }
    let Some(cr) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() > MAX_CHUNK_LINE {
            Err(Error::Chunk)
        } else {
            Ok(None)
        };
    };
    let ext = &buf[digits..cr];
    let ext_ok = match ext.split_first() {
        None => true,
        Some((b';', rest)) => {
            rest.first()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
                && rest.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f)
        }
        Some(_) => false,
    };
    if digits == 0 || !ext_ok || buf[cr] != b'\r' {
        return Err(Error::Chunk);
    }
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((cr + 2, size))),
        Some(_) => Err(Error::Chunk),
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether the response lets the connection stay open: HTTP/1.1 unless it says
/// `close`, HTTP/1.0 only if it says `keep-alive`.
fn keep_alive(headers: &HeaderMap, version: Version, connection: bool) -> bool {
    let has = |token| connection && has_token(headers, header::CONNECTION, token);
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailers, or the empty line.
    Trailers,
}

/// The response body's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the connection closes.
    Eof,
    /// The body has ended.
    Done,
}

/// Longest chunk-size line (with extensions) or trailer block accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Decoder {
    /// The next frame from what `buf` holds, consuming it; `None` when more bytes are
    /// needed (or the body is done). Framing that produces nothing (chunk boundaries, an
    /// empty last chunk) is consumed as far as `buf` goes, so that `Done` shows as soon
    /// as the end is buffered.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Error> {
        loop {
            match *self {
                Decoder::Done => return Ok(None),
                Decoder::Length(_) | Decoder::Eof | Decoder::Chunked(Chunk::Data(_))
                    if buf.is_empty() =>
                {
                    return Ok(None)
                }
                Decoder::Eof => return Ok(Some(Frame::data(buf.split().freeze()))),
                Decoder::Length(left) => {
                    let n = take(left, buf);
                    *self = match left - n as u64 {
                        0 => Decoder::Done,
                        left => Decoder::Length(left),
                    };
                    return Ok(Some(Frame::data(buf.split_to(n).freeze())));
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    let n = take(left, buf);
                    *self = Decoder::Chunked(match left - n as u64 {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data(left),
                    });
                    let data = buf.split_to(n).freeze();
                    self.settle(buf)?;
                    return Ok(Some(Frame::data(data)));
                }
                Decoder::Chunked(state) => {
                    if !self.chunk_step(state, buf)? {
                        return Ok(None);
                    }
                    if let Decoder::Chunked(Chunk::Trailers) = *self {
                        if let Some(trailers) = trailers(buf)? {
                            *self = Decoder::Done;
                            return Ok(trailers.map(Frame::trailers));
                        }
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Steps through the framing that yields nothing, as far as `buf` goes: the end of
    /// a chunk, size lines, and an empty trailer section.
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        while let Decoder::Chunked(state @ (Chunk::DataEnd | Chunk::Size)) = *self {
            if !self.chunk_step(state, buf)? {
                return Ok(());
            }
        }
        if *self == Decoder::Chunked(Chunk::Trailers) && buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            *self = Decoder::Done;
        }
        Ok(())
    }

    /// One step through the chunk framing that yields no data; `false` if `buf` holds
    /// too little to take it.
    fn chunk_step(&mut self, state: Chunk, buf: &mut BytesMut) -> Result<bool, Error> {
        match state {
            Chunk::Size => match chunk_size(buf)? {
                Some((len, size)) => {
                    let _ = buf.split_to(len);
                    *self = Decoder::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                    Ok(true)
                }
                None => Ok(false),
            },
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(false);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Chunk);
                }
                let _ = buf.split_to(2);
                *self = Decoder::Chunked(Chunk::Size);
                Ok(true)
            }
            Chunk::Trailers => Ok(true),
            Chunk::Data(_) => Ok(false),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Whether the body runs until the connection closes.
    pub(super) fn is_eof(&self) -> bool {
        *self == Decoder::Eof
    }

    /// The bytes still to come, when known.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

fn take(left: u64, buf: &BytesMut) -> usize {
    usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()))
}

/// The trailer section after the last chunk: `Some(None)` for none (just the empty
/// line), `Some(Some(map))` for trailers, `None` until all of it is buffered.
fn trailers(buf: &mut BytesMut) -> Result<Option<Option<HeaderMap>>, Error> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if &buf[..2] == b"\r\n" {
        let _ = buf.split_to(2);
        return Ok(Some(None));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete((len, parsed))) => {
            if !crlf_only(&buf[..len]) {
                return Err(Error::Chunk);
            }
            let mut map = HeaderMap::with_capacity(parsed.len());
            for h in parsed.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Error::Chunk)?;
                let value = HeaderValue::from_bytes(h.value).map_err(|_| Error::Chunk)?;
                map.append(name, value);
            }
            let _ = buf.split_to(len);
            Ok(Some(Some(map)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Error::Chunk),
    }
}

#[cfg(test)]
mod tests;
