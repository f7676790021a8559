//! Text (YAML or JSON) to Envoy v3 protos, using protobuf's canonical JSON mapping.
//!
//! Envoy's API descriptors (compiled by `build.rs`) drive the mapping, so field names in
//! `snake_case` or `lowerCamelCase`, `typed_config` with `@type`, durations such as
//! `"0.25s"`, wrapper types and enums by name all work as they do for Envoy. The result is
//! transcoded into `envoy-types` prost messages; nothing past `config/` sees them.

use std::sync::Mutex;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

use super::error::{ConfigError, Result};

static POOL: Mutex<Option<DescriptorPool>> = Mutex::new(None);

include!(concat!(env!("OUT_DIR"), "/envoy_type_names.rs"));

/// The placeholder for `typed_config`s of Envoy types outside the pool.
pub const UNSUPPORTED: &str = "remora.config.Unsupported";

/// Whether `name` is a message of the Envoy API (in the pool or not).
pub fn is_envoy_type(name: &str) -> bool {
    ENVOY_TYPES.binary_search(&name).is_ok()
}

/// The Envoy API descriptor pool, decoded on first use and kept until [`release_pool`].
pub fn pool() -> DescriptorPool {
    let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .get_or_insert_with(|| {
            DescriptorPool::decode(crate::DESCRIPTORS)
                .expect("descriptor set produced by build.rs decodes")
        })
        .clone()
}

/// Drops the cached pool (several MB once decoded). Config loading and `/config_dump`
/// decode it again when they need it; the data path never does.
pub fn release_pool() {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// Parses YAML or JSON text into a JSON value. YAML is a superset of JSON, so one parser
/// serves both; `what` names the source in errors.
pub fn parse_text(text: &str, what: &str) -> Result<Value> {
    let value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::new("", format!("{what}: not valid YAML or JSON: {e}")))?;
    Ok(value)
}

/// Merges `overlay` into `base` the way Envoy merges `--config-yaml` over `-c`
/// (protobuf `MergeFrom`: scalars replace, messages merge, repeated fields append).
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) => b.extend(o),
        (b, o) => *b = o,
    }
}

/// How unknown fields are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    Reject,
    /// `--allow-unknown-static-fields`: dropped, each reported as a warning.
    Warn,
}

/// Decodes `value` as the message `full_name` (e.g. `envoy.config.bootstrap.v3.Bootstrap`).
/// Returns the message and the warnings for unknown fields that were dropped.
pub fn decode<M: prost::Message + Default>(
    mut value: Value,
    full_name: &str,
    unknown: UnknownFields,
) -> Result<(M, Vec<ConfigError>)> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| ConfigError::new("", format!("no descriptor for {full_name}")))?;
    mark_unsupported(&mut value);
    wrap_single_repeated(&mut value, &desc);
    let mut warnings = Vec::new();
    // Each pass either succeeds or reports one error; unknown fields are removed and the
    // decode retried, so all of them are reported, not only the first.
    for _ in 0..1000 {
        match decode_once(&value, &desc) {
            Ok(msg) => {
                let typed = msg.transcode_to::<M>().map_err(|e| {
                    ConfigError::new("", format!("transcoding to {full_name}: {e}"))
                })?;
                return Ok((typed, warnings));
            }
            Err(err) => {
                let unknown_key = err.reason.strip_prefix("unrecognized field name '");
                match (unknown, unknown_key) {
                    (UnknownFields::Warn, Some(rest)) => {
                        let key = rest.split('\'').next().unwrap_or_default().to_string();
                        let field_path = super::error::join(&err.path, &key);
                        if !remove_at(&mut value, &err.path, &key) {
                            return Err(err);
                        }
                        warnings.push(ConfigError::new(field_path, err.reason.clone()));
                    }
                    _ => return Err(err),
                }
            }
        }
    }
    Err(ConfigError::new("", "too many unknown fields"))
}

/// Decodes `value` as a dynamic message of type `desc` (used for `TypedStruct` payloads).
pub fn decode_dynamic(mut value: Value, desc: &MessageDescriptor) -> Result<DynamicMessage> {
    mark_unsupported(&mut value);
    wrap_single_repeated(&mut value, desc);
    decode_once(&value, desc)
}

