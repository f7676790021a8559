//! The upstream attempts of one routed request: send, and when the route's retry policy
//! (or the request's retry headers) says so, wait the back-off and send again, to a host
//! not tried yet when `previous_hosts` asks for it. The route timeout covers every
//! attempt and every wait; `per_try_timeout` covers one attempt.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;

use super::body::{BoxedRequest, ProxyBody};
use super::flags::Flag;
use super::headers::names;
use super::local_reply::LocalReply;
use super::replay::Replay;
use super::retry::{Failure, Next, RetryState};
use super::{forward, timeouts, Downstream, HcmStats};
use crate::config::circuit_breakers::Priority;
use crate::upstream::breakers::Slot;
use crate::upstream::cluster::ClusterState;
use crate::upstream::connect::ConnectError;
use crate::upstream::host::{ActiveRequest, HostAddr, HostEntry};
use crate::upstream::lb;
use crate::upstream::outlier;
use crate::upstream::pool::{Lease, Proto, ResponseBody, UpstreamError};

/// Everything an attempt needs that does not change between attempts.
pub struct Exchange<'a> {
    pub cluster: &'a Arc<ClusterState>,
    pub proto: Proto,
    /// The route's priority: its circuit breakers and connection pools.
    pub priority: Priority,
    pub down: &'a Downstream,
    pub hcm_stats: &'a HcmStats,
    pub limits: timeouts::Limits,
    pub activity: Option<&'a timeouts::Activity>,
    /// When the request started: the route timeout runs from here.
    pub started: Instant,
    /// Whether each attempt carries `x-envoy-attempt-count`.
    pub count_in_request: bool,
    /// How much of the request body is kept for retries (`per_request_buffer_limit_bytes`,
    /// else the listener's `per_connection_buffer_limit_bytes`).
    pub buffer_limit: usize,
    /// Each attempt's limit (`per_try_timeout`, or its header).
    pub per_try: Option<Duration>,
    /// `per_try_idle_timeout`.
    pub per_try_idle: Option<Duration>,
    /// Attempts made so far (read by the caller afterwards, failed or not).
    pub attempts: std::sync::atomic::AtomicU32,
    /// Count requests in flight per host (least-request balancing needs them).
    pub track_active: bool,
    /// Why the retries stopped, if a flag says so (URX, or UO for a retry overflow).
    pub stopped: std::sync::Mutex<Option<Flag>>,
    /// The upstream of the latest attempt.
    pub last_upstream: std::sync::Mutex<UpstreamUsed>,
    /// Whether to record `last_upstream` (an access log wants it).
    pub record_upstream: bool,
    /// Each attempt's `grpc-timeout` says what it may expect (gRPC requests on routes
    /// with `max_grpc_timeout`).
    pub grpc_timeout_header: bool,
}

/// The upstream an attempt used, for the access log: its host (`%UPSTREAM_HOST%`) and,
/// once it has a connection, that connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`).
#[derive(Debug, Default)]
pub struct UpstreamUsed {
    pub host: Option<HostAddr>,
    pub local: Option<std::net::SocketAddr>,
    /// Why its connection could not be made (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub transport_failure: Option<String>,
}

/// The response that ends the attempts, its connection and its circuit-breaker slot.
pub struct Answer {
    pub response: Response<ResponseBody>,
    pub lease: Lease,
    pub slot: Slot,
    /// The request's place in its host's active count (least-request clusters).
    pub host_request: Option<ActiveRequest>,
    /// The host, when a `per_try_idle_timeout` that fires in the response body is to
    /// count for its outlier detection.
    pub idle_reports_to: Option<Arc<HostEntry>>,
}

/// What one attempt came to. The answer is boxed: unboxed, its 270 bytes were copied
/// at each of the several levels it passes on its way back (timers, attempts, caller).
enum Outcome {
    Response(Box<Answer>),
    Failed(UpstreamError),
    PerTryTimeout,
}

