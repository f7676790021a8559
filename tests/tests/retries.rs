//! Retries against a scripted upstream that fails on demand (`/flaky/KEY/N/HOW`): how
//! many attempts it saw, which conditions retry, the request headers that change the
//! policy, request bodies replayed whole, the per-try timeout, and the stats.

use bytes::Bytes;
use tests::client::{request, Conn};
use tests::proxy::Proxy;
use tests::upstream::HttpUpstream;

async fn env() -> (Proxy, HttpUpstream) {
    let a = HttpUpstream::start("a").await;
    let cfg = tests::retry::config(a.addr);
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .expect("proxy");
    (proxy, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_conditions_and_counts() {
    let (p, a) = env().await;
    let mut c = Conn::h1(p.addr("edge")).await;

    // 5xx: two failures, then success on the third attempt.
    let r = c.get("h", "/flaky/five-a/2/500", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok after 3"));
    assert_eq!(a.flaky_count("five-a"), 3);
    assert_eq!(r.header("x-envoy-attempt-count"), Some("3"));
    assert_eq!(r.header("x-seen-attempt-count"), Some("3"));
    assert_eq!(p.stat("cluster.a.upstream_rq_retry"), 2);
    assert_eq!(p.stat("cluster.a.upstream_rq_retry_success"), 1);

    // Exhausted: 1 + num_retries (3) attempts, the last failure passes through.
    let r = c.get("h", "/flaky/five-b/9/503", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (503, "failing 4"));
    assert_eq!(a.flaky_count("five-b"), 4);
    assert_eq!(p.stat("cluster.a.upstream_rq_retry_limit_exceeded"), 1);

    // gateway-error: 502 retried, 500 not.
    let r = c.get("h", "/flaky/gw-a/1/502", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.flaky_count("gw-a"), 2);
    let r = c.get("h", "/flaky/gw-b/1/500", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(a.flaky_count("gw-b"), 1);

    // retriable-status-codes: 418 retried (default num_retries: 1).
    let r = c.get("h", "/flaky/codes-a/1/418", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.flaky_count("codes-a"), 2);

    // Resets count as 5xx.
    let r = c.get("h", "/flaky/five-c/1/reset", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.flaky_count("five-c"), 2);

    // The virtual host's policy (connect-failure) does not retry a 503.
    let r = c.get("h", "/flaky/none-a/1/503", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(a.flaky_count("none-a"), 1);
    assert_eq!(r.header("x-envoy-attempt-count"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_change_the_policy() {
    let (p, a) = env().await;
    // From an external client the retry headers are stripped and change nothing.
    let mut c = Conn::h1(p.addr("edge")).await;
    let r = c
        .get("h", "/flaky/none-x/1/503", &[("x-envoy-retry-on", "5xx")])
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(a.flaky_count("none-x"), 1);
    // From an internal one they count.
    let mut c = Conn::h1(p.addr("internal")).await;
    // x-envoy-retry-on adds a condition; x-envoy-max-retries sets the count.
    let r = c
        .get(
            "h",
            "/flaky/none-b/9/503",
            &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "2")],
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(a.flaky_count("none-b"), 3);
    // x-envoy-max-retries: 0 turns retries off.
    let r = c
        .get("h", "/flaky/five-d/1/500", &[("x-envoy-max-retries", "0")])
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(a.flaky_count("five-d"), 1);
    // x-envoy-retriable-status-codes adds codes to the policy's list.
    let r = c
        .get(
            "h",
            "/flaky/codes-b/1/409",
            &[("x-envoy-retriable-status-codes", "409")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(a.flaky_count("codes-b"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_replayed_up_to_the_buffer_limit() {
    let (p, a) = env().await;
    let mut c = Conn::h1(p.addr("edge")).await;
    let small = Bytes::from(vec![b'x'; 10_000]);
    let r = c
        .send(request(
            "POST",
            "h",
            "/flaky/five-e/1/503",
            &[],
            small,
            false,
        ))
        .await
        .expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-body-len"), Some("10000"));
    assert_eq!(a.flaky_count("five-e"), 2);
    // Past the listener's 64 KiB buffer limit the body is not kept: no retry.
    let big = Bytes::from(vec![b'y'; 200_000]);
    let r = c
        .send(request("POST", "h", "/flaky/five-f/1/503", &[], big, false))
        .await
        .expect("response");
    assert_eq!(r.status, 503);
    assert_eq!(a.flaky_count("five-f"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_then_answers_504() {
    let (p, a) = env().await;
    let mut c = Conn::h1(p.addr("edge")).await;
    // The first attempt hangs past the 100 ms per-try timeout; the second answers.
    let r = c.get("h", "/flaky/pertry-a/1/hang", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.flaky_count("pertry-a"), 2, "{}", r.text());
    // Every attempt hangs: 3 attempts, then 504 "upstream request timeout".
    let r = c.get("h", "/flaky/pertry-b/9/hang", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert_eq!(a.flaky_count("pertry-b"), 3);
    // Every per-try timeout counts: one above, three here.
    assert_eq!(p.stat("cluster.a.upstream_rq_per_try_timeout"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_move_to_another_host() {
    let (p, _a) = env().await;
    // Two hosts, one refusing: with previous_hosts every request ends on the live one.
    for _ in 0..6 {
        let r = tests::client::get(p.addr("edge"), "h", "/two").await;
        assert_eq!(r.status, 200);
    }
    assert!(p.stat("cluster.two.upstream_rq_retry") >= 3);
}
