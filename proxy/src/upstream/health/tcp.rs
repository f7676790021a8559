//! TCP health checks: connect (and with nothing to receive, that is the check), send the
//! payload, then read until every expected block has arrived in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::probe::{payload_matches, Check, Failure, Target};
use crate::config::health_check::TcpCheck;
use crate::upstream::connect::{self, Stream};

#[derive(Debug)]
pub struct TcpProbe {
    check: Arc<TcpCheck>,
    target: Target,
    reuse: bool,
    conn: Option<Stream>,
    /// What the kept connection has received and not yet matched.
    received: Vec<u8>,
}

impl TcpProbe {
    pub fn new(check: Arc<TcpCheck>, target: Target, reuse: bool) -> Self {
        TcpProbe {
            check,
            target,
            reuse,
            conn: None,
            received: Vec::new(),
        }
    }

    pub fn close(&mut self) {
        self.conn = None;
        self.received.clear();
    }

    pub async fn check(&mut self) -> Check {
        if self.conn.is_none() {
            match connect::connect_stream(
                &self.target.addr,
                self.target.connect_timeout,
                self.target.bind,
            )
            .await
            {
                Ok(s) => self.conn = Some(s),
                Err(_) => return Check::Failed(Failure::Network),
            }
            if self.check.receive.is_empty() {
                // Connecting is the check; the connection is not kept.
                self.close();
                return Check::Healthy;
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Check::Failed(Failure::Network);
        };
        if !self.check.send.is_empty() && conn.write_all(&self.check.send).await.is_err() {
            self.close();
            return Check::Failed(Failure::Network);
        }
        loop {
            if let Some(c) = self.read_some().await {
                return c;
            }
        }
    }

    /// Reads once from the kept connection: a result when the expected blocks are all
    /// in or the connection closed, `None` when more is needed.
    async fn read_some(&mut self) -> Option<Check> {
        let Some(conn) = self.conn.as_mut() else {
            return Some(Check::Failed(Failure::Network));
        };
        let mut buf = [0u8; 4096];
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.close();
                Some(Check::Failed(Failure::Network))
            }
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                if !payload_matches(&self.check.receive, &self.received) {
                    return None;
                }
                self.received.clear();
                if !self.reuse {
                    self.close();
                }
                Some(Check::Healthy)
            }
        }
    }

    /// Waits for the next check, watching a kept connection: its closing is a failure,
    /// and data completing a match is a success (as in Envoy).
    pub async fn idle(&mut self, wait: Duration) -> Option<Check> {
        let deadline = tokio::time::Instant::now() + wait;
        if self.conn.is_none() {
            tokio::time::sleep_until(deadline).await;
            return None;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                r = self.read_some() => if let Some(c) = r { return Some(c) },
            }
        }
    }
}