/// Sends `req` to `host`, retrying as `retry` allows.
pub async fn run(
    req: BoxedRequest,
    host: Arc<HostEntry>,
    lb_ctx: lb::Context,
    retry: Option<RetryState>,
    x: &Exchange<'_>,
) -> Result<Box<Answer>, LocalReply> {
    let Some(mut retry) = retry else {
        let mut req = req;
        count_attempt(req.headers_mut(), 1, x);
        let outcome = send(req, &host, x).await?;
        return finish(outcome, x);
    };
    // Each attempt sends a copy of the head, and a replay of the body.
    let mut head = req;
    let replay = Replay::new(
        std::mem::replace(head.body_mut(), ProxyBody::Empty),
        x.buffer_limit,
    );
    let mut host = host;
    let mut tried: Vec<Arc<HostEntry>> = Vec::new();
    // The slot of the retry in flight, given back when its outcome is known.
    let mut retry_slot: Option<Slot> = None;
    loop {
        let attempt = retry.attempt();
        let mut p = super::headers::copy_head(&head);
        count_attempt(&mut p.headers, attempt, x);
        if attempt > 1 {
            // A retry tells the upstream what is left of the route timeout, counted, as
            // Envoy's router counts it, from when the downstream request was complete
            // (a slow upload is not taken off).
            let complete = x
                .activity
                .and_then(timeouts::Activity::completed_at)
                .unwrap_or(x.started);
            let left = timeouts::expected_ms(x.limits.route, x.per_try, complete.elapsed());
            if let Some(ms) = left {
                timeouts::tell_upstream(&mut p.headers, ms, x.grpc_timeout_header);
            }
        }
        let req = Box::new(Request::from_parts(p, ProxyBody::boxed(replay.body())));
        let outcome = send(req, &host, x).await?;
        drop(retry_slot.take());
        let retriable = match &outcome {
            Outcome::Response(a) => {
                retry.retriable_response(a.response.status(), a.response.headers())
            }
            Outcome::Failed(e) => failure(e).is_some_and(|f| retry.retriable_failure(f)),
            Outcome::PerTryTimeout => retry.retriable_failure(Failure::PerTryTimeout),
        };
        let stats = &x.cluster.stats;
        if !retriable || !replay.can_replay() {
            if attempt > 1 && !retriable {
                stats.upstream_rq_retry_success.inc();
            }
            return finish(outcome, x);
        }
        let wait = match retry.advance() {
            Next::Retry(wait) => wait,
            Next::LimitExceeded => {
                stats.upstream_rq_retry_limit_exceeded.inc();
                x.stop(Flag::URX);
                return finish(outcome, x);
            }
        };
        // max_retries / retry_budget: held until this retry's outcome is decided.
        let Some(slot) = x.cluster.breakers.at(x.priority).try_retry() else {
            stats.upstream_rq_retry_overflow.inc();
            x.stop(Flag::UO);
            return finish(outcome, x);
        };
        retry_slot = Some(slot);
        if let Outcome::Response(a) = &outcome {
            stats.response(a.response.status().as_u16());
        }
        drop(outcome);
        stats.upstream_rq_retry.inc();
        stats.upstream_rq_retry_backoff_exponential.inc();
        backoff(wait, x).await?;
        tried.push(host.clone());
        host = next_host(x, &retry, lb_ctx, &tried).ok_or_else(|| {
            stats.upstream_cx_none_healthy.inc();
            LocalReply::NoHealthyUpstream
        })?;
    }
}

impl Exchange<'_> {
    /// An attempt's limit until its response headers, and whether it is the per-try idle
    /// timeout (which runs like another per-try timeout until then: nothing comes from
    /// the upstream before them).
    fn attempt_limit(&self) -> Option<(Duration, bool)> {
        match (self.per_try, self.per_try_idle) {
            (Some(t), Some(idle)) if idle < t => Some((idle, true)),
            (Some(t), _) => Some((t, false)),
            (None, idle) => idle.map(|idle| (idle, true)),
        }
    }

    fn stop(&self, flag: Flag) {
        if let Ok(mut s) = self.stopped.lock() {
            *s = Some(flag);
        }
    }
}

fn count_attempt(headers: &mut http::HeaderMap, attempt: u32, x: &Exchange<'_>) {
    if x.count_in_request {
        headers.insert(
            names::X_ENVOY_ATTEMPT_COUNT,
            http::HeaderValue::from(attempt),
        );
    }
}

