//! Remora started in-process on a config string, on ephemeral ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use remora::cli::Options;
use remora::config::bootstrap::{self, Source};
use remora::logging::LogControl;
use remora::runtime::{self, Running};
use remora::server::{Server, ServerState};

pub struct Proxy {
    running: Option<Running>,
    pub server: Arc<Server>,
}

impl Proxy {
    /// Starts Remora on `yaml` with one worker and waits until it is LIVE.
    pub fn start(yaml: &str) -> Proxy {
        Self::start_with(yaml, &["--concurrency", "1", "--drain-time-s", "2"])
    }

    pub fn start_with(yaml: &str, args: &[&str]) -> Proxy {
        let p = Self::launch(yaml, args);
        p.wait_live(Duration::from_secs(10));
        p
    }

    /// Starts Remora without waiting for it to become LIVE (for tests of start-up).
    pub fn launch(yaml: &str, args: &[&str]) -> Proxy {
        let mut argv = vec!["remora"];
        argv.extend_from_slice(args);
        let options = Options::try_parse_from(argv).expect("valid test options");
        let loaded = bootstrap::load(&Source {
            path: None,
            yaml: Some(yaml),
            unknown_fields: None,
        })
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"));
        let server = Server::new(options, loaded, LogControl::detached("info"));
        let running = runtime::start(server.clone()).expect("proxy starts");
        Proxy {
            running: Some(running),
            server,
        }
    }

    /// Waits until the proxy is LIVE; panics after `limit`.
    pub fn wait_live(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.server.state() != ServerState::Live {
            assert!(
                Instant::now() < deadline,
                "proxy did not become LIVE (state {})",
                self.server.state().name()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The bound address of a listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.server
            .listener_address(listener)
            .unwrap_or_else(|| panic!("no listener named {listener}"))
    }

    pub fn admin(&self) -> SocketAddr {
        self.server
            .admin_address()
            .expect("config has an admin address")
    }

    /// The value of a stat (0 if it does not exist).
    pub fn stat(&self, name: &str) -> u64 {
        self.server
            .stats
            .snapshot()
            .into_iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.value)
    }

    /// Shuts down and waits for the drain.
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().expect("clean shutdown");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
}
