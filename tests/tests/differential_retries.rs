//! Retries, differentially: Envoy 1.40 and Remora on the same retry config in front of
//! one scripted flaky upstream. For every case both must answer the same status and
//! body, report the same `x-envoy-attempt-count`, and make the upstream see the same
//! number of attempts; the retry stats must agree at the end.

use std::time::Duration;

use bytes::Bytes;
use tests::client::{request, Conn};
use tests::process::{start_envoy_and_remora, ProxyProcess};
use tests::upstream::HttpUpstream;

struct Case {
    /// `edge` (external clients: retry headers stripped) or `internal`.
    listener: &'static str,
    method: &'static str,
    /// `{k}` is replaced by a key unique to the proxy and the case.
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body_len: usize,
}

const fn get(path: &'static str, headers: &'static [(&'static str, &'static str)]) -> Case {
    Case {
        listener: "edge",
        method: "GET",
        path,
        headers,
        body_len: 0,
    }
}

const CASES: &[Case] = &[
    get("/flaky/five-{k}/2/500", &[]),
    get("/flaky/five-{k}/9/503", &[]),
    get("/flaky/five-{k}/1/reset", &[]),
    get("/flaky/gw-{k}/1/502", &[]),
    get("/flaky/gw-{k}/1/500", &[]),
    get("/flaky/gw-{k}/9/504", &[]),
    get("/flaky/codes-{k}/1/418", &[]),
    get("/flaky/codes-{k}/1/419", &[]),
    get("/flaky/none-{k}/1/503", &[]),
    get(
        "/flaky/none-{k}/9/503",
        &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "2")],
    ),
    get(
        "/flaky/none-{k}/1/409",
        &[("x-envoy-retry-on", "retriable-4xx")],
    ),
    get("/flaky/five-{k}/1/500", &[("x-envoy-max-retries", "0")]),
    get(
        "/flaky/codes-{k}/1/409",
        &[("x-envoy-retriable-status-codes", "409")],
    ),
    get("/flaky/pertry-{k}/1/hang", &[]),
    get("/flaky/pertry-{k}/9/hang", &[]),
    get("/flaky/idle-{k}/1/hang", &[]),
    get("/flaky/idle-{k}/9/hang", &[]),
    get("/flaky/bothidle-{k}/9/hang", &[]),
    Case {
        method: "POST",
        path: "/flaky/five-{k}/1/503",
        headers: &[],
        body_len: 10_000,
        ..get("", &[])
    },
    Case {
        method: "POST",
        path: "/flaky/five-{k}/1/503",
        headers: &[],
        body_len: 200_000,
        ..get("", &[])
    },
    // The same headers from an internal client change the policy.
    internal(
        "/flaky/none-{k}/9/503",
        &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "2")],
    ),
    internal(
        "/flaky/none-{k}/1/409",
        &[("x-envoy-retry-on", "retriable-4xx")],
    ),
    internal("/flaky/five-{k}/1/500", &[("x-envoy-max-retries", "0")]),
    internal(
        "/flaky/codes-{k}/1/409",
        &[("x-envoy-retriable-status-codes", "409")],
    ),
    internal(
        "/flaky/none-{k}/1/500",
        &[("x-envoy-retry-on", "gateway-error")],
    ),
    internal(
        "/flaky/none-{k}/1/502",
        &[("x-envoy-retry-on", "gateway-error,bogus")],
    ),
    // Timeout headers: honoured from internal clients, stripped from external ones.
    internal(
        "/flaky/none-{k}/1/hang",
        &[("x-envoy-upstream-rq-timeout-ms", "100")],
    ),
    internal(
        "/flaky/pertry-{k}/1/hang",
        &[("x-envoy-upstream-rq-per-try-timeout-ms", "50")],
    ),
    internal(
        "/flaky/none-{k}/0/200",
        &[("x-envoy-upstream-rq-timeout-ms", "2500")],
    ),
    internal(
        "/flaky/pertry-{k}/0/200",
        &[("x-envoy-upstream-rq-per-try-timeout-ms", "9000")],
    ),
    get(
        "/flaky/none-{k}/0/200",
        &[("x-envoy-upstream-rq-timeout-ms", "2500")],
    ),
];

const fn internal(path: &'static str, headers: &'static [(&'static str, &'static str)]) -> Case {
    Case {
        listener: "internal",
        ..get(path, headers)
    }
}

/// What a case came to, as compared.
#[derive(Debug)]
struct Seen {
    status: u16,
    body: String,
    attempt_header: Option<String>,
    /// The `x-envoy-expected-rq-timeout-ms` the upstream saw (on a retry, what was left
    /// of the route timeout: equal within the back-off's jitter, see [`Seen::same`]).
    expected_timeout: Option<u64>,
    upstream_attempts: usize,
}

impl Seen {
    /// Equal, except that expected timeouts may differ by the retries' random back-off
    /// (at most a few milliseconds with these 1 ms bases; 50 ms allowed).
    fn same(&self, o: &Seen) -> bool {
        let close = match (self.expected_timeout, o.expected_timeout) {
            (Some(a), Some(b)) => a.abs_diff(b) <= 50,
            (a, b) => a == b,
        };
        close
            && (
                self.status,
                &self.body,
                &self.attempt_header,
                self.upstream_attempts,
            ) == (o.status, &o.body, &o.attempt_header, o.upstream_attempts)
    }
}

async fn run(p: &ProxyProcess, up: &HttpUpstream, who: &str, i: usize, c: &Case) -> Seen {
    let addr = p.listener(c.listener);
    let path = c.path.replace("{k}", &format!("{who}{i}"));
    let key = path
        .trim_start_matches("/flaky/")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let mut conn = Conn::h1(addr).await;
    let body = Bytes::from(vec![b'b'; c.body_len]);
    let req = request(c.method, "h", &path, c.headers, body, false);
    let r = tokio::time::timeout(Duration::from_secs(10), conn.send(req))
        .await
        .expect("answer within 10 s")
        .expect("response");
    Seen {
        status: r.status.as_u16(),
        body: r.text(),
        attempt_header: r.header("x-envoy-attempt-count").map(str::to_owned),
        expected_timeout: r
            .header("x-seen-expected-timeout")
            .and_then(|v| v.parse().ok()),
        upstream_attempts: up.flaky_count(&key),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_behave_as_envoy() {
    let up = HttpUpstream::start("a").await;
    let cfg = tests::retry::config(up.addr);
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    let mut differ = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let (ev, rv) = tokio::join!(run(&envoy, &up, "e", i, c), run(&remora, &up, "r", i, c));
        if !ev.same(&rv) {
            differ.push(format!(
                "{} {} {} {:?} ({} body bytes):\n    envoy  {ev:?}\n    remora {rv:?}",
                c.listener, c.method, c.path, c.headers, c.body_len
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} cases differ:\n{}",
        differ.len(),
        CASES.len(),
        differ.join("\n")
    );
    let stats = [
        "cluster.a.upstream_rq_retry",
        "cluster.a.upstream_rq_retry_success",
        "cluster.a.upstream_rq_retry_limit_exceeded",
        "cluster.a.upstream_rq_per_try_timeout",
        "cluster.a.upstream_rq_per_try_idle_timeout",
        "cluster.a.upstream_rq_total",
    ];
    let (es, rs): (Vec<u64>, Vec<u64>) = tokio::task::spawn_blocking(move || {
        (
            stats.iter().map(|s| envoy.stat(s)).collect(),
            stats.iter().map(|s| remora.stat(s)).collect(),
        )
    })
    .await
    .expect("stats");
    assert_eq!(es, rs, "stats {stats:?}");
}
