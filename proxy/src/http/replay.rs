//! A request body that can be sent again: the first attempt streams the downstream body
//! upstream while keeping a copy of every frame; a retry replays the copy. Copies stop
//! (and the body can no longer be replayed) past the buffer limit, as Envoy's
//! `per_request_buffer_limit_bytes` does for retries.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

use super::body::ProxyBody;
use crate::upstream::pool::BoxError;

/// What every attempt's body shares.
struct Shared {
    source: ProxyBody,
    /// Data frames read so far, in order (dropped on overflow).
    data: Vec<Bytes>,
    /// How many data frames have been read from the source.
    frames: usize,
    trailers: Option<HeaderMap>,
    len: usize,
    limit: usize,
    /// More than `limit` bytes arrived: the copy was dropped.
    overflowed: bool,
    /// The source has ended (cleanly).
    complete: bool,
}

/// The handle the router keeps between attempts.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    /// Wraps the downstream body, keeping at most `limit` bytes for replays.
    pub fn new(source: ProxyBody, limit: usize) -> Replay {
        let complete = source.is_end_stream();
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                source,
                data: Vec::new(),
                frames: 0,
                trailers: None,
                len: 0,
                limit,
                overflowed: false,
                complete,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the frames inconsistent (each
        // update is one push), so a poisoned lock is still usable.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A body for the next attempt: replays what was kept, then reads on.
    pub fn body(&self) -> ReplayBody {
        ReplayBody {
            replay: self.clone(),
            next: 0,
            trailers_sent: false,
        }
    }

    /// Whether another attempt can send the whole body: the downstream body has ended
    /// and nothing was dropped.
    pub fn can_replay(&self) -> bool {
        let s = self.lock();
        s.complete && !s.overflowed
    }
}

/// One attempt's request body.
pub struct ReplayBody {
    replay: Replay,
    /// Index of the next data frame to send (counting from the source's first).
    next: usize,
    trailers_sent: bool,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut s = this.replay.lock();
        if let Some(chunk) = s.data.get(this.next) {
            let chunk = chunk.clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.complete {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if this.next < s.frames {
            // Kept frames were dropped: only the attempt that read them can go on.
            return Poll::Ready(Some(Err("request body no longer available".into())));
        }
        let frame = match Pin::new(&mut s.source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                s.complete = true;
                this.trailers_sent = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                s.len += data.len();
                s.frames += 1;
                this.next = s.frames;
                if s.len > s.limit {
                    s.overflowed = true;
                    s.data = Vec::new();
                } else if !s.overflowed {
                    s.data.push(data.clone());
                }
                // A body with a known length can end without a final empty poll.
                if s.source.is_end_stream() {
                    s.complete = true;
                    this.trailers_sent = true;
                }
                Frame::data(data)
            }
            Err(frame) => match frame.into_trailers() {
                Ok(t) => {
                    s.trailers = Some(t.clone());
                    s.complete = true;
                    this.trailers_sent = true;
                    Frame::trailers(t)
                }
                Err(other) => other,
            },
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let s = self.replay.lock();
        s.complete && self.next >= s.data.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.replay.lock();
        if s.complete {
            let left: usize = s.data[self.next.min(s.data.len())..]
                .iter()
                .map(Bytes::len)
                .sum();
            return SizeHint::with_exact(left as u64);
        }
        let mut h = s.source.size_hint();
        if self.next >= s.data.len() {
            return h;
        }
        let kept: usize = s.data[self.next..].iter().map(Bytes::len).sum();
        h.set_lower(h.lower() + kept as u64);
        if let Some(u) = h.upper() {
            h.set_upper(u + kept as u64);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn streamed(chunks: &[&'static str], trailers: bool) -> ProxyBody {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            frames.push(Ok(Frame::trailers(t)));
        }
        ProxyBody::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn collect(b: ReplayBody) -> (Bytes, Option<HeaderMap>) {
        let c = b.collect().await.expect("body");
        let t = c.trailers().cloned();
        (c.to_bytes(), t)
    }

    #[tokio::test]
    async fn a_second_attempt_gets_the_same_body_and_trailers() {
        let r = Replay::new(streamed(&["ab", "cd", "e"], true), 1024);
        assert!(!r.can_replay(), "nothing read yet");
        let (first, t1) = collect(r.body()).await;
        assert!(r.can_replay());
        let (second, t2) = collect(r.body()).await;
        assert_eq!((&first[..], &second[..]), (&b"abcde"[..], &b"abcde"[..]));
        assert!(t1.is_some() && t1 == t2);
    }

    #[tokio::test]
    async fn past_the_limit_the_body_still_flows_once_but_cannot_be_replayed() {
        let r = Replay::new(streamed(&["0123", "4567", "89"], false), 6);
        let (first, _) = collect(r.body()).await;
        assert_eq!(&first[..], b"0123456789");
        assert!(!r.can_replay());
    }

    #[tokio::test]
    async fn an_empty_body_is_complete_at_once() {
        let r = Replay::new(ProxyBody::Empty, 16);
        assert!(r.can_replay());
        let (b, t) = collect(r.body()).await;
        assert!(b.is_empty() && t.is_none());
    }
}
