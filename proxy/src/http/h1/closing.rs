//! When a connection waiting for its next request head must close: a listener drain
//! (at once when it closes connections now; after `drain_timeout` when it drains
//! gently), the idle timeout, or the grace period of a connection accepted during a
//! drain. One timer serves all three, so an idle connection's task holds one.

use std::time::Duration;

use tokio::time::Instant;

use crate::drain::DrainWatch;
use crate::io::ActivityClock;

/// Why the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Drained (or a late connection's grace ran out).
    Drain,
    /// No reads or writes for a whole idle period.
    Idle,
}

/// The timing a connection waits for its next head under.
pub struct Timing {
    /// The idle timeout (`None`: none).
    pub idle: Option<Duration>,
    /// How long a gently drained connection may wait for one more request.
    pub drain_timeout: Duration,
    /// A connection accepted during a drain: how long it waits for its one request (it
    /// does not watch the drain, which has begun).
    pub grace: Option<Duration>,
}

/// Resolves when the connection must close. Polled only while the connection waits for
/// a head; time spent on a request counts as activity, so an idle check that lands
/// during one finds the clock moved.
pub async fn closing(mut drain: DrainWatch, clock: ActivityClock, t: Timing) -> Closing {
    let start = Instant::now();
    // The drain or grace deadline, and the next idle check.
    let mut end = t.grace.map(|g| start + g);
    let mut check = t.idle.map(|p| start + p);
    let mut seen = clock.ops();
    let mut watching = t.grace.is_none();
    let timer = tokio::time::sleep_until(start);
    tokio::pin!(timer);
    loop {
        let next = end.into_iter().chain(check).min();
        if let Some(at) = next {
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
        }
        tokio::select! {
            biased;
            _ = drain.signaled(), if watching => {
                if drain.is_closing() {
                    return Closing::Drain;
                }
                // Gently: one more request may come, answered with `connection: close`
                // (the handler sees the drain).
                watching = false;
                end = Some(Instant::now() + t.drain_timeout);
            }
            _ = timer.as_mut(), if next.is_some() => {
                let now = Instant::now();
                if end.is_some_and(|e| now >= e) {
                    return Closing::Drain;
                }
                let ops = clock.ops();
                if ops == seen {
                    return Closing::Idle;
                }
                seen = ops;
                check = t.idle.map(|p| now + p);
            }
            else => return std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Drain;

    fn timing(idle: Option<u64>, grace: Option<u64>) -> Timing {
        Timing {
            idle: idle.map(Duration::from_secs),
            drain_timeout: Duration::from_secs(5),
            grace: grace.map(Duration::from_secs),
        }
    }

    /// How long after the start `closing` resolves, and why.
    async fn when(drain: DrainWatch, clock: ActivityClock, t: Timing) -> (Duration, Closing) {
        let start = Instant::now();
        let why = closing(drain, clock, t).await;
        (start.elapsed(), why)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_a_quiet_period_activity_puts_it_off() {
        let drain = Drain::default();
        let clock = ActivityClock::default();
        assert_eq!(
            when(drain.watch(), clock.clone(), timing(Some(10), None)).await,
            (Duration::from_secs(10), Closing::Idle)
        );
        // Activity in the first period: the second check finds the clock moved, the
        // third finds it still.
        let touch = clock.clone();
        let busy = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            touch.touch();
        });
        assert_eq!(
            when(drain.watch(), clock, timing(Some(10), None)).await,
            (Duration::from_secs(20), Closing::Idle)
        );
        busy.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn gentle_drain_waits_drain_timeout_then_closes() {
        let drain = Drain::default();
        let watch = drain.watch();
        let waiting = tokio::spawn(when(watch, ActivityClock::default(), timing(None, None)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        drain.start_gentle();
        let (after, why) = waiting.await.unwrap();
        assert_eq!((after, why), (Duration::from_secs(7), Closing::Drain));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_drain_ends_it_at_once() {
        let drain = Drain::default();
        let waiting = tokio::spawn(when(
            drain.watch(),
            ActivityClock::default(),
            timing(Some(60), None),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        drain.start();
        assert_eq!(
            waiting.await.unwrap(),
            (Duration::from_secs(2), Closing::Drain)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_connection_closes_after_its_grace_and_ignores_the_drain() {
        let drain = Drain::default();
        drain.start_gentle();
        assert_eq!(
            when(
                drain.watch(),
                ActivityClock::default(),
                timing(Some(60), Some(1))
            )
            .await,
            (Duration::from_secs(1), Closing::Drain)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_timeouts_or_drain_it_never_resolves() {
        let drain = Drain::default();
        let waiting = closing(drain.watch(), ActivityClock::default(), timing(None, None));
        let r = tokio::time::timeout(Duration::from_secs(3600), waiting).await;
        assert!(r.is_err());
    }
}
