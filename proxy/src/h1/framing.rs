//! How a message's body is framed on the wire (RFC 9112 §6): the framing headers noted
//! while a head is written, and the checks both directions share when one is read.

use http::header::{self, HeaderMap};

/// How a body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows the head.
    None,
    /// `content-length` bytes, this many still to come.
    Length(u64),
    Chunked,
    /// Everything until the connection closes (a response to an HTTP/1.0 client that
    /// has no length).
    Close,
}

/// The framing headers of a message, noted while its fields are written (no lookups).
#[derive(Default)]
pub struct Declared<'a> {
    /// The last `transfer-encoding` value.
    pub coding: Option<&'a [u8]>,
    /// The first `content-length` value.
    pub length: Option<&'a [u8]>,
    /// The first `connection` value.
    pub connection: Option<&'a [u8]>,
    /// There is a `date` field.
    pub date: bool,
}

impl Declared<'_> {
    pub fn is_empty(&self) -> bool {
        self.coding.is_none() && self.length.is_none()
    }
}

/// Appends `name: value` lines, one per value, and notes the framing headers.
pub fn fields<'a>(headers: &'a HeaderMap, out: &mut Vec<u8>) -> Declared<'a> {
    let mut declared = Declared::default();
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING {
            declared.coding = Some(value.as_bytes());
        } else if *name == header::CONTENT_LENGTH && declared.length.is_none() {
            declared.length = Some(value.as_bytes());
        } else if *name == header::CONNECTION && declared.connection.is_none() {
            declared.connection = Some(value.as_bytes());
        } else if *name == header::DATE {
            declared.date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    declared
}

pub fn framing(declared: &Declared<'_>, body_empty: bool) -> Framing {
    if declared.coding.is_some_and(last_coding_is_chunked) {
        return Framing::Chunked;
    }
    match declared.length.and_then(|v| parse_length(v.trim_ascii())) {
        Some(n) => Framing::Length(n),
        None if body_empty => Framing::None,
        None => Framing::Chunked,
    }
}

/// Whether a `transfer-encoding` value ends with the chunked coding.
pub fn last_coding_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether every line in `bytes` ends with CRLF: `httparse` also takes a bare LF, which
/// llhttp and Envoy refuse (a message two parsers split differently can smuggle).
pub fn crlf_only(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).all(|i| i > 0 && bytes[i - 1] == b'\r')
}

/// The length `content-length` declares: `Some(None)` without one, `None` if any value is
/// not a number or two differ (a list of equal values counts as one).
pub fn content_length(headers: &HeaderMap) -> Option<Option<u64>> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part.trim_ascii())?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    Some(length)
}

/// A `content-length` value's digits as a number (at most 19 digits, nothing else).
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Nineteen digits at most: below u64::MAX, so this cannot overflow.
    Some(
        digits
            .iter()
            .fold(0, |n: u64, d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1024"), Some(1024));
        assert_eq!(parse_length(b"0001"), Some(1));
        assert_eq!(
            parse_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_length(b"10000000000000000000"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"1 2"), None);
        assert_eq!(parse_length(b"0x10"), None);
    }

    #[test]
    fn bare_line_feeds_are_found() {
        assert!(crlf_only(b"HTTP/1.1 200 OK\r\na: b\r\n\r\n"));
        assert!(crlf_only(b""));
        assert!(!crlf_only(b"\n"));
        assert!(!crlf_only(b"HTTP/1.1 200 OK\r\na: b\n\r\n"));
        assert!(!crlf_only(b"HTTP/1.1 200 OK\r\n\n"));
    }

    #[test]
    fn chunked_coding_is_found_last() {
        assert!(last_coding_is_chunked(b"chunked"));
        assert!(last_coding_is_chunked(b"gzip, Chunked "));
        assert!(!last_coding_is_chunked(b"chunked, gzip"));
        assert!(!last_coding_is_chunked(b""));
    }
}
