//! Envoy's access-log format strings: literal text and `%COMMAND%` operators, parsed
//! when config is built and rendered once per stream.

use std::fmt::Write;

use super::Entry;

/// Envoy's default format (used when a logger sets none).
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Op(Op),
}

/// A header operator's names: the header, its fallback, and the longest value printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderOp {
    pub name: String,
    pub alt: Option<String>,
    pub max_len: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    StartTime,
    Req(HeaderOp),
    Resp(HeaderOp),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RouteName,
    /// Operators that are always `-` on this proxy's streams (no TLS, no connection
    /// termination details).
    Dash,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unterminated command at byte {0}")]
    Unterminated(usize),
    #[error("command operator {0} is not supported")]
    Unsupported(String),
    #[error("{0}: bad argument")]
    BadArgument(String),
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            // `%%` is a literal percent sign.
            if let Some(r) = after.strip_prefix('%') {
                text.push('%');
                rest = r;
                continue;
            }
            let end = command_end(after).ok_or(FormatError::Unterminated(s.len() - rest.len()))?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Op(op(&after[..end])?));
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format { pieces })
    }

    /// Names of the request headers the format prints (lowercase).
    pub fn request_headers(&self) -> impl Iterator<Item = &HeaderOp> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Op(Op::Req(h)) => Some(h),
            _ => None,
        })
    }

    pub fn render(&self, e: &Entry, out: &mut String) {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Op(op) => render_op(op, e, out),
            }
        }
    }
}

/// Where a command that starts right after a `%` ends (its closing `%`), skipping `%`
/// inside parentheses.
fn command_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn op(cmd: &str) -> Result<Op, FormatError> {
    let (name, arg, max_len) = split_command(cmd)?;
    let plain = |o: Op| match arg {
        None if max_len.is_none() => Ok(o),
        _ => Err(FormatError::Unsupported(cmd.to_string())),
    };
    match name {
        "REQ" | "RESP" => {
            let arg = arg.ok_or_else(|| FormatError::BadArgument(cmd.to_string()))?;
            let (header, alt) = match arg.split_once('?') {
                Some((a, b)) => (a, Some(b.to_ascii_lowercase())),
                None => (arg, None),
            };
            if header.is_empty() || alt.as_deref() == Some("") {
                return Err(FormatError::BadArgument(cmd.to_string()));
            }
            let h = HeaderOp {
                name: header.to_ascii_lowercase(),
                alt,
                max_len,
            };
            Ok(if name == "REQ" {
                Op::Req(h)
            } else {
                Op::Resp(h)
            })
        }
        "START_TIME" => plain(Op::StartTime),
        "PROTOCOL" => plain(Op::Protocol),
        "RESPONSE_CODE" => plain(Op::ResponseCode),
        "RESPONSE_FLAGS" => plain(Op::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => plain(Op::ResponseCodeDetails),
        "BYTES_RECEIVED" => plain(Op::BytesReceived),
        "BYTES_SENT" => plain(Op::BytesSent),
        "DURATION" => plain(Op::Duration),
        "UPSTREAM_HOST" => plain(Op::UpstreamHost),
        "UPSTREAM_CLUSTER" => plain(Op::UpstreamCluster),
        "UPSTREAM_LOCAL_ADDRESS" => plain(Op::UpstreamLocalAddress),
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Op::DownstreamLocalAddress),
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Op::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => plain(Op::DownstreamRemoteAddressWithoutPort),
        "ROUTE_NAME" => plain(Op::RouteName),
        "REQUESTED_SERVER_NAME" | "CONNECTION_TERMINATION_DETAILS" => plain(Op::Dash),
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => plain(Op::UpstreamTransportFailureReason),
        _ => Err(FormatError::Unsupported(cmd.to_string())),
    }
}

/// `NAME`, `NAME(ARG)` or `NAME(ARG):MAX`.
fn split_command(cmd: &str) -> Result<(&str, Option<&str>, Option<usize>), FormatError> {
    let bad = || FormatError::BadArgument(cmd.to_string());
    let Some(open) = cmd.find('(') else {
        return Ok((cmd, None, None));
    };
    let close = cmd.rfind(')').filter(|c| *c > open).ok_or_else(bad)?;
    let max_len = match &cmd[close + 1..] {
        "" => None,
        m => Some(
            m.strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?,
        ),
    };
    Ok((&cmd[..open], Some(&cmd[open + 1..close]), max_len))
}