/// Replaces every `Any` whose type is part of the Envoy API but not in Remora's pool with
/// a [`UNSUPPORTED`] placeholder that keeps the type URL, so that the conversion can name
/// the unsupported extension instead of failing on its unknown fields.
fn mark_unsupported(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let placeholder = map
                .get("@type")
                .and_then(Value::as_str)
                .filter(|url| {
                    let name = url.rsplit('/').next().unwrap_or(url);
                    pool().get_message_by_name(name).is_none() && is_envoy_type(name)
                })
                .map(str::to_string);
            match placeholder {
                Some(url) => {
                    *value = serde_json::json!({
                        "@type": format!("type.googleapis.com/{UNSUPPORTED}"),
                        "type_url": url,
                    });
                }
                None => map.values_mut().for_each(mark_unsupported),
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mark_unsupported),
        _ => {}
    }
}

/// Envoy's loader takes a single value where a list is expected (`filters: {name: ...}`
/// for `filters: [{name: ...}]`, as Envoy's own filesystem xDS example writes it); so does
/// Remora: such a value becomes a one-element list. Follows the descriptors down, through
/// `Any` values by their `@type`.
fn wrap_single_repeated(value: &mut Value, desc: &MessageDescriptor) {
    use prost_reflect::Kind;
    let Value::Object(map) = value else {
        return;
    };
    let any_type = (desc.full_name() == "google.protobuf.Any")
        .then(|| map.get("@type").and_then(Value::as_str))
        .flatten()
        .and_then(|url| pool().get_message_by_name(url.rsplit('/').next().unwrap_or(url)));
    if let Some(inner) = any_type {
        return wrap_single_repeated(value, &inner);
    }
    for (key, v) in map.iter_mut() {
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            continue;
        };
        if field.is_list() && !v.is_array() && !v.is_null() {
            *v = Value::Array(vec![v.take()]);
        }
        let Kind::Message(m) = field.kind() else {
            continue;
        };
        if field.is_map() {
            let value_kind = m.map_entry_value_field().kind();
            if let (Kind::Message(vm), Value::Object(entries)) = (value_kind, &mut *v) {
                entries
                    .values_mut()
                    .for_each(|e| wrap_single_repeated(e, &vm));
            }
            continue;
        }
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| wrap_single_repeated(i, &m)),
            other => wrap_single_repeated(other, &m),
        }
    }
}

fn decode_once(value: &Value, desc: &MessageDescriptor) -> Result<DynamicMessage> {
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let mut tracker = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut tracker);
    match DynamicMessage::deserialize_with_options(desc.clone(), de, &opts) {
        Ok(m) => Ok(m),
        Err(e) => {
            let path = render_path(&tracker.path());
            Err(describe(value, desc, path, e.to_string()))
        }
    }
}

/// Renders serde's path (`a.b[0].c`) without the `?` markers it uses for unknown segments.
fn render_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Builds the error for a failed decode. For an unknown field the path names the message
/// holding it and the reason names that message's type.
fn describe(root: &Value, desc: &MessageDescriptor, path: String, reason: String) -> ConfigError {
    // serde_path_to_error stops at the map holding the bad key for unknown fields.
    let type_name = message_at(root, desc, &path).map(|d| d.full_name().to_string());
    let reason = match (reason.starts_with("unrecognized field name"), type_name) {
        (true, Some(t)) => format!("{reason} (in {t})"),
        (false, _) if reason.starts_with("message '") && reason.ends_with("' not found") => {
            format!(
                "unknown @type: {reason}: this type is not part of the Envoy v3 API Remora knows"
            )
        }
        _ => reason,
    };
    ConfigError::new(path, reason)
}

