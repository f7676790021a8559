//! Header and path handling shared by the request and response paths.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Connection-specific headers never forwarded (RFC 9110 §7.6.1), plus any named in
/// `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
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

/// Whether `TE` asks for trailers (the only `TE` value forwarded, as gRPC needs it).
pub fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The upgrade type of a request (`Connection: upgrade` + `Upgrade: x`), lowercased.
pub fn upgrade_type(headers: &HeaderMap) -> Option<String> {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !conn_upgrade {
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
pub fn normalize(
    path_and_query: &str,
    normalize_path: bool,
    merge_slashes: bool,
) -> Option<String> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
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
    Some(path + query)
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

/// Appends `ip` to `x-forwarded-for` (Envoy does this when `use_remote_address` is set).
pub fn append_xff(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let ip = crate::config::listener::canonical(ip).to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

/// Whether a remote address is internal (RFC 1918, loopback, unique local), as Envoy's
/// default internal address check decides `x-envoy-internal`.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    match crate::config::listener::canonical(ip) {
        std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
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
    fn xff_and_internal() {
        let mut h = HeaderMap::new();
        append_xff(&mut h, "10.0.0.1".parse().unwrap());
        append_xff(&mut h, "::ffff:1.2.3.4".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1,1.2.3.4");
        assert!(is_internal("192.168.1.1".parse().unwrap()));
        assert!(!is_internal("8.8.8.8".parse().unwrap()));
        assert_eq!(new_request_id().len(), 36);
    }
}
