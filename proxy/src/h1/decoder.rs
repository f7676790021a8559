//! A body's decoder: a length, chunks (strictly, as llhttp and Envoy read them), or
//! everything until the connection closes.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Frame;

use super::framing::crlf_only;
use super::BodyError;

/// Trailer fields accepted after the last chunk.
const MAX_TRAILERS: usize = 100;
/// How large a trailer section may grow (Envoy's default header limit, 60 KiB).
const MAX_TRAILER_BYTES: usize = 60 * 1024;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailers, or the empty line.
    Trailers,
}

/// A body's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
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
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, BodyError> {
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
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), BodyError> {
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
    fn chunk_step(&mut self, state: Chunk, buf: &mut BytesMut) -> Result<bool, BodyError> {
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
                    return Err(BodyError::Chunk);
                }
                let _ = buf.split_to(2);
                *self = Decoder::Chunked(Chunk::Size);
                Ok(true)
            }
            Chunk::Trailers => Ok(true),
            Chunk::Data(_) => Ok(false),
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Whether the body runs until the connection closes.
    pub fn is_eof(&self) -> bool {
        *self == Decoder::Eof
    }

    /// The bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
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
fn trailers(buf: &mut BytesMut) -> Result<Option<Option<HeaderMap>>, BodyError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if &buf[..2] == b"\r\n" {
        let _ = buf.split_to(2);
        return Ok(Some(None));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete((len, parsed))) => {
            if !crlf_only(&buf[..len]) {
                return Err(BodyError::Chunk);
            }
            let mut map = HeaderMap::with_capacity(parsed.len());
            for h in parsed.iter() {
                let name =
                    HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BodyError::Chunk)?;
                let value = HeaderValue::from_bytes(h.value).map_err(|_| BodyError::Chunk)?;
                map.append(name, value);
            }
            let _ = buf.split_to(len);
            Ok(Some(Some(map)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
            Err(BodyError::TrailersTooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(BodyError::Chunk),
    }
}

/// A chunk-size line (RFC 9112 §7.1), strictly: hex digits, then CRLF, or `;` and a
/// non-empty extension up to CRLF. No whitespace after the size, no empty extension
/// (`httparse::parse_chunk_size` takes both; llhttp and Envoy refuse them).
/// `None` until the whole line is buffered.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, BodyError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let mut size: u64 = 0;
    for &d in &buf[..digits] {
        let v = u64::from((d as char).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or(BodyError::Chunk)?;
    }
    let Some(cr) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() > MAX_CHUNK_LINE {
            Err(BodyError::Chunk)
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
        return Err(BodyError::Chunk);
    }
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((cr + 2, size))),
        Some(_) => Err(BodyError::Chunk),
    }
}

#[cfg(test)]
mod tests;