/// Walks `path` through `root` and the descriptors, following `@type` inside `Any`,
/// to find the message type at that path.
fn message_at(root: &Value, desc: &MessageDescriptor, path: &str) -> Option<MessageDescriptor> {
    let mut value = root;
    let mut desc = desc.clone();
    for seg in split_path(path) {
        match seg {
            PathSeg::Index(i) => value = value.get(i)?,
            PathSeg::Key(key) => {
                let field = desc
                    .get_field_by_name(key)
                    .or_else(|| desc.get_field_by_json_name(key))?;
                value = value.get(key)?;
                if field.is_map() {
                    continue;
                }
                let Kind::Message(m) = field.kind() else {
                    return None;
                };
                desc = m;
            }
        }
        if desc.full_name() == "google.protobuf.Any" {
            if let Some(url) = value.get("@type").and_then(Value::as_str) {
                let name = url.rsplit('/').next()?;
                desc = pool().get_message_by_name(name)?;
            }
        }
    }
    Some(desc)
}

enum PathSeg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<PathSeg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(PathSeg::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(PathSeg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

fn remove_at(root: &mut Value, path: &str, key: &str) -> bool {
    let mut value = root;
    for seg in split_path(path) {
        value = match seg {
            PathSeg::Key(k) => match value.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            PathSeg::Index(i) => match value.get_mut(i) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    value
        .as_object_mut()
        .is_some_and(|o| o.remove(key).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

    #[test]
    fn decodes_yaml_with_any_and_durations() {
        let v = parse_text(
            r#"
static_resources:
  clusters:
  - name: c
    connect_timeout: 0.25s
    type: STRICT_DNS
    per_connection_buffer_limit_bytes: 1024
"#,
            "test",
        )
        .unwrap();
        let (b, w): (Bootstrap, _) = decode(v, BOOTSTRAP, UnknownFields::Reject).unwrap();
        assert!(w.is_empty());
        let c = &b.static_resources.unwrap().clusters[0];
        assert_eq!(c.name, "c");
        assert_eq!(c.connect_timeout.unwrap().nanos, 250_000_000);
        assert_eq!(
            c.per_connection_buffer_limit_bytes.map(|v| v.value),
            Some(1024)
        );
    }

    #[test]
    fn unknown_field_names_path_and_type() {
        let v = parse_text(
            r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          bogus_field: 1
"#,
            "test",
        )
        .unwrap();
        let err = decode::<Bootstrap>(v.clone(), BOOTSTRAP, UnknownFields::Reject).unwrap_err();
        assert_eq!(
            err.path,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
        );
        assert!(err.reason.contains("bogus_field"), "{err}");
        assert!(err.reason.contains("HttpConnectionManager"), "{err}");

        let (b, w) = decode::<Bootstrap>(v, BOOTSTRAP, UnknownFields::Warn).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].path.ends_with("typed_config.bogus_field"), "{}", w[0]);
        assert_eq!(b.static_resources.unwrap().listeners.len(), 1);
    }

    #[test]
    fn unknown_type_url_is_named() {
        let v = parse_text(
            r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: x
        typed_config:
          "@type": type.googleapis.com/acme.NoSuchFilter
"#,
            "test",
        )
        .unwrap();
        let err = decode::<Bootstrap>(v, BOOTSTRAP, UnknownFields::Warn).unwrap_err();
        assert!(err.to_string().contains("acme.NoSuchFilter"), "{err}");
        assert!(err.path.contains("filters[0].typed_config"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error_with_path() {
        let v = parse_text(
            "static_resources: {clusters: [{name: c, connect_timeout: soon}]}",
            "test",
        )
        .unwrap();
        let err = decode::<Bootstrap>(v, BOOTSTRAP, UnknownFields::Reject).unwrap_err();
        assert_eq!(err.path, "static_resources.clusters[0].connect_timeout");
    }

    #[test]
    fn merge_appends_lists_and_replaces_scalars() {
        let mut a = parse_text("{a: 1, l: [1], m: {x: 1}}", "a").unwrap();
        merge(
            &mut a,
            parse_text("{a: 2, l: [2], m: {y: 2}}", "b").unwrap(),
        );
        assert_eq!(
            a,
            serde_json::json!({"a": 2, "l": [1, 2], "m": {"x": 1, "y": 2}})
        );
    }
}
