//! Starting and stopping: worker threads, the main (control) runtime, signals and drain.
//!
//! Threads: `main` runs the admin API, DNS refresh and signal handling on a
//! single-threaded runtime; `worker-N` threads each run a single-threaded runtime with
//! their own listening sockets (`SO_REUSEPORT`) and upstream pools, so the data path
//! shares no locks across threads.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::config::cluster::Discovery;
use crate::drain::Drain;
use crate::listener::{self, BoundSocket};
use crate::server::{Server, ServerError, ServerState};
use crate::upstream::dns;
use crate::upstream::pool::Pools;

/// A started server: its threads run until shutdown.
#[derive(Debug)]
pub struct Running {
    pub server: Arc<Server>,
    main: std::thread::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Waits for shutdown and the drain to complete.
    pub fn wait(self) -> Result<(), ServerError> {
        self.main.join().unwrap_or(Err(ServerError::Panicked))
    }

    /// Asks for shutdown (as `/quitquitquit` does) and waits for it.
    pub fn shutdown(self) -> Result<(), ServerError> {
        self.server.shutdown.start();
        self.wait()
    }
}

/// Runs until shutdown; returns after the drain completes.
pub fn run(server: Arc<Server>) -> Result<(), ServerError> {
    start(server)?.wait()
}

/// Binds the admin and listener sockets (so bind errors are returned here), then starts
/// the main thread and the workers.
pub fn start(server: Arc<Server>) -> Result<Running, ServerError> {
    let workers = server.options.workers();
    let admin = crate::admin::bind(&server)?;
    let mut sockets: Vec<Vec<BoundSocket>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for (i, l) in server.listeners.iter().enumerate() {
        if !l.config.bind_to_port {
            continue;
        }
        let per_worker =
            listener::bind(&l.config, workers).map_err(|source| ServerError::Bind {
                name: l.config.name.clone(),
                address: l.config.address.to_string(),
                source,
            })?;
        if let Some(addr) = per_worker.first().and_then(BoundSocket::local_addr) {
            tracing::info!(listener = %l.config.name, address = %addr, "listening");
            bound.push((i, addr));
        }
        for (w, s) in per_worker.into_iter().enumerate() {
            sockets[w].push(s);
        }
    }
    {
        let mut addrs = server
            .listener_addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (i, a) in bound {
            addrs[i] = Some(a);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let s = server.clone();
    let main = std::thread::Builder::new()
        .name("main".into())
        .spawn(move || rt.block_on(main_loop(s, admin, sockets)))
        .map_err(ServerError::Runtime)?;
    Ok(Running { server, main })
}

async fn main_loop(
    server: Arc<Server>,
    admin: Option<crate::admin::AdminSocket>,
    sockets: Vec<Vec<BoundSocket>>,
) -> Result<(), ServerError> {
    let admin = match admin {
        Some(sock) => Some(tokio::spawn(crate::admin::serve(
            sock.into_tokio().map_err(ServerError::Runtime)?,
            server.clone(),
        ))),
        None => None,
    };
    server.set_state(ServerState::Initializing);
    init_clusters(&server).await;

    let hard_stop = Arc::new(Drain::default());
    let mut threads = Vec::new();
    for (w, socks) in sockets.into_iter().enumerate() {
        let server = server.clone();
        let hard_stop = hard_stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{w}"))
            .spawn(move || worker(w, server, socks, hard_stop))
            .map_err(ServerError::Runtime)?;
        threads.push(handle);
    }
    server
        .stats
        .gauge("listener_manager.workers_started")
        .set(1);
    server
        .stats
        .gauge("listener_manager.total_listeners_active")
        .set(server.listeners.len() as i64);
    server
        .stats
        .gauge("server.concurrency")
        .set(threads.len() as i64);
    server.refresh_gauges();
    server.set_state(ServerState::Live);
    tracing::info!(workers = threads.len(), "remora is live");

    wait_for_shutdown(&server).await;
    tracing::info!(drain_time_s = server.options.drain_time_s, "draining");
    server.set_state(ServerState::Draining);
    for l in &server.listeners {
        l.drain.start();
        l.close.start();
    }
    let deadline = Duration::from_secs(server.options.drain_time_s);
    let all_done = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    tokio::pin!(all_done);
    tokio::select! {
        _ = &mut all_done => {}
        _ = tokio::time::sleep(deadline) => {
            tracing::info!("drain time over; closing remaining connections");
            hard_stop.start();
            let _ = all_done.await;
        }
    }
    if let Some(a) = admin {
        a.abort();
    }
    Ok(())
}

/// Resolves DNS clusters before going live (each bounded by its connect timeout), then
/// keeps them refreshed on this (main) runtime.
async fn init_clusters(server: &Arc<Server>) {
    let dns_clusters: Vec<_> = server
        .clusters
        .snapshot()
        .values()
        .filter(|c| c.config.discovery != Discovery::Static)
        .cloned()
        .collect();
    futures_util::future::join_all(dns_clusters.iter().map(|c| async move {
        if tokio::time::timeout(c.config.connect_timeout, dns::update(c))
            .await
            .is_err()
        {
            tracing::warn!(cluster = %c.name, "initial DNS resolution timed out");
        }
    }))
    .await;
    for c in dns_clusters {
        tokio::spawn(dns::refresh_loop(c, server.shutdown.watch()));
    }
}

async fn wait_for_shutdown(server: &Arc<Server>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut quit = server.shutdown.watch();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        quit.signaled().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = quit.signaled() => tracing::info!("shutdown requested"),
    }
}

fn worker(id: usize, server: Arc<Server>, sockets: Vec<BoundSocket>, hard_stop: Arc<Drain>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot start worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        let pools = Arc::new(Pools::default());
        let tracker = TaskTracker::new();
        let mut loops = Vec::new();
        let bound = server.listeners.iter().filter(|l| l.config.bind_to_port);
        for (l, sock) in bound.zip(sockets) {
            loops.push(tokio::spawn(listener::accept_loop(
                l.clone(),
                sock,
                pools.clone(),
                tracker.clone(),
            )));
        }
        for h in loops {
            if let Ok(Err(e)) = h.await {
                tracing::error!(worker = id, error = %e, "accept loop failed");
            }
        }
        tracker.close();
        let mut stop = hard_stop.watch();
        tokio::select! {
            _ = tracker.wait() => {}
            _ = stop.signaled() => {}
        }
    });
}
