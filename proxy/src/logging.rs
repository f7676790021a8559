//! Logging with Envoy's level and component names, changeable at run time through
//! `/logging`.
//!
//! Envoy logs by component (`upstream`, `http`, `router`, ...); Remora logs by module.
//! `--component-log-level` and `/logging?<component>=<level>` map each Envoy component
//! onto the modules that do that work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

/// Envoy's level names mapped to tracing's.
pub fn level(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// Remora's modules for an Envoy log component; `None` for components with no
/// counterpart (accepted and ignored).
pub fn modules(component: &str) -> Option<&'static [&'static str]> {
    Some(match component {
        "upstream" | "pool" | "client" | "dns" | "hc" | "health_checker" => &["remora::upstream"],
        "connection" | "conn_handler" | "filter" => &["remora::listener", "remora::io"],
        "tcp" => &["remora::tcp"],
        "http" | "http1" | "http2" | "router" => &["remora::http", "remora::routing"],
        "admin" => &["remora::admin"],
        "config" | "runtime" => &["remora::config"],
        "main" => &["remora::server", "remora::runtime"],
        _ => return None,
    })
}

#[derive(Debug, Default)]
struct Levels {
    base: String,
    components: BTreeMap<String, &'static str>,
}

impl Levels {
    /// The `EnvFilter` directives: the base level, then each component's modules.
    fn directives(&self) -> String {
        let mut d = self.base.clone();
        for (component, lvl) in &self.components {
            for m in modules(component).unwrap_or(&[]) {
                d.push_str(&format!(",{m}={lvl}"));
            }
        }
        d
    }
}

/// Handle for changing levels later.
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    levels: Arc<Mutex<Levels>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogControl({})", self.current())
    }
}

impl LogControl {
    /// A control that changes nothing (for tests that run without a global subscriber).
    pub fn detached(level: &str) -> Self {
        LogControl {
            handle: None,
            levels: Arc::new(Mutex::new(Levels {
                base: level.to_string(),
                ..Default::default()
            })),
        }
    }

    /// The base level.
    pub fn current(&self) -> String {
        self.levels
            .lock()
            .map(|l| l.base.clone())
            .unwrap_or_default()
    }

    /// `active loggers:` as `/logging` prints it: the base level and each component.
    pub fn describe(&self) -> String {
        let Ok(l) = self.levels.lock() else {
            return String::new();
        };
        let mut out = format!("active loggers:\n  remora: {}\n", l.base);
        for (c, lvl) in &l.components {
            out.push_str(&format!("  {c}: {lvl}\n"));
        }
        out
    }

    /// Sets every component to `name` (an Envoy level name), as `/logging?level=` does.
    pub fn set(&self, name: &str) -> Result<(), String> {
        let lvl = level(name).ok_or_else(|| format!("unknown log level '{name}'"))?;
        self.update(|l| {
            l.base = lvl.to_string();
            l.components.clear();
        })
    }

    /// Sets one Envoy component's level (`/logging?upstream=debug`).
    pub fn set_component(&self, component: &str, name: &str) -> Result<(), String> {
        let lvl = level(name).ok_or_else(|| format!("unknown log level '{name}'"))?;
        if modules(component).is_none() {
            return Err(format!("unknown logger '{component}'"));
        }
        self.update(|l| {
            l.components.insert(component.to_string(), lvl);
        })
    }

    /// Applies `--component-log-level` (`comp:level,comp:level`). Components Remora has no
    /// counterpart for are skipped and returned.
    pub fn set_components(&self, spec: &str) -> Result<Vec<String>, String> {
        let mut skipped = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (c, lvl) = item
                .split_once(':')
                .ok_or_else(|| format!("--component-log-level: '{item}' is not component:level"))?;
            match self.set_component(c, lvl) {
                Err(e) if e.starts_with("unknown logger") => skipped.push(c.to_string()),
                other => other?,
            }
        }
        Ok(skipped)
    }

    fn update(&self, f: impl FnOnce(&mut Levels)) -> Result<(), String> {
        let mut l = self.levels.lock().map_err(|e| e.to_string())?;
        f(&mut l);
        if let Some(h) = &self.handle {
            let filter = EnvFilter::try_new(l.directives()).map_err(|e| e.to_string())?;
            h.reload(filter).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Installs the global subscriber.
pub fn init(
    level_name: &str,
    components: Option<&str>,
    log_path: Option<&std::path::Path>,
) -> Result<LogControl, String> {
    let lvl = level(level_name).ok_or_else(|| format!("unknown log level '{level_name}'"))?;
    let (filter, handle) = reload::Layer::new(EnvFilter::new(lvl));
    // `--log-path`: append to that file instead of stderr.
    let file = match log_path {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("--log-path {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = match file {
        Some(f) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(Arc::new(f)),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_target(false)
                .with_ansi(ansi),
        )
        .try_init()
        .map_err(|e| e.to_string())?;
    let control = LogControl {
        handle: Some(handle),
        levels: Arc::new(Mutex::new(Levels {
            base: lvl.to_string(),
            ..Default::default()
        })),
    };
    if let Some(spec) = components {
        for c in control.set_components(spec)? {
            tracing::debug!(component = %c, "--component-log-level: no Remora counterpart; ignored");
        }
    }
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_become_module_directives() {
        let c = LogControl::detached("warn");
        let skipped = c
            .set_components("upstream:debug, main:error, misc:error, lua:trace")
            .unwrap();
        assert_eq!(skipped, vec!["misc", "lua"]);
        let d = c.levels.lock().unwrap().directives();
        assert_eq!(
            d,
            "warn,remora::server=error,remora::runtime=error,remora::upstream=debug"
        );
        assert!(EnvFilter::try_new(&d).is_ok());
        assert!(c.describe().contains("  upstream: debug"));
        assert!(c.set_component("nope", "debug").is_err());
        assert!(c.set_components("upstream").is_err());
        c.set("info").unwrap();
        assert_eq!(c.levels.lock().unwrap().directives(), "info");
    }
}
