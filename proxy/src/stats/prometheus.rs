//! Prometheus names and tags for Envoy stat names.

/// Envoy's default tag extraction for the stat families Remora emits:
/// `cluster.<name>.`, `http.<prefix>.`, `listener.<address>.`, `tcp.<prefix>.`, and the
/// response code class suffix `_Nxx`.
pub(super) fn prometheus_name(name: &str) -> (String, Vec<(&'static str, String)>) {
    let mut tags = Vec::new();
    let mut rest = name.to_string();
    for (prefix, tag) in [
        ("cluster.", "envoy_cluster_name"),
        ("http.", "envoy_http_conn_manager_prefix"),
        ("listener.", "envoy_listener_address"),
        ("tcp.", "envoy_tcp_prefix"),
    ] {
        if let Some(after) = name.strip_prefix(prefix) {
            // The tagged value runs up to the last dot (stat names never contain dots
            // after the tagged segment for these families).
            if let Some(i) = after.rfind('.') {
                let value = &after[..i];
                if prefix == "listener." && value.starts_with("http.") {
                    break;
                }
                tags.push((tag, value.to_string()));
                rest = format!("{prefix}{}", &after[i + 1..]);
            }
            break;
        }
    }
    if let Some(base) = rest.strip_suffix("xx") {
        if let Some((head, class)) = base.rsplit_once('_') {
            if class.len() == 1 && class.as_bytes()[0].is_ascii_digit() {
                tags.push(("envoy_response_code_class", class.to_string()));
                rest = format!("{head}_xx");
            }
        }
    }
    let sanitized: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (format!("envoy_{sanitized}"), tags)
}
