//! I/O helpers shared by the HTTP and TCP paths.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts a stream's reads and writes, for idle timeouts, and the bytes it received and
/// sent (for the access log and byte stats, whichever way the stream ends). Cheaper than
/// reading the clock on every I/O: an idle checker that sees the count unchanged over a
/// whole period knows the stream was idle for at least that period (so a timeout fires
/// between one and two periods after the last byte).
#[derive(Debug, Clone, Default)]
pub struct ActivityClock {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    ops: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
}

/// One writer (the stream's task): a relaxed load and store is enough.
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl ActivityClock {
    pub fn touch(&self) {
        bump(&self.counts.ops, 1);
    }

    /// `n` bytes came from the peer.
    pub fn received(&self, n: u64) {
        bump(&self.counts.received, n);
        self.touch();
    }

    /// `n` bytes went to the peer.
    pub fn sent(&self, n: u64) {
        bump(&self.counts.sent, n);
        self.touch();
    }

    /// (received, sent) so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counts.received.load(Ordering::Relaxed),
            self.counts.sent.load(Ordering::Relaxed),
        )
    }

    pub fn ops(&self) -> u64 {
        self.counts.ops.load(Ordering::Relaxed)
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

    fn wrote(&self, r: &Poll<std::io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) => self.clock.sent(*n as u64),
            Poll::Ready(Err(_)) => self.clock.touch(),
            Poll::Pending => {}
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Activity<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.clock
                .received(buf.filled().len().saturating_sub(before) as u64);
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
        self.wrote(&r);
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
        self.wrote(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream whose first bytes were already read (to sniff its protocol): they are read
/// again first, then the stream's own.
#[derive(Debug)]
pub struct Prefixed<I> {
    prefix: bytes::BytesMut,
    io: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: bytes::BytesMut, io: I) -> Self {
        Prefixed { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
