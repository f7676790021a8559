//! gRPC's `grpc-timeout` request header (`TimeoutValue TimeoutUnit`: at most 8 digits and
//! one of `H M S m u n`), read and written as Envoy does, and the two ways a route turns
//! it into a limit (see [`crate::config::stream_duration`]).

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use crate::config::stream_duration::GrpcHeader;

pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The largest `TimeoutValue`: eight digits.
const MAX_VALUE: u64 = 99_999_999;

/// The request's `grpc-timeout`, rounded up to whole milliseconds; `None` when absent or
/// malformed (then it is ignored, as in Envoy).
pub fn parse(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let unit = v.chars().last()?;
    let digits = &v[..v.len() - unit.len_utf8()];
    // Envoy reads the number with absl::SimpleAtoi: surrounding spaces and a plus sign
    // are allowed.
    let digits = digits.trim_ascii();
    let digits = digits.strip_prefix('+').unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok().filter(|n| *n <= MAX_VALUE)?;
    let ceil_ms = |nanos: u64| Duration::from_millis(nanos.div_ceil(1_000_000));
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => ceil_ms(n * 1_000),
        'n' => ceil_ms(n),
        _ => return None,
    })
}

/// Writes `d` as Envoy does: whole milliseconds, else the smallest larger unit whose value
/// fits in eight digits (rounded down), clipped at 99999999H.
pub fn write(headers: &mut HeaderMap, d: Duration) {
    let mut value = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut unit = 'm';
    if value > MAX_VALUE {
        value /= 1000;
        unit = 'S';
    }
    while value > MAX_VALUE {
        match unit {
            'S' => unit = 'M',
            'M' => unit = 'H',
            _ => {
                value = MAX_VALUE;
                break;
            }
        }
        value /= 60;
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{value}{unit}")) {
        headers.insert(GRPC_TIMEOUT, v);
    }
}

impl GrpcHeader {
    /// The router's timeout for a gRPC request on a route with `max_grpc_timeout`: the
    /// header's value (absent: none) less the offset when the offset is smaller, then
    /// capped. `None`: no timeout.
    pub fn router_timeout(&self, header: Option<Duration>) -> Option<Duration> {
        let mut t = header.unwrap_or_default();
        if self.offset < t {
            t -= self.offset;
        }
        if let Some(max) = self.max {
            if t.is_zero() || t > max {
                t = max;
            }
        }
        (!t.is_zero()).then_some(t)
    }

    /// The stream's limit from a `grpc-timeout` of `t` on a route with
    /// `grpc_timeout_header_max`: capped first, then less the offset (down to zero, which
    /// ends the stream at once).
    pub fn stream_limit(&self, t: Duration) -> Duration {
        let t = match self.max {
            Some(max) if t > max => max,
            _ => t,
        };
        if t.is_zero() {
            t
        } else {
            t.saturating_sub(self.offset)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(GRPC_TIMEOUT, HeaderValue::from_str(v).unwrap());
        parse(&h)
    }

    fn written(d: Duration) -> String {
        let mut h = HeaderMap::new();
        write(&mut h, d);
        h[GRPC_TIMEOUT].to_str().unwrap().to_string()
    }

    #[test]
    fn reads_like_envoy() {
        let ms = Duration::from_millis;
        assert_eq!(parsed("300m"), Some(ms(300)));
        assert_eq!(parsed("3S"), Some(ms(3000)));
        assert_eq!(parsed("2M"), Some(ms(120_000)));
        assert_eq!(parsed("1H"), Some(ms(3_600_000)));
        assert_eq!(parsed("1500u"), Some(ms(2)));
        assert_eq!(parsed("1n"), Some(ms(1)));
        assert_eq!(parsed("0m"), Some(ms(0)));
        assert_eq!(parsed("+5S"), Some(ms(5000)));
        assert_eq!(parsed("99999999H"), Some(ms(99_999_999 * 3_600_000)));
        assert_eq!(parsed("5 S"), Some(ms(5000)));
        for bad in ["123456789S", "5", "S", "5s", "-5S", "5.0S", "5SS", "", "+S"] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_like_envoy() {
        let ms = Duration::from_millis;
        assert_eq!(written(ms(300)), "300m");
        assert_eq!(written(ms(3000)), "3000m");
        assert_eq!(written(ms(99_999_999)), "99999999m");
        assert_eq!(written(ms(100_000_000)), "100000S");
        assert_eq!(written(ms(99_999_999 * 3_600_000)), "99999999H");
        assert_eq!(written(Duration::MAX), "99999999H");
    }

    #[test]
    fn router_and_stream_limits() {
        let ms = Duration::from_millis;
        let capped = GrpcHeader {
            max: Some(ms(300)),
            offset: ms(100),
        };
        // Offset first (only when smaller), then the cap; no header means the cap.
        assert_eq!(capped.router_timeout(Some(ms(5000))), Some(ms(300)));
        assert_eq!(capped.router_timeout(Some(ms(50))), Some(ms(50)));
        assert_eq!(capped.router_timeout(Some(ms(250))), Some(ms(150)));
        assert_eq!(capped.router_timeout(None), Some(ms(300)));
        let open = GrpcHeader {
            max: None,
            offset: Duration::ZERO,
        };
        assert_eq!(open.router_timeout(None), None);
        assert_eq!(open.router_timeout(Some(ms(0))), None);
        assert_eq!(open.router_timeout(Some(ms(7))), Some(ms(7)));
        // The cap first, then the offset, down to zero.
        assert_eq!(capped.stream_limit(ms(5000)), ms(200));
        assert_eq!(capped.stream_limit(ms(50)), ms(0));
        assert_eq!(open.stream_limit(ms(0)), ms(0));
        assert_eq!(open.stream_limit(ms(1234)), ms(1234));
    }
}
