//! The per-stream timers of the connection manager and router, as Envoy defines them:
//!
//! - route `timeout`: from the start of the request until the upstream's response headers
//!   (504 `upstream request timeout`);
//! - `request_timeout`: the whole downstream request must have arrived by then, unless the
//!   response has started (408 `request timeout`);
//! - `stream_idle_timeout`: no activity on the stream in either direction for that long
//!   (408 `stream timeout` before the response starts; a reset after);
//! - the stream's duration limit (`max_stream_duration`, or the request's `grpc-timeout`
//!   where the route reads it): from the start of the stream to the end of the response
//!   (504 `downstream duration timeout`, 408 while the request is still arriving, gRPC
//!   status 4; a reset once the response has started).
//!
//! While waiting for response headers they are folded into one timer for the earliest
//! deadline; request-body activity is tracked only when the request has a body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::grpc_timeout;
use super::local_reply::LocalReply;
pub use crate::config::route_action::{effective_per_try, expected_ms};
use crate::config::stream_duration::StreamDuration;
use crate::stats::Counter;
use crate::upstream::pool::BoxError;

/// Activity of a request body, shared between the body (on its way upstream) and the
/// task waiting for the response.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    done: AtomicBool,
    bytes: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
        })
    }
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
    fn finish(&self) {
        self.touch();
        self.done.store(true, Ordering::Relaxed);
    }
    /// The body bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// The whole body has been read.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
    /// When the whole body had been read (to the millisecond), once it has.
    pub fn completed_at(&self) -> Option<Instant> {
        self.is_done().then(|| self.last())
    }
}

/// The route timeout and the per-try timeout of one request, as Envoy's router settles
/// them: the route's `timeout` and its retry policy's `per_try_timeout`, overridden by
/// `x-envoy-upstream-rq-timeout-ms` (0: none) and `x-envoy-upstream-rq-per-try-timeout-ms`
/// (both consumed; the connection manager has already removed them from requests that
/// are not internal; `control`: the caller found some `x-envoy-*` header). A per-try
/// timeout not below the route timeout is dropped.
pub fn settle(
    route: Option<Duration>,
    per_try: Option<Duration>,
    headers: &mut http::HeaderMap,
    control: bool,
) -> (Option<Duration>, Option<Duration>) {
    use super::headers::names;
    let mut ms = |name: http::HeaderName| {
        if !control {
            return None;
        }
        headers
            .remove(name)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
    };
    let route = match ms(names::X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS) {
        Some(0) => None,
        Some(n) => Some(Duration::from_millis(n)),
        None => route,
    };
    let per_try = match ms(names::X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS) {
        Some(0) => None,
        Some(n) => Some(Duration::from_millis(n)),
        None => per_try,
    };
    (route, effective_per_try(route, per_try))
}

/// Tells an attempt's upstream what it may expect: `x-envoy-expected-rq-timeout-ms`, and
/// for gRPC requests on routes with `max_grpc_timeout` (`grpc`) the same in
/// `grpc-timeout`.
pub fn tell_upstream(headers: &mut http::HeaderMap, ms: u64, grpc: bool) {
    use super::headers::names;
    headers.insert(
        names::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
        http::HeaderValue::from(ms),
    );
    if grpc {
        grpc_timeout::write(headers, Duration::from_millis(ms));
    }
}

/// The connection manager's limit on the whole stream once its route is known (Envoy's
/// `refreshDurationTimeout`): the request's `grpc-timeout` where the route reads it, else
/// the route's `max_stream_duration` (zero: none), else the connection manager's.
/// On routes with a `max_stream_duration` message, gRPC requests carry the limit upstream
/// in `grpc-timeout`, and lose that header when the route disables the connection
/// manager's limit.
pub fn stream_limit(
    route: &StreamDuration,
    hcm: Option<Duration>,
    headers: &mut http::HeaderMap,
    grpc: bool,
) -> Option<Duration> {
    let StreamDuration::Stream { max, grpc: header } = route else {
        return hcm;
    };
    let from_header = header
        .as_ref()
        .and_then(|h| Some(h.stream_limit(grpc_timeout::parse(headers)?)));
    let limit = match (from_header, max) {
        (Some(t), _) => Some(t),
        (None, Some(max)) => (!max.is_zero()).then_some(*max),
        (None, None) => hcm,
    };
    if grpc {
        match limit {
            Some(t) => grpc_timeout::write(headers, t),
            None if hcm.is_some() => {
                headers.remove(grpc_timeout::GRPC_TIMEOUT);
            }
            None => {}
        }
    }
    limit
}

/// The configured limits for one stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub route: Option<Duration>,
    pub request: Option<Duration>,
    pub stream_idle: Option<Duration>,
    /// When the stream's duration limit ends it.
    pub stream_end: Option<Instant>,
}

