//! Node's llhttp parser corpus (`../shared/testdata/http1-parsing/llhttp`): its cases
//! decoded as llhttp's own md-test does, with how far llhttp gets in each.

/// What the corpus tests proxy through: listener `l` (HTTP/1 only) sends everything to
/// cluster `upstream`, at `127.0.0.1:{{upstream}}`.
pub const CONFIG: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
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
            virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: ""}, route: {cluster: upstream}}]}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: upstream
    load_assignment: {cluster_name: upstream, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{upstream}}}}}}]}]}
"#;

/// One case of the corpus.
pub struct Case {
    /// The file and the case's heading.
    pub title: String,
    /// The bytes llhttp parses.
    pub input: Vec<u8>,
    /// Messages llhttp completes before an error (or all of them).
    pub completed: usize,
    pub rejected: bool,
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

/// The cases of `kind` (`request` or `response`; lenient and finish variants are left
/// out), from the folder of that name.
pub fn cases(kind: &str) -> Vec<Case> {
    let dir = crate::testdata(&format!("http1-parsing/llhttp/{kind}"));
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut title = String::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(t) = line
                .strip_prefix("### ")
                .or_else(|| line.strip_prefix("## "))
            {
                let file = f.file_name().unwrap_or_default().to_string_lossy();
                title = format!("{file}: {t}");
            }
            let Some(meta) = line
                .strip_prefix("<!-- meta=")
                .and_then(|m| m.strip_suffix(" -->"))
            else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_str(meta).unwrap_or_default();
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
            if meta["type"].as_str() != Some(kind) {
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
