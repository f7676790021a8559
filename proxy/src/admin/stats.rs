//! `/stats` (Envoy text, `?filter=`, `?usedonly`, `?format=json`) and `/stats/prometheus`.

use std::fmt::Write;

use http::StatusCode;
use serde_json::json;

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

pub fn stats(server: &Server, q: &Query) -> AdminResponse {
    let filter = match q.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => match regex::Regex::new(f) {
            Ok(r) => Some(r),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid re2 regex: {e}\n")),
        },
        None => None,
    };
    let used_only = q.has("usedonly");
    let samples: Vec<_> = server
        .stats
        .snapshot()
        .into_iter()
        .filter(|s| !used_only || s.used)
        .filter(|s| filter.as_ref().is_none_or(|f| f.is_match(&s.name)))
        .collect();
    match q.get("format") {
        Some("json") => {
            let stats: Vec<_> = samples
                .iter()
                .map(|s| json!({"name": s.name, "value": s.value}))
                .collect();
            json(json!({"stats": stats}))
        }
        Some("prometheus") => prometheus(server),
        Some(other) if other != "text" => text(
            StatusCode::BAD_REQUEST,
            format!("usage: /stats?format=json|prometheus|text, not {other}\n"),
        ),
        _ => {
            let mut out = String::new();
            for s in samples {
                let _ = writeln!(out, "{}: {}", s.name, s.value);
            }
            text(StatusCode::OK, out)
        }
    }
}

pub fn prometheus(server: &Server) -> AdminResponse {
    let mut samples = server.stats.snapshot_with(true);
    samples.sort_by(|a, b| a.prom_name.cmp(&b.prom_name));
    let mut out = String::new();
    let mut last_name = String::new();
    for s in samples {
        if s.prom_name != last_name {
            let kind = if s.is_counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE {} {kind}", s.prom_name);
            last_name = s.prom_name.clone();
        }
        let labels: Vec<String> = s
            .tags
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(out, "{} {}", s.prom_name, s.value);
        } else {
            let _ = writeln!(out, "{}{{{}}} {}", s.prom_name, labels.join(","), s.value);
        }
    }
    text(StatusCode::OK, out)
}
