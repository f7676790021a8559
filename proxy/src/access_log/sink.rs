//! Where access-log lines go: files (including `/dev/stdout` and `/dev/stderr`), one
//! buffered writer per path shared by every logger and worker that names it. Workers only
//! append to memory; a background thread flushes every `--file-flush-interval-msec` (as
//! Envoy's access-log manager does), and a full buffer is written out at once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Envoy's default flush interval (`--file-flush-interval-msec`).
const DEFAULT_FLUSH_MS: u64 = 10_000;

static FLUSH_MS: AtomicU64 = AtomicU64::new(DEFAULT_FLUSH_MS);

/// The open sinks by path, so loggers that name the same file share its writer.
static SINKS: OnceLock<Mutex<HashMap<PathBuf, Weak<Sink>>>> = OnceLock::new();

/// Sets the flush interval (from the command line, before any sink opens).
pub fn set_flush_interval(ms: u64) {
    FLUSH_MS.store(ms.max(1), Ordering::Relaxed);
}

#[derive(Debug)]
pub struct Sink {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl Sink {
    /// The sink for `path`, opened (for appending) if no logger has it open yet.
    pub fn open(path: &Path) -> std::io::Result<Arc<Sink>> {
        let registry = SINKS.get_or_init(|| {
            std::thread::Builder::new()
                .name("access-log-flush".into())
                .spawn(flush_loop)
                .ok();
            Mutex::new(HashMap::new())
        });
        let mut map = registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(path).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let sink = Arc::new(Sink {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::with_capacity(64 * 1024, file)),
        });
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(path.to_path_buf(), Arc::downgrade(&sink));
        Ok(sink)
    }

    pub fn write(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), "access log write failed: {e}");
        }
    }

    pub fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.flush() {
            tracing::warn!(path = %self.path.display(), "access log flush failed: {e}");
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Flushes every open sink; the process's exit paths call it too.
pub fn flush_all() {
    let Some(registry) = SINKS.get() else { return };
    let sinks: Vec<Arc<Sink>> = registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for s in sinks {
        s.flush();
    }
}

fn flush_loop() {
    loop {
        std::thread::sleep(Duration::from_millis(FLUSH_MS.load(Ordering::Relaxed)));
        flush_all();
    }
}
