//! Decoding a response head (parsed with `httparse`, values sharing the read buffer)
//! and how its body is framed.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{response, StatusCode, Version};

use super::{Error, MAX_HEAD, MAX_HEADERS};
use crate::h1::decoder::{Chunk, Decoder};
use crate::h1::fields::{self, Present, Span};
use crate::h1::framing::{content_length, crlf_only, last_coding_is_chunked};
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
        fields::record(resp.headers, buf, spans);
        let bytes = buf.split_to(len).freeze();
        let (map, present) = fields::map(&bytes, spans, HEADER_ROOM).map_err(Error::Head)?;
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
    let length = match present.length {
        true => content_length(h).ok_or(Error::Head("content-length"))?,
        false => None,
    };
    Ok(match length {
        Some(0) => (Decoder::Done, true),
        Some(n) => (Decoder::Length(n), true),
        None => (Decoder::Eof, false),
    })
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

#[cfg(test)]
mod tests;
