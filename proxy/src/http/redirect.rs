//! Building the `location` of a redirect route.

use http::header::{self, HeaderValue};
use http::Response;

use crate::config::route::{PathMatch, Redirect, RedirectPath, Route};
use crate::routing::strip_port;
use crate::upstream::pool::ProxyBody;

pub fn respond(
    rd: &Redirect,
    route: &Route,
    scheme: &str,
    host: &str,
    path_and_query: &str,
) -> Response<ProxyBody> {
    let location = location(rd, route, scheme, host, path_and_query);
    let mut r = Response::new(super::body::empty());
    *r.status_mut() = rd.status;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = http::StatusCode::BAD_REQUEST,
    }
    // Envoy words a redirect's details as a direct response's.
    r.extensions_mut().insert(super::local_reply::Marked {
        flag: None,
        details: "direct_response",
    });
    r
}

fn default_port(scheme: &str) -> &'static str {
    if scheme == "https" {
        "443"
    } else {
        "80"
    }
}

pub fn location(
    rd: &Redirect,
    route: &Route,
    scheme: &str,
    host: &str,
    path_and_query: &str,
) -> String {
    let new_scheme = rd.scheme.as_deref().unwrap_or(scheme);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    // Host and port.
    let mut host_out = rd.host.clone().unwrap_or_else(|| host.to_string());
    let host_port = host_out
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if let Some(port) = rd.port {
        host_out = format!("{}:{port}", strip_port(&host_out));
    } else if rd.scheme.is_some() && host_port.as_deref() == Some(default_port(scheme)) {
        // Switching scheme drops the old scheme's default port.
        host_out = strip_port(&host_out).to_string();
    }
    if host_out.ends_with(&format!(":{}", default_port(new_scheme))) {
        host_out = strip_port(&host_out).to_string();
    }
    // Path and query.
    let (new_path, mut new_query) = match &rd.path {
        RedirectPath::Keep => (path.to_string(), query.map(str::to_string)),
        RedirectPath::Path(p) => match p.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (p.clone(), query.map(str::to_string)),
        },
        RedirectPath::Prefix(prefix) => {
            let matched = match &route.matcher.path {
                PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len().min(path.len()),
                _ => path.len(),
            };
            (
                format!("{prefix}{}", &path[matched..]),
                query.map(str::to_string),
            )
        }
        RedirectPath::Regex(re, sub) => (
            re.replace_all(path, sub.as_str()).into_owned(),
            query.map(str::to_string),
        ),
    };
    if rd.strip_query {
        new_query = None;
    }
    match new_query {
        Some(q) => format!("{new_scheme}://{host_out}{new_path}?{q}"),
        None => format!("{new_scheme}://{host_out}{new_path}"),
    }
}
