//! Node's llhttp request-parser corpus (`../shared/testdata/http1-parsing/llhttp`) sent to
//! Remora byte for byte. Remora may be stricter than llhttp, never looser: it must never
//! answer more messages than llhttp completes before its error, must answer or close
//! every case, and must keep serving afterwards.

use std::time::Duration;

use tests::client::{self, raw};
use tests::proxy::Proxy;

/// Deliberate differences, each a leniency Envoy 1.40 has too (checked in the differential
/// tests) and that cannot smuggle: Remora re-frames every request it forwards, so the
/// upstream sees one unambiguous message. RFC 9112 §2.2 lets a recipient accept a bare LF
/// as a line end; llhttp rejects it.
const DOCUMENTED_LENIENCIES: &[&str] = &[
    "invalid.md: Headers separated by LF",
    "invalid.md: Empty headers separated by LF",
    "invalid.md: Missing CR between headers",
];

fn count_200s(resp: &[u8]) -> usize {
    resp.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_looser_than_llhttp() {
    let cases = tests::llhttp::cases("request");
    assert!(
        cases.len() > 100,
        "llhttp corpus parsed: {} request cases",
        cases.len()
    );
    // The echo upstream reads each body before answering, so body errors count.
    let echo = tests::upstream::HttpUpstream::start("echo").await;
    let cfg = tests::render(
        tests::llhttp::CONFIG,
        &[("upstream", echo.addr.port().to_string())],
    );
    let p = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();
    let addr = p.addr("l");
    let mut looser = Vec::new();
    let (mut agree, mut stricter, mut documented) = (0, 0, 0);
    for c in &cases {
        let resp = raw(addr, &c.input, Duration::from_millis(200)).await;
        let answered = count_200s(&resp);
        if answered > c.completed && DOCUMENTED_LENIENCIES.contains(&c.title.as_str()) {
            documented += 1;
        } else if answered > c.completed {
            looser.push(format!(
                "{} (llhttp completes {}, Remora answered {answered}): {:?}",
                c.title,
                c.completed,
                String::from_utf8_lossy(&c.input)
            ));
        } else if answered == c.completed {
            agree += 1;
        } else {
            stricter += 1;
        }
        let _ = c.rejected;
    }
    eprintln!(
        "llhttp corpus: {} cases, {agree} same, {stricter} stricter, {documented} documented leniencies, {} looser",
        cases.len(),
        looser.len()
    );
    assert!(
        looser.is_empty(),
        "Remora accepted what llhttp rejects:\n{}",
        looser.join("\n")
    );
    assert_eq!(
        client::get(addr, "h", "/").await.status,
        200,
        "still serving"
    );
}
