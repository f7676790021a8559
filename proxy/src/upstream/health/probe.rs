//! One check of one host, and what it found. A [`Probe`] keeps its connection between
//! checks when `reuse_connection` is on.

use std::sync::Arc;
use std::time::Duration;

use super::http::{GrpcProbe, HttpProbe};
use super::tcp::TcpProbe;
use super::HealthStats;
use crate::config::cluster::UpstreamBind;
use crate::config::health_check::{Checker, HealthCheck};
use crate::upstream::cluster::ClusterState;
use crate::upstream::host::{HostAddr, HostEntry};

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Healthy,
    /// Healthy, but the host says it is degraded (`x-envoy-degraded`).
    Degraded,
    Failed(Failure),
}

impl Check {
    pub fn is_success(self) -> bool {
        !matches!(self, Check::Failed(_))
    }
}

/// How a check failed (Envoy's failure types): the host answered wrongly (`Active`,
/// unhealthy at once), answered with a retriable status, or could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Active,
    Retriable,
    Network,
    Timeout,
}

/// Where checks connect to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: HostAddr,
    pub bind: Option<UpstreamBind>,
    /// Bounds the connect (the whole check is bounded by the check's timeout as well).
    pub connect_timeout: Duration,
}

impl Target {
    /// The host's address with the endpoint's health-check port, else the checker's
    /// `alt_port`, in place of its own.
    fn of(config: &HealthCheck, cluster: &ClusterState, host: &HostEntry) -> Self {
        let mut addr = host.addr.clone();
        if let HostAddr::Tcp(a) = &mut addr {
            if let Some(port) = host.check.port.or(config.alt_port) {
                a.set_port(port);
            }
        }
        Target {
            addr,
            bind: cluster.config.bind,
            connect_timeout: config.timeout,
        }
    }
}

/// A host's checker with its connection.
#[derive(Debug)]
pub enum Probe {
    Http(HttpProbe),
    Grpc(GrpcProbe),
    Tcp(TcpProbe),
}

impl Probe {
    pub fn new(
        config: &Arc<HealthCheck>,
        cluster: &ClusterState,
        host: &HostEntry,
        stats: &HealthStats,
    ) -> Self {
        let target = Target::of(config, cluster, host);
        // Envoy's host value: the checker's, else the endpoint's, else the cluster's name.
        let authority = |configured: &Option<String>| {
            configured
                .clone()
                .or_else(|| host.check.hostname.as_deref().map(str::to_owned))
                .unwrap_or_else(|| cluster.name.to_string())
        };
        match &config.checker {
            Checker::Http(c) => Probe::Http(HttpProbe::new(
                Arc::new(c.clone()),
                target,
                authority(&c.host),
                config.reuse_connection,
                stats.verify_cluster.clone(),
            )),
            Checker::Grpc(c) => Probe::Grpc(GrpcProbe::new(
                Arc::new(c.clone()),
                target,
                authority(&c.authority),
                config.reuse_connection,
            )),
            Checker::Tcp(c) => Probe::Tcp(TcpProbe::new(
                Arc::new(c.clone()),
                target,
                config.reuse_connection,
            )),
        }
    }

    /// Runs one check (the caller bounds it by the check's timeout).
    pub async fn check(&mut self) -> Check {
        match self {
            Probe::Http(p) => p.check().await,
            Probe::Grpc(p) => p.check().await,
            Probe::Tcp(p) => p.check().await,
        }
    }

    /// Drops the connection (after a timeout).
    pub fn close(&mut self) {
        match self {
            Probe::Http(p) => p.close(),
            Probe::Grpc(p) => p.close(),
            Probe::Tcp(p) => p.close(),
        }
    }

    /// Waits `wait` before the next check; returns early with a result when the kept
    /// connection shows one (a TCP check's connection closing counts as a failure).
    pub async fn idle(&mut self, wait: Duration) -> Option<Check> {
        match self {
            Probe::Tcp(p) => p.idle(wait).await,
            Probe::Http(_) | Probe::Grpc(_) => {
                tokio::time::sleep(wait).await;
                None
            }
        }
    }
}

/// Whether `data` holds every block of `blocks`, in order, not necessarily next to one
/// another (Envoy's payload matching).
pub fn payload_matches(blocks: &[Vec<u8>], data: &[u8]) -> bool {
    let mut rest = data;
    for block in blocks {
        if block.is_empty() {
            continue;
        }
        match rest
            .windows(block.len())
            .position(|w| w == block.as_slice())
        {
            Some(i) => rest = &rest[i + block.len()..],
            None => return false,
        }
    }
    true
}