/// One attempt under the request's timers and its own limit (`Exchange::attempt_limit`).
async fn send(
    req: BoxedRequest,
    host: &Arc<HostEntry>,
    x: &Exchange<'_>,
) -> Result<Outcome, LocalReply> {
    x.attempts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if x.record_upstream {
        if let Ok(mut last) = x.last_upstream.lock() {
            *last = UpstreamUsed {
                host: Some(host.addr.clone()),
                ..UpstreamUsed::default()
            };
        }
    }
    let host_request = x.track_active.then(|| host.state.request());
    let attempt = x
        .attempt_limit()
        .map(|(t, idle)| (Instant::now() + t, idle));
    // Pinned where it is made (not made and then moved: it is the larger of the timers'
    // two futures, over a kilobyte).
    let exchange = std::pin::pin!(async {
        // Once the request has a connection, `max_requests` decides whether it may use
        // it, as Envoy's pools decide when they attach a stream (so a request over the
        // limit may have opened a connection first): over it, the request is not sent
        // (503 UO). An admitted request counts in `upstream_rq_total` (not when pending
        // overflows or fails) and holds its slot until its response is done. The
        // attempt's host is recorded above; its connection's address here.
        let admit = |lease: &Lease| {
            let Some(slot) = x.cluster.breakers.at(x.priority).try_request() else {
                x.cluster.stats.upstream_rq_active_overflow.inc();
                return None;
            };
            x.cluster.stats.upstream_rq_total.inc();
            if x.record_upstream {
                if let Ok(mut last) = x.last_upstream.lock() {
                    last.local = lease.local_addr();
                }
            }
            Some(slot)
        };
        let result =
            forward::send(req, x.cluster, host, (x.proto, x.priority), x.down, admit).await;
        match result {
            Ok((resp, lease, slot)) => {
                x.cluster
                    .report(host, outlier::Outcome::Status(resp.status().as_u16()));
                // Looked for only where it can matter (a cluster with health checks).
                if x.cluster.health.is_some()
                    && resp
                        .headers()
                        .contains_key(names::X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL)
                {
                    x.cluster.immediate_health_check_fail(host);
                }
                let idle_reports_to = (x.per_try_idle.is_some() && x.cluster.outlier.is_some())
                    .then(|| Arc::clone(host));
                Outcome::Response(Box::new(Answer {
                    response: resp,
                    lease,
                    slot,
                    host_request,
                    idle_reports_to,
                }))
            }
            Err(e) => {
                if let Some(o) = outlier_outcome(&e) {
                    x.cluster.report(host, o);
                }
                if let (true, UpstreamError::Connect(c)) = (x.record_upstream, &e) {
                    if let Ok(mut last) = x.last_upstream.lock() {
                        last.transport_failure = c.transport_failure();
                    }
                }
                Outcome::Failed(e)
            }
        }
    });
    match timeouts::run(exchange, x.started, x.limits, x.activity, attempt).await {
        Ok(outcome) => Ok(outcome),
        // The attempt failed, not the request: the retry policy decides what follows.
        Err(expired @ timeouts::Expired::PerTry { .. }) => {
            expire(expired, Some(host), x);
            Ok(Outcome::PerTryTimeout)
        }
        Err(expired) => Err(expire(expired, Some(host), x)),
    }
}

/// Counts a timer that ended the request or its attempt (`host`: the attempt it cut
/// short) and makes the reply.
fn expire(expired: timeouts::Expired, host: Option<&HostEntry>, x: &Exchange<'_>) -> LocalReply {
    let stats = &x.cluster.stats;
    match expired {
        timeouts::Expired::PerTry { idle } => {
            if idle {
                stats.upstream_rq_per_try_idle_timeout.inc();
            } else {
                stats.upstream_rq_per_try_timeout.inc();
            }
            if let Some(host) = host {
                x.cluster.report(host, outlier::Outcome::Timeout);
            }
        }
        timeouts::Expired::Route => {
            if let Some(host) = host {
                x.cluster.report(host, outlier::Outcome::Timeout);
            }
            stats.upstream_rq_timeout.inc();
            stats.response(504);
        }
        timeouts::Expired::Request => x.hcm_stats.downstream_rq_timeout.inc(),
        timeouts::Expired::StreamIdle => x.hcm_stats.downstream_rq_idle_timeout.inc(),
        timeouts::Expired::StreamDuration => x.hcm_stats.downstream_rq_max_duration_reached.inc(),
    }
    expired.reply(x.activity)
}

