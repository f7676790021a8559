//! Logging with Envoy's level names, changeable at run time through `/logging`.

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

/// Handle for changing the level later.
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    current: std::sync::Arc<std::sync::Mutex<String>>,
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
            current: std::sync::Arc::new(std::sync::Mutex::new(level.to_string())),
        }
    }

    pub fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Sets every component to `name` (an Envoy level name).
    pub fn set(&self, name: &str) -> Result<(), String> {
        let lvl = level(name).ok_or_else(|| format!("unknown log level '{name}'"))?;
        if let Some(h) = &self.handle {
            h.reload(EnvFilter::new(lvl)).map_err(|e| e.to_string())?;
        }
        if let Ok(mut c) = self.current.lock() {
            *c = lvl.to_string();
        }
        Ok(())
    }
}

/// Installs the global subscriber. `--component-log-level` entries are accepted; Envoy's
/// component names do not map onto Remora's modules, so they are reported at debug level.
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
        Some(f) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Arc::new(f)),
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
    if let Some(c) = components {
        tracing::debug!(
            components = c,
            "--component-log-level accepted; Remora logs by module, not by Envoy component"
        );
    }
    Ok(LogControl {
        handle: Some(handle),
        current: std::sync::Arc::new(std::sync::Mutex::new(lvl.to_string())),
    })
}
