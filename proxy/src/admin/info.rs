//! `/server_info`, `/clusters` and `/listeners`.

use std::fmt::Write;

use http::StatusCode;
use serde_json::{json, Value};

use super::{json, text, AdminResponse, Query};
use crate::config::cluster::EdsHealth;
use crate::config::common::BindAddress;
use crate::server::{Server, VERSION};
use crate::upstream::cluster::{HostAddr, HostEntry};
use crate::upstream::host::flags;

pub fn server_info(server: &Server) -> Value {
    let o = &server.options;
    let uptime = format!("{}s", server.started.elapsed().as_secs());
    json!({
        "version": format!("remora/{VERSION}"),
        "state": server.state().name(),
        "hot_restart_version": "disabled",
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "node": {"id": server.node.id, "cluster": server.node.cluster},
        "command_line_options": {
            "base_id": "0",
            "concurrency": o.workers(),
            "config_path": o.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "config_yaml": o.config_yaml.clone().unwrap_or_default(),
            "allow_unknown_static_fields": o.allow_unknown_static_fields,
            "log_level": o.log_level,
            "component_log_level": o.component_log_level.clone().unwrap_or_default(),
            "log_format": o.log_format.clone().unwrap_or_default(),
            "drain_time": format!("{}s", o.drain_time_s),
            "drain_strategy": format!("{:?}", o.drain_strategy),
            "parent_shutdown_time": format!("{}s", o.parent_shutdown_time_s),
            "service_node": o.service_node.clone().unwrap_or_default(),
            "service_cluster": o.service_cluster.clone().unwrap_or_default(),
            "mode": format!("{:?}", o.mode),
            "disable_hot_restart": o.disable_hot_restart,
        }
    })
}

fn addr_json(a: &HostAddr) -> Value {
    match a {
        HostAddr::Tcp(sa) => {
            json!({"socket_address": {"address": sa.ip().to_string(), "port_value": sa.port()}})
        }
        HostAddr::Unix(p) => json!({"pipe": {"path": p.display().to_string()}}),
    }
}

/// Envoy's `health_flags` text: `healthy`, or each reason the host is out, like
/// `/failed_active_hc/failed_outlier_check`.
fn health_flags_text(h: &HostEntry) -> String {
    let f = h.state.flags();
    let mut out = String::new();
    let reasons = [
        (f & flags::FAILED_ACTIVE_HC != 0, "/failed_active_hc"),
        (
            f & flags::FAILED_OUTLIER_CHECK != 0,
            "/failed_outlier_check",
        ),
        (h.eds_health == EdsHealth::Unhealthy, "/failed_eds_health"),
        (f & flags::DEGRADED_ACTIVE_HC != 0, "/degraded_active_hc"),
        (h.eds_health == EdsHealth::Degraded, "/degraded_eds_health"),
        (
            f & flags::PENDING_DYNAMIC_REMOVAL != 0,
            "/pending_dynamic_removal",
        ),
        (
            f & flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL != 0,
            "/excluded_via_immediate_hc_fail",
        ),
    ];
    for (on, text) in reasons {
        if on {
            out.push_str(text);
        }
    }
    if out.is_empty() {
        out.push_str("healthy");
    }
    out
}

fn health_status_json(h: &HostEntry) -> Value {
    let f = h.state.flags();
    let eds = match h.eds_health {
        EdsHealth::Healthy => "HEALTHY",
        EdsHealth::Degraded => "DEGRADED",
        EdsHealth::Unhealthy => "UNHEALTHY",
    };
    let mut status = json!({ "eds_health_status": eds });
    for (bit, key) in [
        (flags::FAILED_ACTIVE_HC, "failed_active_health_check"),
        (flags::FAILED_OUTLIER_CHECK, "failed_outlier_check"),
        (flags::DEGRADED_ACTIVE_HC, "active_hc_degraded"),
        (flags::PENDING_DYNAMIC_REMOVAL, "pending_dynamic_removal"),
        (
            flags::EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
            "excluded_via_immediate_hc_fail",
        ),
    ] {
        if f & bit != 0 {
            status[key] = Value::Bool(true);
        }
    }
    status
}

pub fn clusters(server: &Server, q: &Query) -> AdminResponse {
    let snapshot = server.clusters.snapshot();
    let mut clusters: Vec<_> = snapshot.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    if q.get("format") == Some("json") {
        let statuses: Vec<Value> = clusters
            .iter()
            .map(|c| {
                let hosts: Vec<Value> = c
                    .hosts()
                    .hosts
                    .iter()
                    .map(|h| {
                        json!({
                            "address": addr_json(&h.addr),
                            "hostname": h.hostname.clone().unwrap_or_default(),
                            "health_status": health_status_json(h),
                            "weight": h.weight,
                        })
                    })
                    .collect();
                json!({"name": &*c.name, "observability_name": &*c.name, "host_statuses": hosts})
            })
            .collect();
        return json(json!({"cluster_statuses": statuses}));
    }
    let mut out = String::new();
    for c in clusters {
        let _ = writeln!(out, "{}::observability_name::{}", c.name, c.name);
        let _ = writeln!(out, "{}::added_via_api::false", c.name);
        for h in &c.hosts().hosts {
            let _ = writeln!(
                out,
                "{}::{}::health_flags::{}",
                c.name,
                h.addr,
                health_flags_text(h)
            );
            let _ = writeln!(out, "{}::{}::weight::{}", c.name, h.addr, h.weight);
            if let Some(name) = &h.hostname {
                let _ = writeln!(out, "{}::{}::hostname::{}", c.name, h.addr, name);
            }
        }
    }
    text(StatusCode::OK, out)
}

pub fn listeners(server: &Server, q: &Query) -> AdminResponse {
    let rows: Vec<(String, Value, String)> = server
        .listeners
        .list()
        .into_iter()
        .map(|active| {
            let l = active.slot.current();
            let (j, s) = match (&l.config.address, active.addr) {
                (_, Some(sa)) => (json!({"socket_address": {"address": sa.ip().to_string(), "port_value": sa.port()}}), sa.to_string()),
                (BindAddress::Tcp(sa), None) => (json!({"socket_address": {"address": sa.ip().to_string(), "port_value": sa.port()}}), sa.to_string()),
                (BindAddress::Unix(p), None) => (json!({"pipe": {"path": p.display().to_string()}}), p.display().to_string()),
            };
            (l.config.name.clone(), j, s)
        })
        .collect();
    if q.get("format") == Some("json") {
        let statuses: Vec<Value> = rows
            .into_iter()
            .map(|(n, a, _)| json!({"name": n, "local_address": a}))
            .collect();
        return json(json!({"listener_statuses": statuses}));
    }
    let mut out = String::new();
    for (n, _, s) in rows {
        let _ = writeln!(out, "{n}::{s}");
    }
    text(StatusCode::OK, out)
}
