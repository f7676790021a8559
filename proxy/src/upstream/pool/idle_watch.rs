//! Idle HTTP/1.1 connections watched for a close by the upstream, as Envoy notices one at
//! once: a task per worker is woken when anything arrives on any of the worker's idle
//! connections, and drops those that closed (or sent bytes no request asked for), so
//! they leave `upstream_cx_active` and free their circuit-breaker slot.
//!
//! The watcher's waker is registered on a connection when it goes idle (a readiness
//! check, no system call); a request that takes the connection registers its own when
//! it reads, so a busy connection never wakes the watcher.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use super::{Idle, Pools};

/// The watcher's waker, once its task runs.
#[derive(Default)]
pub(super) struct Watcher {
    waker: Mutex<Option<Waker>>,
    started: AtomicBool,
}

impl Pools {
    /// Whether `idle` is still open; if so, the watcher hears of anything arriving on it.
    /// Starts the watcher with the first idle connection.
    pub(super) fn watch_idle(self: &Arc<Self>, idle: &mut Idle) -> bool {
        let waker = self.watcher.waker.lock().unwrap_or_else(|p| p.into_inner());
        match waker.as_ref() {
            Some(w) => idle.conn.conn.watch(&mut Context::from_waker(w)),
            None => {
                drop(waker);
                self.start_watcher();
                // Its first sweep registers it on this connection too.
                idle.conn.conn.idle_open()
            }
        }
    }

    fn start_watcher(self: &Arc<Self>) {
        if self.watcher.started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(IdleWatch {
                    pools: Arc::downgrade(self),
                });
            }
            Err(_) => self.watcher.started.store(false, Ordering::Release),
        }
    }

    /// Drops the idle connections on which something arrived; registers `cx` on the
    /// others.
    fn sweep(&self, cx: &mut Context<'_>) {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        for host in map.values_mut() {
            host.sweep(cx);
        }
    }
}

/// The watcher task: sweeps whenever woken, until the pools are gone.
struct IdleWatch {
    pools: Weak<Pools>,
}

impl Future for IdleWatch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(pools) = self.pools.upgrade() else {
            return Poll::Ready(());
        };
        {
            let mut w = pools
                .watcher
                .waker
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        pools.sweep(cx);
        Poll::Pending
    }
}