fn render_op(op: &Op, e: &Entry, out: &mut String) {
    let dash = |v: Option<&str>, out: &mut String| out.push_str(v.unwrap_or("-"));
    match op {
        Op::StartTime => {
            let _ = write!(out, "{}", humantime::format_rfc3339_millis(e.start_time));
        }
        Op::Req(h) => header(h, |n| e.request_header(n), out),
        Op::Resp(h) => header(h, |n| e.response_header(n), out),
        Op::Protocol => out.push_str(e.protocol),
        Op::ResponseCode => {
            let _ = write!(out, "{}", e.status);
        }
        Op::ResponseFlags => {
            let _ = write!(out, "{}", e.flags);
        }
        Op::ResponseCodeDetails => dash(Some(&*e.details).filter(|d| !d.is_empty()), out),
        Op::UpstreamTransportFailureReason => match &e.transport_failure {
            Some(r) => out.push_str(&crate::http::local_reply::no_spaces(r)),
            None => out.push('-'),
        },
        Op::BytesReceived => {
            let _ = write!(out, "{}", e.bytes_received);
        }
        Op::BytesSent => {
            let _ = write!(out, "{}", e.bytes_sent);
        }
        Op::Duration => {
            let _ = write!(out, "{}", e.duration.as_millis());
        }
        Op::UpstreamHost => match &e.upstream_host {
            Some(a) => {
                let _ = write!(out, "{a}");
            }
            None => out.push('-'),
        },
        Op::UpstreamCluster => dash(e.upstream_cluster.as_deref(), out),
        Op::UpstreamLocalAddress => addr(e.upstream_local, true, out),
        Op::DownstreamLocalAddress => addr(e.downstream_local, true, out),
        Op::DownstreamRemoteAddress => addr(e.downstream_remote, true, out),
        Op::DownstreamRemoteAddressWithoutPort => addr(e.downstream_remote, false, out),
        Op::RouteName => dash(e.route_name.as_deref().filter(|n| !n.is_empty()), out),
        Op::Dash => out.push('-'),
    }
}

fn addr(a: Option<std::net::SocketAddr>, port: bool, out: &mut String) {
    let _ = match a {
        Some(a) if port => write!(out, "{a}"),
        Some(a) => write!(out, "{}", a.ip()),
        None => write!(out, "-"),
    };
}

fn header<'e>(h: &HeaderOp, get: impl Fn(&str) -> Option<&'e str>, out: &mut String) {
    let v = get(&h.name).or_else(|| h.alt.as_deref().and_then(&get));
    match v {
        Some(v) => {
            let v = match h.max_len {
                Some(n) => v.get(..n.min(v.len())).unwrap_or(v),
                None => v,
            };
            out.push_str(v);
        }
        None => out.push('-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_and_istio_formats() {
        Format::parse(DEFAULT_FORMAT).expect("Envoy's default");
        let istio = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";
        let parsed = Format::parse(istio).expect("Istio's default");
        assert!(parsed.pieces.contains(&Piece::Op(Op::UpstreamLocalAddress)));
        assert_eq!(
            Format::parse("%UPSTREAM_REMOTE_ADDRESS%"),
            Err(FormatError::Unsupported("UPSTREAM_REMOTE_ADDRESS".into()))
        );
        let f = Format::parse("a %% %REQ(X-A?X-B):3% b").unwrap();
        assert_eq!(
            f.pieces,
            [
                Piece::Text("a % ".into()),
                Piece::Op(Op::Req(HeaderOp {
                    name: "x-a".into(),
                    alt: Some("x-b".into()),
                    max_len: Some(3)
                })),
                Piece::Text(" b".into()),
            ]
        );
        assert_eq!(
            Format::parse("%START_TIME"),
            Err(FormatError::Unterminated(0))
        );
        assert!(matches!(
            Format::parse("%START_TIME(%s)%"),
            Err(FormatError::Unsupported(_))
        ));
        assert!(matches!(
            Format::parse("%REQ()%"),
            Err(FormatError::BadArgument(_))
        ));
    }
}