/// The final outcome as the answer or its local reply.
fn finish(outcome: Outcome, x: &Exchange<'_>) -> Result<Box<Answer>, LocalReply> {
    let stats = &x.cluster.stats;
    let retried = x.attempts.load(std::sync::atomic::Ordering::Relaxed) > 1;
    match outcome {
        Outcome::Response(answer) => Ok(answer),
        Outcome::PerTryTimeout => {
            stats.response(504);
            Err(LocalReply::PerTryTimeout)
        }
        // The downstream request body failed (malformed chunking, client gone): a bad
        // request, not an upstream failure.
        Outcome::Failed(UpstreamError::RequestBody(_)) => Err(LocalReply::MalformedBody),
        Outcome::Failed(UpstreamError::Connect(e)) => {
            stats.response(503);
            Err(LocalReply::ConnectFailure {
                retried,
                timeout: matches!(e, ConnectError::Timeout),
            })
        }
        Outcome::Failed(UpstreamError::PendingOverflow | UpstreamError::ActiveOverflow) => {
            stats.response(503);
            Err(LocalReply::Overflow { retried })
        }
        Outcome::Failed(UpstreamError::Handshake(_) | UpstreamError::Reset(_)) => {
            stats.response(503);
            Err(LocalReply::UpstreamReset { retried })
        }
    }
}

/// How a failed attempt counts for outlier detection (`None`: the downstream's fault).
fn outlier_outcome(e: &UpstreamError) -> Option<outlier::Outcome> {
    match e {
        UpstreamError::Connect(_) | UpstreamError::Handshake(_) => {
            Some(outlier::Outcome::ConnectFailed)
        }
        UpstreamError::Reset(_) => Some(outlier::Outcome::Reset),
        UpstreamError::RequestBody(_)
        | UpstreamError::PendingOverflow
        | UpstreamError::ActiveOverflow => None,
    }
}

/// How a failed attempt failed, for the retry conditions (`None`: the downstream's
/// fault or an overflow, never retried).
fn failure(e: &UpstreamError) -> Option<Failure> {
    match e {
        UpstreamError::PendingOverflow
        | UpstreamError::ActiveOverflow
        | UpstreamError::RequestBody(_) => None,
        UpstreamError::Connect(_) | UpstreamError::Handshake(_) => Some(Failure::ConnectFailure),
        UpstreamError::Reset(r) if r.refused => Some(Failure::RefusedStream),
        UpstreamError::Reset(r) => Some(Failure::Reset { sent: r.sent }),
    }
}

/// Waits `wait`, or until the route timeout (504 UT) or the stream's duration limit
/// (DT), which then end the request.
async fn backoff(wait: Duration, x: &Exchange<'_>) -> Result<(), LocalReply> {
    let until = Instant::now() + wait;
    match x.limits.fixed_deadline(x.started) {
        Some((deadline, which)) if deadline <= until => {
            tokio::time::sleep_until(deadline).await;
            Err(expire(which, None, x))
        }
        _ => {
            tokio::time::sleep_until(until).await;
            Ok(())
        }
    }
}

/// The host for the next attempt: with `previous_hosts`, one not tried yet if one turns
/// up within `host_selection_retry_max_attempts` picks.
fn next_host(
    x: &Exchange<'_>,
    retry: &RetryState,
    ctx: lb::Context,
    tried: &[Arc<HostEntry>],
) -> Option<Arc<HostEntry>> {
    let policy = retry.policy();
    let mut ctx = ctx;
    let mut pick = x.cluster.pick_for(x.down.local, ctx)?;
    if policy.previous_hosts {
        for _ in 1..policy.host_selection_max_attempts.max(1) {
            if !tried.iter().any(|h| h.addr == pick.addr) {
                break;
            }
            // Hashing policies step along their table to leave the tried host.
            ctx.attempt += 1;
            pick = x.cluster.pick_for(x.down.local, ctx)?;
        }
    }
    Some(pick)
}
