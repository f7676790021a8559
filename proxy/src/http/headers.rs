//! Header and path handling shared by the request and response paths.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Request;

/// Names of the headers the proxy adds, as constants (no allocation per request).
pub mod names {
    use http::header::HeaderName;

    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
    pub const X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
        HeaderName::from_static("x-envoy-external-address");
    pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
        HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
    pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
        HeaderName::from_static("x-envoy-upstream-service-time");
    pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
    pub const X_ENVOY_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");
    pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
    pub const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
    // Consumed from requests (never forwarded):
    pub const X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
    pub const X_ENVOY_RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
    pub const X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
    pub const X_ENVOY_RETRIABLE_STATUS_CODES: HeaderName =
        HeaderName::from_static("x-envoy-retriable-status-codes");
    pub const X_ENVOY_RETRIABLE_HEADER_NAMES: HeaderName =
        HeaderName::from_static("x-envoy-retriable-header-names");
    pub const X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
        HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
    pub const X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
        HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
    // Read from upstream responses:
    pub const X_ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");
    pub const X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL: HeaderName =
        HeaderName::from_static("x-envoy-immediate-health-check-fail");
}

/// Whether any request-control `x-envoy-*` header is present (one pass over the names;
/// most requests have none, and then nothing needs looking up or removing).
pub fn has_envoy_headers(h: &HeaderMap) -> bool {
    h.keys().any(is_envoy_header)
}

/// Whether `name` is an `x-envoy-*` header.
pub fn is_envoy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-envoy-")
}

/// A small non-negative number as a header value; 0..100 come from a static table.
pub fn number(n: u64) -> HeaderValue {
    const SMALL: [&str; 100] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
        "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46",
        "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61",
        "62", "63", "64", "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76",
        "77", "78", "79", "80", "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91",
        "92", "93", "94", "95", "96", "97", "98", "99",
    ];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Connection-specific headers never forwarded (RFC 9110 §7.6.1), plus any named in
/// `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The common case, none at all, is one pass over the names instead of a lookup
    // for each.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::TRANSFER_ENCODING,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
    ] {
        headers.remove(n);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Whether `n` is one of the connection-specific headers always stripped. (Those named
/// only in `Connection` need it present, which this also finds.)
fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TRANSFER_ENCODING
        || n == header::TE
        || n == header::UPGRADE
        || n.as_str() == "keep-alive"
        || n.as_str() == "proxy-connection"
}

/// Whether any `name` header lists `token` (comma-separated, case-insensitive).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter(|v| v.to_str().is_ok())
        .any(|v| lists_token(v.as_bytes(), token))
}

/// Whether a comma-separated value lists `token` (case-insensitively).
pub fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `TE` asks for trailers (the only `TE` value forwarded, as gRPC needs it).
pub fn te_trailers(headers: &HeaderMap) -> bool {
    has_token(headers, header::TE, "trailers")
}

/// The upgrade type of a request (`Connection: upgrade` + `Upgrade: x`), lowercased.
pub fn upgrade_type(headers: &HeaderMap) -> Option<String> {
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return None;
    }
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
}

/// Path normalization as Envoy's `normalize_path` (RFC 3986 dot-segment removal, with
/// percent-encoded unreserved characters decoded and backslashes turned into slashes) and
/// `merge_slashes`. The query string is left alone. `None`: the path cannot be normalized.
/// A path normalization would not change (most) is returned as it is, without a copy.
pub fn normalize(
    path_and_query: &str,
    normalize_path: bool,
    merge_slashes: bool,
) -> Option<Cow<'_, str>> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    if already_normal(path, normalize_path, merge_slashes) {
        return Some(Cow::Borrowed(path_and_query));
    }
    rewrite(path, normalize_path, merge_slashes).map(|p| Cow::Owned(p + query))
}

/// Whether normalizing would leave `path` as it is: it starts with `/` and has nothing
/// to decode or turn (`%`, `\`), no segment that could be a dot segment (no `/.`), and,
/// when slashes are merged, no `//`.
fn already_normal(path: &str, normalize_path: bool, merge_slashes: bool) -> bool {
    let b = path.as_bytes();
    if normalize_path
        && (!b.starts_with(b"/")
            || memchr::memchr2(b'%', b'\\', b).is_some()
            || memchr::memmem::find(b, b"/.").is_some())
    {
        return false;
    }
    !(merge_slashes && memchr::memmem::find(b, b"//").is_some())
}

