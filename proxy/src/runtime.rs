//! Starting and stopping: worker threads, the main (control) runtime, signals and drain.
//!
//! Threads: `main` runs the admin API, DNS refresh and signal handling on a
//! single-threaded runtime; `worker-N` threads each run a single-threaded runtime with
//! their own listening sockets (`SO_REUSEPORT`) and upstream pools, so the data path
//! shares no locks across threads.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::drain::Drain;
use crate::listener::{self, manager::WorkerCommand};
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
    let admin = crate::admin::bind(&server)?;
    for l in server.take_static_listeners() {
        let (name, address) = (l.config.name.clone(), l.config.address.to_string());
        let active = server
            .listeners
            .add(l)
            .map_err(|source| ServerError::Bind {
                name: name.clone(),
                address,
                source,
            })?;
        if let Some(addr) = active.addr {
            tracing::info!(listener = %name, address = %addr, "listening");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let s = server.clone();
    let main = std::thread::Builder::new()
        .name("main".into())
        .spawn(move || rt.block_on(main_loop(s, admin)))
        .map_err(ServerError::Runtime)?;
    Ok(Running { server, main })
}

async fn main_loop(
    server: Arc<Server>,
    admin: Option<crate::admin::AdminSocket>,
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
    // Dynamic config: the first CDS and LDS rounds (with their warming) complete before
    // the workers start, as Envoy's init manager does; until then `/ready` says
    // INITIALIZING.
    if let Some(initialized) = crate::xds::start(&server) {
        let mut quit = server.shutdown.watch();
        tokio::select! {
            _ = initialized => {}
            _ = quit.signaled() => {}
        }
    }

    let hard_stop = Arc::new(Drain::default());
    let mut threads = Vec::new();
    for w in 0..server.listeners.workers() {
        let server = server.clone();
        let hard_stop = hard_stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{w}"))
            .spawn(move || worker(w, server, hard_stop))
            .map_err(ServerError::Runtime)?;
        threads.push(handle);
    }
    server
        .stats
        .gauge("listener_manager.workers_started")
        .set(1);
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
    server.listeners.close_all();
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
/// keeps them refreshed on this (main) runtime, where outlier detection sweeps and
/// health checks run too; waits for the first round of health checks.
async fn init_clusters(server: &Arc<Server>) {
    let dns_clusters: Vec<_> = server
        .clusters
        .snapshot()
        .values()
        .filter(|c| c.config.discovery.is_dns())
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
    let clusters = server.clusters.snapshot();
    for c in clusters.values() {
        crate::upstream::cluster::spawn_tasks(c, &server.shutdown);
    }
    // As Envoy, go live once every host has had its first health check.
    futures_util::future::join_all(clusters.values().filter_map(|c| {
        let h = c.health.as_ref()?;
        Some(async move {
            if !h.initialized(h.first_round_limit()).await {
                tracing::warn!(cluster = %c.name, "initial health checks did not finish");
            }
        })
    }))
    .await;
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

fn worker(id: usize, server: Arc<Server>, hard_stop: Arc<Drain>) {
    let Some(mut commands) = server.listeners.take_commands(id) else {
        return;
    };
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
        let mut loops = tokio::task::JoinSet::new();
        let mut stopped = server.listeners.stopped.watch();
        loop {
            let command = tokio::select! {
                c = commands.recv() => c,
                _ = stopped.signaled() => None,
            };
            match command {
                Some(WorkerCommand::Serve { slot, socket }) => {
                    loops.spawn(listener::accept_loop(
                        slot,
                        socket,
                        pools.clone(),
                        tracker.clone(),
                        server.listeners.index.clone(),
                    ));
                }
                Some(WorkerCommand::PruneIdle(clusters)) => pools.prune(&clusters),
                None => break,
            }
        }
        while let Some(done) = loops.join_next().await {
            if let Ok(Err(e)) = done {
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
