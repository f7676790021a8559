//! Evaluating a route's `hash_policy` on a request, as Envoy does: each rule that yields
//! a value folds it into the hash (the previous hash rotated left by one, XOR the new
//! one); a terminal rule that produced a hash ends the evaluation. A cookie rule with a
//! `ttl` and no cookie in the request generates one, returned as a `set-cookie` value
//! for the response.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Uri};

use crate::config::hash_policy::{Cookie, HashPolicy, Method};
use crate::upstream::lb::hash;

/// What the rules read from a request.
pub struct RequestHead<'a> {
    pub headers: &'a HeaderMap,
    pub uri: &'a Uri,
}

/// The request's hash (if any rule produced one) and a cookie to set on the response.
pub fn evaluate(
    policy: &HashPolicy,
    req: &RequestHead<'_>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> (Option<u64>, Option<HeaderValue>) {
    let mut acc: Option<u64> = None;
    let mut set_cookie = None;
    for rule in &policy.rules {
        let value = match &rule.method {
            Method::Header { name, rewrite } => header_hash(req, name, rewrite.as_ref()),
            Method::Cookie(c) => match cookie_value(req, &c.name) {
                Some(v) => Some(hash(v.as_bytes())),
                None => c.ttl.map(|_| {
                    let (value, header) = generate(c, peer, local);
                    set_cookie = header;
                    hash(value.as_bytes())
                }),
            },
            Method::SourceIp => peer.map(|p| hash(p.ip().to_string().as_bytes())),
            Method::QueryParameter(name) => query_value(req, name).map(|v| hash(v.as_bytes())),
        };
        if let Some(v) = value {
            acc = Some(acc.map_or(0, |h| h.rotate_left(1)) ^ v);
        }
        if rule.terminal && acc.is_some() {
            break;
        }
    }
    (acc, set_cookie)
}

/// All values of the header, sorted, hashed in sequence (each seeding the next).
fn header_hash(
    req: &RequestHead<'_>,
    name: &http::HeaderName,
    rewrite: Option<&(regex::Regex, String)>,
) -> Option<u64> {
    let mut values: Vec<std::borrow::Cow<'_, [u8]>> = req
        .headers
        .get_all(name)
        .iter()
        .map(|v| match rewrite {
            Some((re, with)) => match std::str::from_utf8(v.as_bytes()) {
                Ok(s) => std::borrow::Cow::Owned(
                    re.replace_all(s, with.as_str()).into_owned().into_bytes(),
                ),
                Err(_) => std::borrow::Cow::Borrowed(v.as_bytes()),
            },
            None => std::borrow::Cow::Borrowed(v.as_bytes()),
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort();
    Some(
        values
            .iter()
            .fold(0u64, |seed, v| xxhash_rust::xxh64::xxh64(v, seed)),
    )
}

/// The value of cookie `name` in the request's `cookie` headers (quotes removed).
fn cookie_value<'a>(req: &RequestHead<'a>, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
}

/// The first value of query parameter `name`, as written.
fn query_value<'a>(req: &RequestHead<'a>, name: &str) -> Option<&'a str> {
    req.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A cookie value from the connection's addresses (the same for every request on it)
/// and the `set-cookie` header carrying it.
fn generate(
    c: &Cookie,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> (String, Option<HeaderValue>) {
    let addrs = format!(
        "{}{}",
        peer.map(|a| a.to_string()).unwrap_or_default(),
        local.map(|a| a.to_string()).unwrap_or_default()
    );
    let value = format!("{:016x}", hash(addrs.as_bytes()));
    let mut header = format!("{}=\"{}\"", c.name, value);
    if let Some(ttl) = c.ttl.filter(|t| !t.is_zero()) {
        header.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if !c.path.is_empty() {
        header.push_str(&format!("; Path={}", c.path));
    }
    for (k, v) in &c.attributes {
        if v.is_empty() {
            header.push_str(&format!("; {k}"));
        } else {
            header.push_str(&format!("; {k}={v}"));
        }
    }
    header.push_str("; HttpOnly");
    (value, HeaderValue::from_str(&header).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hash_policy::Rule;

    use http::request::Parts;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn head(p: &Parts) -> RequestHead<'_> {
        RequestHead {
            headers: &p.headers,
            uri: &p.uri,
        }
    }

    fn policy(methods: Vec<(Method, bool)>) -> HashPolicy {
        HashPolicy {
            rules: methods
                .into_iter()
                .map(|(method, terminal)| Rule { method, terminal })
                .collect(),
        }
    }

    #[test]
    fn header_cookie_query_and_source_ip() {
        let header = policy(vec![(
            Method::Header {
                name: http::HeaderName::from_static("x-user"),
                rewrite: None,
            },
            false,
        )]);
        let req = parts("/", &[("x-user", "alice")]);
        assert_eq!(
            evaluate(&header, &head(&req), None, None).0,
            Some(hash(b"alice"))
        );
        assert_eq!(
            evaluate(&header, &head(&parts("/", &[])), None, None).0,
            None
        );

        let cookie = policy(vec![(
            Method::Cookie(Cookie {
                name: "session".into(),
                ttl: None,
                path: String::new(),
                attributes: vec![],
            }),
            false,
        )]);
        let req = parts("/", &[("cookie", "a=1; session=\"abc\"")]);
        assert_eq!(
            evaluate(&cookie, &head(&req), None, None).0,
            Some(hash(b"abc"))
        );

        let query = policy(vec![(Method::QueryParameter("id".into()), false)]);
        let req = parts("/p?x=1&id=42", &[]);
        assert_eq!(
            evaluate(&query, &head(&req), None, None).0,
            Some(hash(b"42"))
        );

        let ip = policy(vec![(Method::SourceIp, false)]);
        let peer: SocketAddr = "10.1.2.3:5555".parse().expect("addr");
        assert_eq!(
            evaluate(&ip, &head(&parts("/", &[])), Some(peer), None).0,
            Some(hash(b"10.1.2.3"))
        );
    }

    #[test]
    fn rules_fold_and_terminal_stops() {
        let a = Method::QueryParameter("a".into());
        let b = Method::QueryParameter("b".into());
        let req = parts("/?a=1&b=2", &[]);
        let both = policy(vec![(a.clone(), false), (b.clone(), false)]);
        let expected = hash(b"1").rotate_left(1) ^ hash(b"2");
        assert_eq!(evaluate(&both, &head(&req), None, None).0, Some(expected));
        let first = policy(vec![(a, true), (b, false)]);
        assert_eq!(
            evaluate(&first, &head(&req), None, None).0,
            Some(hash(b"1"))
        );
    }

    #[test]
    fn a_missing_cookie_with_ttl_is_generated() {
        let p = policy(vec![(
            Method::Cookie(Cookie {
                name: "lb".into(),
                ttl: Some(std::time::Duration::from_secs(60)),
                path: "/app".into(),
                attributes: vec![],
            }),
            false,
        )]);
        let peer = "10.0.0.1:4000".parse().ok();
        let local = "10.0.0.2:80".parse().ok();
        let (h, set) = evaluate(&p, &head(&parts("/", &[])), peer, local);
        let set = set.expect("set-cookie");
        let set = set.to_str().expect("ascii");
        let value = set
            .strip_prefix("lb=\"")
            .and_then(|s| s.split('"').next())
            .expect("value");
        assert_eq!(h, Some(hash(value.as_bytes())));
        assert!(set.ends_with("; Max-Age=60; Path=/app; HttpOnly"), "{set}");
        // The same connection gets the same cookie.
        assert_eq!(evaluate(&p, &head(&parts("/", &[])), peer, local).0, h);
    }
}