impl Limits {
    /// The earliest of the deadlines that do not move (the route timeout from `start`,
    /// the stream's duration limit), and which it is.
    pub fn fixed_deadline(&self, start: Instant) -> Option<(Instant, Expired)> {
        let route = self.route.map(|t| (start + t, Expired::Route));
        let end = self.stream_end.map(|at| (at, Expired::StreamDuration));
        [route, end].into_iter().flatten().min_by_key(|(at, _)| *at)
    }
}

/// Which timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The attempt's own limit: `per_try_timeout`, or `per_try_idle_timeout` (`idle`)
    /// while no response headers have come.
    PerTry {
        idle: bool,
    },
    Route,
    Request,
    StreamIdle,
    StreamDuration,
}

impl Expired {
    /// The reply; `body` is the request body's activity (`None`: the request had no body
    /// left to come when the exchange started).
    pub fn reply(self, body: Option<&Activity>) -> LocalReply {
        match self {
            Expired::PerTry { .. } => LocalReply::PerTryTimeout,
            Expired::Route => LocalReply::UpstreamTimeout,
            Expired::Request => LocalReply::RequestTimeout,
            Expired::StreamIdle => LocalReply::StreamIdleTimeout {
                request_complete: body.is_none_or(Activity::is_done),
            },
            Expired::StreamDuration => LocalReply::StreamDuration {
                request_complete: body.is_none_or(Activity::is_done),
            },
        }
    }
}

/// Awaits `fut` (the exchange up to response headers) under the stream's deadlines and
/// the attempt's own (`attempt`: when it ends, and whether it is the per-try idle
/// timeout), with one timer for all of them. The attempt's wins a tie.
pub async fn run<F: Future>(
    mut fut: Pin<&mut F>,
    start: Instant,
    limits: Limits,
    body: Option<&Activity>,
    attempt: Option<(Instant, bool)>,
) -> Result<F::Output, Expired> {
    let attempt = attempt.map(|(at, idle)| (at, Expired::PerTry { idle }));
    loop {
        let fixed = limits.fixed_deadline(start);
        let request = match (limits.request, body) {
            (Some(t), Some(a)) if !a.done.load(Ordering::Relaxed) => {
                Some((start + t, Expired::Request))
            }
            _ => None,
        };
        let idle = limits.stream_idle.map(|t| {
            (
                body.map_or(start, Activity::last).max(start) + t,
                Expired::StreamIdle,
            )
        });
        let next = [attempt, fixed, request, idle]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at);
        let Some((at, which)) = next else {
            return Ok(fut.await);
        };
        match tokio::time::timeout_at(at, fut.as_mut()).await {
            Ok(out) => return Ok(out),
            Err(_) => {
                // The body may have moved or finished meanwhile: only a deadline that is
                // still due counts.
                let still_due = match which {
                    Expired::PerTry { .. } | Expired::Route | Expired::StreamDuration => true,
                    Expired::Request => body.is_some_and(|a| !a.done.load(Ordering::Relaxed)),
                    Expired::StreamIdle => {
                        body.map_or(start, Activity::last) + limits.stream_idle.unwrap_or_default()
                            <= Instant::now()
                    }
                };
                if still_due {
                    return Err(which);
                }
            }
        }
    }
}

/// A request body that records its activity and completion.
pub struct TrackedBody<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> Self {
        TrackedBody { inner, activity }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.activity
                    .bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        match &r {
            Poll::Ready(None) => self.activity.finish(),
            Poll::Ready(Some(_)) if self.inner.is_end_stream() => self.activity.finish(),
            Poll::Ready(Some(_)) => self.activity.touch(),
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An idle timer for a response body: armed only when the body has to wait for data.
#[derive(Debug)]
pub struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout")]
pub struct IdleTimeout;

impl IdleTimer {
    pub fn new(limit: Duration) -> Self {
        IdleTimer { limit, sleep: None }
    }

    /// Call when data arrived.
    pub fn reset(&mut self) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(Instant::now() + self.limit);
        }
    }

    /// Call when the body is waiting; `Ready` means the stream idled out.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        sleep.as_mut().poll(cx)
    }
}

/// The stream's duration limit while its response body streams: once due, the body fails
/// (the downstream stream is reset, as Envoy does once a response started) and
/// `downstream_rq_max_duration_reached` counts it.
#[derive(Debug)]
pub struct StreamEnd {
    sleep: Pin<Box<Sleep>>,
    reached: Counter,
}

#[derive(Debug, thiserror::Error)]
#[error("downstream duration timeout")]
pub struct DurationTimeout;

impl StreamEnd {
    pub fn new(at: Instant, reached: Counter) -> Self {
        StreamEnd {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            reached,
        }
    }

