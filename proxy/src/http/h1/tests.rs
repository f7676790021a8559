//! The server loop over an in-memory connection, with direct responses (no upstream).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::drain::Drain;
use crate::testutil::{downstream, http_context};

const HCM: &str = r#"
stat_prefix: t
route_config:
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - {match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}
http_filters: [{name: envoy.filters.http.router}]
"#;

/// A client end whose server end is served by the loop.
fn start() -> (DuplexStream, Drain) {
    let ctx = http_context(HCM, vec![]);
    let drain = Drain::default();
    let down = downstream(&drain);
    let (client, server) = tokio::io::duplex(64 * 1024);
    let opts = Options {
        late: false,
        grace: Duration::from_secs(1),
        clock: ActivityClock::default(),
    };
    tokio::spawn(serve(server, BytesMut::new(), ctx, down, opts));
    (client, drain)
}

/// Everything the server sends until it closes (or is quiet for a while).
async fn read_all(c: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(text: &str) -> usize {
    text.matches("HTTP/1.1 200 OK\r\n").count()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mut c, _drain) = start();
    c.write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\nGET /3 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let text = read_all(&mut c).await;
    assert_eq!(statuses(&text), 3, "{text}");
    assert!(text.ends_with("connection: close\r\n\r\nok"), "{text}");
}

#[tokio::test]
async fn a_body_already_buffered_is_skipped_and_one_still_coming_closes() {
    let (mut c, _drain) = start();
    // The direct response does not read the body; all of it came with the head.
    c.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcGET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let mut text = String::new();
    while statuses(&text) < 2 {
        let n = c.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Now a body that has not all arrived: the connection closes after the response.
    c.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .expect("write");
    let text = read_all(&mut c).await;
    assert_eq!(statuses(&text), 1, "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_answered_and_closed() {
    let (mut c, _drain) = start();
    c.write_all(
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .expect("write");
    let text = read_all(&mut c).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    let (mut c, _drain) = start();
    let mut big = b"GET / HTTP/1.1\r\nhost: a\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 61 * 1024));
    c.write_all(&big).await.expect("write");
    let text = read_all(&mut c).await;
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_drain_asks_for_close_and_closes_idle_connections() {
    let (mut c, drain) = start();
    c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).await.expect("read");
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("connection: close"));
    drain.start();
    // Idle when the drain came: closed without a word.
    assert_eq!(read_all(&mut c).await, "");
}

#[test]
fn reading_a_connection_for_fuzzing_counts_its_requests() {
    let two = b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(read_requests_for_fuzzing(two), 2);
    // Refused (both framings), and cut short in its body.
    let both =
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(read_requests_for_fuzzing(both), 0);
    let short = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 9\r\n\r\nabc";
    assert_eq!(read_requests_for_fuzzing(short), 1);
}
