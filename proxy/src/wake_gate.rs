//! Polling a future only when it asked to be polled.
//!
//! A connection's task waits on its connection and, beside it, on futures that almost
//! never finish (the drain signal, the idle timer). `tokio::select!` polls every branch
//! each time the task wakes, which is twice per request; polling a watch receiver or a
//! timer that has not fired costs more than the rest of the wake-up. A [`WakeGate`] gives
//! such a future a waker of its own: the future is polled again only after that waker
//! fired (and on its first poll), and otherwise answers `Pending` at the cost of one
//! atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// One gated future's wake-up flag, kept for the life of the task that polls it.
pub struct WakeGate {
    shared: Arc<Shared>,
    /// A waker for `shared`, made once.
    waker: Waker,
}

struct Shared {
    woken: AtomicBool,
    parent: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.parent.wake();
    }
}

impl Default for WakeGate {
    fn default() -> Self {
        let shared = Arc::new(Shared {
            woken: AtomicBool::new(true),
            parent: AtomicWaker::new(),
        });
        let waker = Waker::from(shared.clone());
        WakeGate { shared, waker }
    }
}

impl WakeGate {
    /// The next poll goes through to the future: for a future that replaces the one the
    /// gate guarded, which must be polled once to register its own interest.
    pub fn open(&self) {
        self.shared.woken.store(true, Ordering::Relaxed);
    }

    /// `fut`, polled only when it asked to be.
    pub fn gate<F: Future>(&self, fut: F) -> Gated<'_, F> {
        Gated { gate: self, fut }
    }

    fn poll<F: Future>(&self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.shared.parent.register(cx.waker());
        if !self.shared.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        fut.poll(&mut Context::from_waker(&self.waker))
    }
}

pin_project_lite::pin_project! {
    /// A future behind a [`WakeGate`].
    pub struct Gated<'a, F> {
        gate: &'a WakeGate,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.gate.poll(this.fut, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// What a [`Probe`] shares with its test: its poll count, whether it is ready, and
    /// the waker it registered.
    #[derive(Default)]
    struct ProbeState {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: AtomicWaker,
    }

    impl ProbeState {
        fn polls(&self) -> usize {
            self.polls.load(Ordering::Relaxed)
        }
    }

    /// Counts its polls; ready once `ready` is set (and its waker was called).
    struct Probe<'a>(&'a ProbeState);

    impl Future for Probe<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let state = self.0;
            state.polls.fetch_add(1, Ordering::Relaxed);
            state.waker.register(cx.waker());
            if state.ready.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn polls_only_after_its_own_waker_fired() {
        let state = ProbeState::default();
        let gate = WakeGate::default();
        let mut fut = std::pin::pin!(gate.gate(Probe(&state)));
        let parent_woken = Arc::new(Flag::default());
        let parent = Waker::from(parent_woken.clone());
        let mut cx = Context::from_waker(&parent);
        // The first poll goes through; the next ones wait for the inner waker.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(state.polls(), 1);
        // The inner future's waker wakes the parent, and the next poll reaches it.
        state.ready.store(true, Ordering::Relaxed);
        state.waker.wake();
        assert!(parent_woken.0.load(Ordering::Relaxed));
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(state.polls(), 2);
    }

    #[test]
    fn open_lets_the_next_poll_through() {
        let state = ProbeState::default();
        let gate = WakeGate::default();
        let parent = Waker::from(Arc::new(Flag::default()));
        let mut cx = Context::from_waker(&parent);
        for round in 1..=2 {
            gate.open();
            let mut fut = std::pin::pin!(gate.gate(Probe(&state)));
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(state.polls(), round);
        }
    }

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}
