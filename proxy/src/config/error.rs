//! Errors from loading and converting configuration: always a field path and a reason.

use std::fmt;

/// A configuration error at a field path such as
/// `static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the path with a parent field (`parent.child`), or an index
    /// (`parent[3]`) when the child path starts with one.
    pub fn within(mut self, parent: &str) -> Self {
        self.path = join(parent, &self.path);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

pub(crate) fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (_, true) => parent.to_string(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

/// Result of a conversion step.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// Adds a path prefix to the error of a conversion step.
pub trait Within<T> {
    fn within(self, parent: &str) -> Result<T>;
    fn at_index(self, field: &str, index: usize) -> Result<T>;
}

impl<T> Within<T> for Result<T> {
    fn within(self, parent: &str) -> Result<T> {
        self.map_err(|e| e.within(parent))
    }
    fn at_index(self, field: &str, index: usize) -> Result<T> {
        self.map_err(|e| e.within(&format!("{field}[{index}]")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths_and_indexes() {
        let e = ConfigError::new("port_value", "out of range").within("socket_address");
        let e = e.within("address").within("listeners[2]");
        assert_eq!(
            e.to_string(),
            "listeners[2].address.socket_address.port_value: out of range"
        );
        let r: Result<()> = Err(ConfigError::new("name", "empty"));
        assert_eq!(
            r.at_index("clusters", 1).unwrap_err().path,
            "clusters[1].name"
        );
    }
}
