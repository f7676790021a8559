//! I/O helpers shared by the HTTP and TCP paths.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts a stream's reads and writes, for idle timeouts. Cheaper than reading the clock
/// on every I/O: an idle checker that sees the count unchanged over a whole period knows
/// the stream was idle for at least that period (so a timeout fires between one and two
/// periods after the last byte).
#[derive(Debug, Clone, Default)]
pub struct ActivityClock {
    ops: Arc<AtomicU64>,
}

impl ActivityClock {
    pub fn touch(&self) {
        // One writer (the stream's task): a relaxed load and store is enough.
        self.ops.store(
            self.ops.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Resolves once a full `period` passes with no I/O (never when `period` is `None`).
    pub async fn idle(&self, period: Option<Duration>) {
        let Some(period) = period else {
            return std::future::pending().await;
        };
        let mut seen = self.ops();
        loop {
            tokio::time::sleep(period).await;
            let now = self.ops();
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

/// A stream wrapper that counts reads and writes.
#[derive(Debug)]
pub struct Activity<I> {
    inner: I,
    clock: ActivityClock,
}

impl<I> Activity<I> {
    pub fn new(inner: I) -> Self {
        Activity {
            inner,
            clock: ActivityClock::default(),
        }
    }

    pub fn clock(&self) -> ActivityClock {
        self.clock.clone()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Activity<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.clock.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Activity<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.clock.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.clock.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
