//! Precise waits for the open-loop schedule. Tokio's timer wheel has a one-millisecond
//! tick, far coarser than the gaps between requests at tens of thousands per second; a
//! `timerfd` (a kernel hrtimer) registered with tokio's reactor wakes within microseconds.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Waits shorter than this are not worth a timer: the request goes out at once.
const MIN_WAIT: Duration = Duration::from_micros(20);

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One worker's timer.
pub struct Pacer {
    fd: AsyncFd<Fd>,
}

impl Pacer {
    pub fn new() -> io::Result<Pacer> {
        let t = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: `Fd` owns the timerfd, so the descriptor stays open and the same for as
        // long as the `AsyncFd` holds it.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(t), Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Pacer { fd })
    }

    /// Returns at `at` (or at once if it has passed).
    pub async fn until(&self, at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if at <= now + MIN_WAIT {
            return Ok(());
        }
        let wait = TimeSpec::from_duration(at - now);
        self.fd
            .get_ref()
            .0
            .set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())?;
        loop {
            let mut guard = self.fd.readable().await?;
            // `wait` reads the expiration count; on a non-blocking timerfd that has not
            // fired yet it reports EAGAIN, which `try_io` turns into "not ready".
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_the_deadline_and_not_much_longer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let p = Pacer::new().expect("timerfd");
            for _ in 0..5 {
                let at = Instant::now() + Duration::from_micros(300);
                p.until(at).await.expect("wait");
                let now = Instant::now();
                assert!(now >= at, "woke early");
                // Generous bound: a loaded CI machine may be slow to schedule us.
                assert!(
                    now - at < Duration::from_millis(50),
                    "woke {:?} late",
                    now - at
                );
            }
            // A deadline in the past returns at once.
            p.until(Instant::now() - Duration::from_millis(1))
                .await
                .expect("past");
        });
    }
}
