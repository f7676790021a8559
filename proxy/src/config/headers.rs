//! Header additions and removals (`HeaderValueOption`, `append_action`).

use envoy_types::pb::envoy::config::core::v3 as core;
use http::header::{HeaderName, HeaderValue};

use super::error::{ConfigError, Result, Within};

/// How an added header combines with an existing one (`HeaderValueOption.append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

/// Header additions and removals at one level (route, virtual host or route config).
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    pub add: Vec<(HeaderName, HeaderValue, AppendAction)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, action) in &self.add {
            match action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(name.clone(), value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(name.clone(), value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }

    pub fn build(
        add: &[core::HeaderValueOption],
        remove: &[String],
        add_field: &str,
        remove_field: &str,
    ) -> Result<Self> {
        let mut out = HeaderMutations::default();
        for (i, opt) in add.iter().enumerate() {
            out.add
                .push(header_value_option(opt).at_index(add_field, i)?);
        }
        for (i, name) in remove.iter().enumerate() {
            let n = header_name(name).at_index(remove_field, i)?;
            out.remove.push(n);
        }
        Ok(out)
    }
}

pub fn header_name(name: &str) -> Result<HeaderName> {
    if name.starts_with(':') {
        return Err(ConfigError::new(
            "",
            format!("pseudo-header '{name}' cannot be mutated"),
        ));
    }
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::new("", format!("'{name}' is not a valid header name")))
}

fn header_value_option(
    opt: &core::HeaderValueOption,
) -> Result<(HeaderName, HeaderValue, AppendAction)> {
    use core::header_value_option::HeaderAppendAction as A;
    let h = opt
        .header
        .as_ref()
        .ok_or_else(|| ConfigError::new("header", "is required"))?;
    let name = header_name(&h.key).within("header.key")?;
    let raw = if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value[..]
    };
    if raw
        .windows(2)
        .any(|w| w[0] == b'%' && w[1].is_ascii_uppercase())
    {
        return Err(ConfigError::new(
            "header.value",
            "command operators (%...%) in header values are not supported yet",
        ));
    }
    let value = HeaderValue::from_bytes(raw)
        .map_err(|_| ConfigError::new("header.value", "not a valid header value"))?;
    let action = match &opt.append {
        // The deprecated `append` field wins when set (true: append, false: overwrite).
        Some(b) if b.value => AppendAction::AppendIfExistsOrAdd,
        Some(_) => AppendAction::OverwriteIfExistsOrAdd,
        None => match A::try_from(opt.append_action) {
            Ok(A::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(A::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(A::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(A::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => return Err(ConfigError::new("append_action", "unknown value")),
        },
    };
    Ok((name, value, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3 as core;

    #[test]
    fn header_mutations_follow_append_action() {
        let opt = |k: &str, v: &str, a: i32| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            append_action: a,
            ..Default::default()
        };
        let m = HeaderMutations::build(
            &[
                opt("x-a", "1", 0),
                opt("x-b", "2", 1),
                opt("x-c", "3", 2),
                opt("x-d", "4", 3),
            ],
            &["x-gone".into()],
            "add",
            "remove",
        )
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-a", "0".parse().unwrap());
        h.insert("x-b", "0".parse().unwrap());
        h.insert("x-c", "0".parse().unwrap());
        h.insert("x-gone", "0".parse().unwrap());
        m.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-b"], "0");
        assert_eq!(h["x-c"], "3");
        assert!(!h.contains_key("x-d"));
        assert!(!h.contains_key("x-gone"));
    }
}
