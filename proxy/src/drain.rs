//! Drain signals: accept loops stop accepting and connections finish their in-flight
//! streams when one fires.
//!
//! Two strengths. [`Drain::start`] (shutdown, `/drain_listeners`) asks connections to
//! close now, after their in-flight streams. [`Drain::start_gentle`] (a listener replaced
//! or removed by LDS) lets connections keep serving for the connection manager's
//! `drain_timeout`: HTTP/1.1 responses carry `connection: close` so clients move to the
//! new listener one response at a time, and only then are idle connections closed. A
//! client never finds a keep-alive connection closed under a request it just sent.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

const RUNNING: u8 = 0;
const GENTLE: u8 = 1;
const NOW: u8 = 2;

/// The channel wakes waiters; the atomic answers "draining?" on the request path with
/// one relaxed load of memory nobody writes until the drain starts.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<u8>,
    state: Arc<AtomicU8>,
}

#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<u8>,
    state: Arc<AtomicU8>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(RUNNING).0,
            state: Arc::new(AtomicU8::new(RUNNING)),
        }
    }
}

impl Drain {
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
            state: self.state.clone(),
        }
    }

    /// Connections close as soon as their in-flight streams end.
    pub fn start(&self) {
        self.state.store(NOW, Ordering::Relaxed);
        self.tx.send_replace(NOW);
    }

    /// Connections wind down over the connection manager's `drain_timeout` (a no-op if
    /// a stronger drain already started).
    pub fn start_gentle(&self) {
        if self
            .state
            .compare_exchange(RUNNING, GENTLE, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.tx.send_replace(GENTLE);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Ordering::Relaxed) != RUNNING
    }
}

impl DrainWatch {
    /// Resolves once draining has started, gently or not (immediately if it has). A
    /// `Drain` dropped without starting never signals: its state is final.
    pub async fn signaled(&mut self) {
        if self.rx.wait_for(|d| *d != RUNNING).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once connections must close now (never, if the `Drain` is dropped
    /// before that).
    pub async fn closing(&mut self) {
        if self.rx.wait_for(|d| *d == NOW).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Ordering::Relaxed) != RUNNING
    }

    /// Whether connections must close now (not gently).
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Relaxed) == NOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_the_signal_even_if_late() {
        let d = Drain::default();
        let mut w = d.watch();
        assert!(!w.is_draining());
        d.start();
        w.signaled().await;
        let mut late = d.watch();
        late.signaled().await;
        assert!(d.is_draining());
    }

    #[tokio::test]
    async fn a_gentle_drain_can_harden_but_not_soften() {
        let d = Drain::default();
        let mut w = d.watch();
        d.start_gentle();
        w.signaled().await;
        assert!(w.is_draining() && !w.is_closing());
        d.start();
        w.closing().await;
        d.start_gentle();
        assert!(w.is_closing());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_drain_keeps_its_last_state() {
        let d = Drain::default();
        let mut w = d.watch();
        d.start_gentle();
        drop(d);
        w.signaled().await;
        let closing = tokio::time::timeout(std::time::Duration::from_secs(60), w.closing());
        assert!(
            closing.await.is_err(),
            "a gentle drain never turns into closing"
        );
    }
}
