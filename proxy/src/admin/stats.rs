//! `/stats` (Envoy text, `?filter=`, `?usedonly`, `?format=json`) and `/stats/prometheus`
//! (`?filter=`, `?usedonly`).

use std::fmt::Write;

use http::StatusCode;
use serde_json::json;

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

/// Which stats a query asks for: `filter` (a regular expression on the stat name) and
/// `usedonly`.
struct Selection {
    filter: Option<regex::Regex>,
    used_only: bool,
}

impl Selection {
    /// The selection, or the 400 answer to a bad expression.
    fn of(q: &Query) -> Result<Selection, Box<AdminResponse>> {
        let filter = match q.get("filter").filter(|f| !f.is_empty()) {
            Some(f) => Some(regex::Regex::new(f).map_err(|e| {
                Box::new(text(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid re2 regex: {e}\n"),
                ))
            })?),
            None => None,
        };
        Ok(Selection {
            filter,
            used_only: q.has("usedonly"),
        })
    }

    fn keeps(&self, s: &crate::stats::Sample) -> bool {
        (!self.used_only || s.used) && self.filter.as_ref().is_none_or(|f| f.is_match(&s.name))
    }
}

pub fn stats(server: &Server, q: &Query) -> AdminResponse {
    let selection = match Selection::of(q) {
        Ok(s) => s,
        Err(bad) => return *bad,
    };
    let samples: Vec<_> = server
        .stats
        .snapshot()
        .into_iter()
        .filter(|s| selection.keeps(s))
        .collect();
    match q.get("format") {
        Some("json") => {
            let stats: Vec<_> = samples
                .iter()
                .map(|s| json!({"name": s.name, "value": s.value}))
                .collect();
            json(json!({"stats": stats}))
        }
        Some("prometheus") => prometheus(server, q),
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

/// `/stats/prometheus` (with `filter` and `usedonly`, on the stat names, as Envoy's).
pub fn prometheus(server: &Server, q: &Query) -> AdminResponse {
    let selection = match Selection::of(q) {
        Ok(s) => s,
        Err(bad) => return *bad,
    };
    let mut samples = server.stats.snapshot_with(true);
    samples.retain(|s| selection.keeps(s));
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
        // Braces even without tags, as Envoy writes them.
        let _ = writeln!(out, "{}{{{}}} {}", s.prom_name, labels.join(","), s.value);
    }
    text(StatusCode::OK, out)
}