    /// `Ready` once the limit is reached.
    pub fn poll_reached(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let r = self.sleep.as_mut().poll(cx);
        if r.is_ready() {
            self.reached.inc();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    #[tokio::test(start_paused = true)]
    async fn a_body_is_complete_when_its_end_was_read() {
        let a = Activity::new();
        assert!(a.completed_at().is_none());
        tokio::time::sleep(Duration::from_millis(120)).await;
        a.finish();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let at = a.completed_at().expect("complete");
        assert_eq!(at.elapsed(), Duration::from_millis(30));
    }

    /// A future that never finishes, run under the timers: which one ends it.
    async fn pending_under(
        start: Instant,
        limits: Limits,
        body: Option<&Activity>,
        attempt: Option<(Instant, bool)>,
    ) -> Result<(), Expired> {
        run(
            pin!(std::future::pending::<()>()),
            start,
            limits,
            body,
            attempt,
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_deadline_wins() {
        let start = Instant::now();
        let limits = Limits {
            route: Some(Duration::from_secs(15)),
            request: None,
            stream_idle: Some(Duration::from_secs(5)),
            stream_end: None,
        };
        assert_eq!(
            pending_under(start, limits, None, None).await,
            Err(Expired::StreamIdle)
        );
        assert!(start.elapsed() >= Duration::from_secs(5));

        let start = Instant::now();
        let body = Activity::new();
        let limits = Limits {
            route: None,
            request: Some(Duration::from_secs(3)),
            stream_idle: Some(Duration::from_secs(10)),
            stream_end: None,
        };
        assert_eq!(
            pending_under(start, limits, Some(&body), None).await,
            Err(Expired::Request)
        );

        // A body that completed disarms the request timeout; then the idle timer fires.
        let start = Instant::now();
        let body = Activity::new();
        body.finish();
        assert_eq!(
            pending_under(start, limits, Some(&body), None).await,
            Err(Expired::StreamIdle)
        );
        assert!(start.elapsed() >= Duration::from_secs(10));

        // The attempt's own deadline, before the route's.
        let start = Instant::now();
        let route = Limits {
            route: Some(Duration::from_secs(15)),
            request: None,
            stream_idle: None,
            stream_end: None,
        };
        let per_try = Some((start + Duration::from_secs(2), false));
        assert_eq!(
            pending_under(start, route, None, per_try).await,
            Err(Expired::PerTry { idle: false })
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A tie goes to the attempt: it is retried, the request is not over.
        let start = Instant::now();
        let tie = Some((start + Duration::from_secs(15), true));
        assert_eq!(
            pending_under(start, route, None, tie).await,
            Err(Expired::PerTry { idle: true })
        );

        let done = async { 7 };
        assert_eq!(
            run(pin!(done), Instant::now(), limits, None, None).await,
            Ok(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn body_activity_pushes_the_idle_deadline() {
        let start = Instant::now();
        let body = Activity::new();
        let b2 = body.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                b2.touch();
            }
        });
        let limits = Limits {
            route: None,
            request: None,
            stream_idle: Some(Duration::from_secs(5)),
            stream_end: None,
        };
        assert_eq!(
            pending_under(start, limits, Some(&body), None).await,
            Err(Expired::StreamIdle)
        );
        // Last activity at 12 s, idle after 17 s.
        assert!(
            start.elapsed() >= Duration::from_secs(17),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn header_overrides_and_expected_timeout() {
        let ms = Duration::from_millis;
        let mut h = http::HeaderMap::new();
        h.insert("x-envoy-upstream-rq-timeout-ms", "250".parse().unwrap());
        h.insert(
            "x-envoy-upstream-rq-per-try-timeout-ms",
            "300".parse().unwrap(),
        );
        // The per-try timeout is not below the route timeout: dropped.
        assert_eq!(
            super::settle(Some(ms(15_000)), None, &mut h, true),
            (Some(ms(250)), None)
        );
        assert!(h.is_empty(), "consumed");
        h.insert("x-envoy-upstream-rq-timeout-ms", "0".parse().unwrap());
        assert_eq!(
            super::settle(Some(ms(15_000)), Some(ms(50)), &mut h, true),
            (None, Some(ms(50)))
        );

        assert_eq!(
            super::expected_ms(Some(ms(15_000)), None, ms(0)),
            Some(15_000)
        );
        assert_eq!(
            super::expected_ms(Some(ms(15_000)), Some(ms(100)), ms(7)),
            Some(100)
        );
        assert_eq!(
            super::expected_ms(Some(ms(1_000)), Some(ms(900)), ms(400)),
            Some(600)
        );
        assert_eq!(
            super::expected_ms(Some(ms(1_000)), None, ms(1_500)),
            Some(1)
        );
        assert_eq!(super::expected_ms(None, None, ms(5)), None);
    }
}
