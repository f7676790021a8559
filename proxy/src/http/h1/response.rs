//! Encoding a response head, straight from `Parts`, and choosing its body's framing: the
//! length it declares, else the body's own (`content-length` added), else chunks for an
//! HTTP/1.1 client and the connection's end for an HTTP/1.0 one.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{response, StatusCode, Version};
use hyper::body::Body;

use crate::h1::framing::{fields, last_coding_is_chunked, parse_length, Framing};
use crate::http::headers::lists_token;
use crate::upstream::pool::ProxyBody;

/// What the request says about how its response is sent.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub method_head: bool,
    pub version: Version,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// How the response goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// The connection stays open after the response.
    pub keep_alive: bool,
}

/// Appends the response head to `out`.
pub fn head(parts: &response::Parts, body: &ProxyBody, asked: Asked, out: &mut Vec<u8>) -> Encoded {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let declared = fields(&parts.headers, out);
    let mut keep_alive =
        asked.keep_alive && !declared.connection.is_some_and(|v| lists_token(v, "close"));
    let bodiless = asked.method_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::None
    } else if let Some(coding) = declared.coding {
        if last_coding_is_chunked(coding) && asked.version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = declared.length.and_then(|v| parse_length(v.trim_ascii())) {
        match n {
            0 => Framing::None,
            n => Framing::Length(n),
        }
    } else if body.is_end_stream() {
        out.extend_from_slice(b"content-length: 0\r\n");
        Framing::None
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        let _ = write!(out, "{n}");
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else if asked.version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    } else {
        Framing::Close
    };
    if framing == Framing::Close {
        keep_alive = false;
    }
    if !declared.date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive && declared.connection.is_none() {
        out.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive && asked.version == Version::HTTP_10 && declared.connection.is_none() {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Encoded {
        framing,
        keep_alive,
    }
}

/// `100 Continue`, sent as soon as a request that expects it has arrived (as Envoy does
/// unless `proxy_100_continue` is set).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends the current time as an HTTP date, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            c.1 = httpdate::fmt_http_date(now);
            c.0 = secs;
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests;