/// The normalized path (without its query).
fn rewrite(path: &str, normalize_path: bool, merge_slashes: bool) -> Option<String> {
    let mut path = path.to_string();
    if normalize_path {
        path = decode_unreserved(&path)?.replace('\\', "/");
        path = remove_dot_segments(&path)?;
    }
    if merge_slashes {
        let mut merged = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        path = merged;
    }
    Some(path)
}

fn decode_unreserved(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(v);
            } else {
                out.extend_from_slice(b"%");
                out.extend(hex.iter().map(u8::to_ascii_uppercase));
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn remove_dot_segments(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    Some(s)
}

/// Appends a hop to `x-forwarded-for` (Envoy does this when `use_remote_address` is set).
pub fn append_xff(headers: &mut HeaderMap, hop: &HeaderValue) {
    let value = match headers.get(names::X_FORWARDED_FOR) {
        Some(existing) if !existing.is_empty() => {
            let mut v = Vec::with_capacity(existing.len() + 1 + hop.len());
            v.extend_from_slice(existing.as_bytes());
            v.push(b',');
            v.extend_from_slice(hop.as_bytes());
            match HeaderValue::from_bytes(&v) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        _ => hop.clone(),
    };
    headers.insert(names::X_FORWARDED_FOR, value);
}

pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

/// A copy of a request's head: method, URI, version and headers (extensions are not
/// carried over), for another attempt or a mirror.
pub fn copy_head<B>(req: &Request<B>) -> Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_envoy() {
        assert_eq!(
            normalize("/a/./b/../c?x=/../", true, false).as_deref(),
            Some("/a/c?x=/../")
        );
        assert_eq!(normalize("/a/%2E%2e/b", true, false).as_deref(), Some("/b"));
        assert_eq!(normalize("/..", true, false).as_deref(), Some("/"));
        assert_eq!(
            normalize("/a//b///c", false, true).as_deref(),
            Some("/a/b/c")
        );
        assert_eq!(normalize("/a\\b", true, false).as_deref(), Some("/a/b"));
        assert_eq!(normalize("/a%2fb", true, false).as_deref(), Some("/a%2Fb"));
        assert_eq!(normalize("/dir/.", true, false).as_deref(), Some("/dir/"));
        assert_eq!(normalize("/bad%zz", true, false), None);
        assert!(matches!(
            normalize("/a/b.c/d?x=//./", true, true),
            Some(Cow::Borrowed("/a/b.c/d?x=//./"))
        ));
    }

    #[test]
    fn paths_left_alone_are_those_normalizing_would_not_change() {
        for path in [
            "/", "/a", "/a/", "/a//b", "/a.b/c", "/a/b.", "/~x/y-z_", "/a/b..c",
        ] {
            for (n, m) in [(true, false), (false, true), (true, true)] {
                if already_normal(path, n, m) {
                    assert_eq!(rewrite(path, n, m).as_deref(), Some(path), "{path} {n} {m}");
                }
            }
        }
        assert!(!already_normal("/a/./b", true, false));
        assert!(!already_normal("/a//b", false, true));
        assert!(!already_normal("a/b", true, false));
        assert!(!already_normal("/a%41", true, false));
    }

    #[test]
    fn hop_by_hop_and_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "WebSocket".parse().unwrap());
        assert_eq!(upgrade_type(&h).as_deref(), Some("websocket"));
    }

    #[test]
    fn numbers() {
        assert_eq!(number(0), "0");
        assert_eq!(number(99), "99");
        assert_eq!(number(100), "100");
        assert_eq!(number(15000), "15000");
    }

    #[test]
    fn xff_and_request_id() {
        let mut h = HeaderMap::new();
        append_xff(&mut h, &HeaderValue::from_static("10.0.0.1"));
        append_xff(&mut h, &HeaderValue::from_static("1.2.3.4"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1,1.2.3.4");
        assert_eq!(new_request_id().len(), 36);
    }
}
