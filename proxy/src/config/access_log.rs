//! `access_log` entries: the file, stdout and stderr loggers with text formats. Anything
//! else (filters, JSON formats, other loggers) is refused by name.

use std::path::PathBuf;

use envoy_types::pb::envoy::config::accesslog::v3 as pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::{file::v3 as file, stream::v3 as stream};

use super::common::{self, resolve_any};
use super::error::{ConfigError, Result, Within};
use crate::access_log::format::{Format, DEFAULT_FORMAT};

pub const FILE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub const STDOUT: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub const STDERR: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// One logger: where its lines go and how they are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub path: PathBuf,
    pub format: Format,
}

/// Converts a connection manager's `access_log` list.
pub fn access_logs(logs: &[pb::AccessLog]) -> Result<Vec<AccessLogConfig>> {
    logs.iter()
        .enumerate()
        .map(|(i, l)| one(l).at_index("", i))
        .collect()
}

fn one(l: &pb::AccessLog) -> Result<AccessLogConfig> {
    if l.filter.is_some() {
        return Err(common::unsupported("filter", "access log filters"));
    }
    let Some(pb::access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
        return Err(ConfigError::new("typed_config", "is required"));
    };
    let r = resolve_any(any).within("typed_config")?;
    let (path, format) = match r.name.as_str() {
        FILE => {
            let f: file::FileAccessLog = r.decode().within("typed_config")?;
            use file::file_access_log::AccessLogFormat as F;
            let format = match &f.access_log_format {
                None => None,
                Some(F::Format(s)) => Some(s.clone()).filter(|s| !s.is_empty()),
                Some(F::LogFormat(s)) => Some(substitution(s).within("log_format")?),
                Some(F::JsonFormat(_) | F::TypedJsonFormat(_)) => {
                    return Err(common::unsupported("json_format", "JSON access logs"))
                        .within("typed_config")
                }
            };
            if f.path.is_empty() {
                return Err(ConfigError::new("typed_config.path", "is required"));
            }
            let path = PathBuf::from(&f.path);
            // As Envoy does, a file that cannot be opened rejects the config (the
            // logger opens it again when its listener is built).
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    ConfigError::new(
                        "typed_config.path",
                        format!("unable to open file '{}': {e}", path.display()),
                    )
                })?;
            (path, format)
        }
        STDOUT => {
            let f: stream::StdoutAccessLog = r.decode().within("typed_config")?;
            let format = f
                .access_log_format
                .map(|stream::stdout_access_log::AccessLogFormat::LogFormat(s)| s);
            ("/dev/stdout".into(), stream_format(format)?)
        }
        STDERR => {
            let f: stream::StderrAccessLog = r.decode().within("typed_config")?;
            let format = f
                .access_log_format
                .map(|stream::stderr_access_log::AccessLogFormat::LogFormat(s)| s);
            ("/dev/stderr".into(), stream_format(format)?)
        }
        other => {
            return Err(common::unsupported(
                "typed_config",
                &format!("access logger '{other}'"),
            ))
        }
    };
    let text = format.as_deref().unwrap_or(DEFAULT_FORMAT);
    let format = Format::parse(text)
        .map_err(|e| ConfigError::new("typed_config.log_format", e.to_string()))?;
    Ok(AccessLogConfig { path, format })
}

/// A stream logger's `log_format` (unset: the default format).
fn stream_format(s: Option<core::SubstitutionFormatString>) -> Result<Option<String>> {
    s.as_ref()
        .map(substitution)
        .transpose()
        .within("typed_config.log_format")
}

/// A `SubstitutionFormatString` with a text format (inline).
fn substitution(s: &core::SubstitutionFormatString) -> Result<String> {
    use core::data_source::Specifier;
    use core::substitution_format_string::Format as F;
    if !s.formatters.is_empty() {
        return Err(common::unsupported("formatters", "format extensions"));
    }
    if s.omit_empty_values {
        return Err(common::unsupported(
            "omit_empty_values",
            "omitting empty values",
        ));
    }
    #[allow(deprecated)]
    match &s.format {
        Some(F::TextFormat(t)) => Ok(t.clone()),
        Some(F::TextFormatSource(d)) => match &d.specifier {
            Some(Specifier::InlineString(t)) => Ok(t.clone()),
            Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone())
                .map_err(|_| ConfigError::new("text_format_source.inline_bytes", "not UTF-8")),
            _ => Err(common::unsupported(
                "text_format_source",
                "formats from files or the environment",
            )),
        },
        Some(F::JsonFormat(_)) => Err(common::unsupported("json_format", "JSON access logs")),
        None => Err(ConfigError::new("format", "is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<AccessLogConfig>> {
        use crate::config::load::{decode, parse_text, UnknownFields};
        let v = parse_text(&format!("access_log: {yaml}"), "test").expect("yaml");
        let (h, _): (
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
            _,
        ) = decode(
            v,
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            UnknownFields::Reject,
        )
        .expect("decodes");
        access_logs(&h.access_log)
    }

    #[test]
    fn loggers_and_formats() {
        let l = parse(r#"[{name: a, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null, log_format: {text_format_source: {inline_string: "%RESPONSE_FLAGS%\n"}}}}]"#).unwrap();
        assert_eq!(l[0].path, PathBuf::from("/dev/null"));
        assert_eq!(l[0].format, Format::parse("%RESPONSE_FLAGS%\n").unwrap());
        let l = parse(r#"[{name: b, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}]"#).unwrap();
        assert_eq!(l[0].path, PathBuf::from("/dev/stdout"));
        assert_eq!(l[0].format, Format::parse(DEFAULT_FORMAT).unwrap());
        let e = parse(r#"[{name: c, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null, log_format: {text_format_source: {inline_string: "%BOGUS%"}}}}]"#).unwrap_err().to_string();
        assert!(
            e.contains("[0].typed_config.log_format") && e.contains("BOGUS"),
            "{e}"
        );
        let e = parse(r#"[{name: c, filter: {not_health_check_filter: {}}, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null}}]"#).unwrap_err().to_string();
        assert!(e.contains("[0].filter"), "{e}");
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("remora-al-{}", std::process::id()));
        let missing = dir.join("no-such-dir").join("access.log");
        let yaml = |p: &std::path::Path| {
            format!(
                r#"[{{name: a, typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: "{}"}}}}]"#,
                p.display()
            )
        };
        let e = parse(&yaml(&missing)).unwrap_err().to_string();
        assert!(
            e.starts_with("[0].typed_config.path: unable to open file")
                && e.contains("no-such-dir"),
            "{e}"
        );
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ok = dir.join("access.log");
        assert_eq!(parse(&yaml(&ok)).expect("opens")[0].path, ok);
        assert!(ok.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
