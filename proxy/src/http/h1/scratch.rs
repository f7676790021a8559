//! Scratch space the server loop borrows from its thread, so that an idle connection
//! holds none: the spans of a request head being parsed, the response head (with the
//! body frames gathered into its write) being written, and read buffers (a connection
//! waiting for its next request gives its buffer back; the next read takes one).

use std::cell::Cell;

use bytes::BytesMut;

use crate::h1::fields::Span;
use crate::h1::READ_MIN;

/// A write buffer larger than this is not kept for reuse.
const KEEP_AT_MOST: usize = 64 * 1024;
/// Nor a read buffer larger than this (a connection that read large bodies grew its
/// own): the pool holds at most 2 MiB.
const READ_KEPT_AT_MOST: usize = 2 * READ_MIN;
/// Read buffers a thread keeps at most. A buffer is held from a request's first read
/// until its connection waits for the next one (the request's head shares its memory),
/// so a burst of exchanges in flight takes as many buffers as there are exchanges; when
/// they end, all come back. Keeping fewer than such a burst made a quarter of the
/// requests of 64 busy keep-alive connections allocate a fresh buffer (8 KiB, beyond
/// the allocator's per-thread cache) and free another.
const READS_KEPT: usize = 128;

thread_local! {
    static SPANS: Cell<Vec<Span>> = const { Cell::new(Vec::new()) };
    static WRITE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static READS: Cell<Vec<BytesMut>> = const { Cell::new(Vec::new()) };
}

/// A read buffer: one the thread kept, or an empty one (the read makes its room).
pub fn take_read() -> BytesMut {
    let mut kept = READS.take();
    let buf = kept.pop();
    READS.set(kept);
    buf.unwrap_or_default()
}

/// Gives back a connection's read buffer, whatever it holds: kept if nothing else
/// refers to its memory and the thread has room.
pub fn put_read(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() > READ_KEPT_AT_MOST || !buf.try_reclaim(READ_MIN) {
        return;
    }
    let mut kept = READS.take();
    if kept.len() < READS_KEPT {
        kept.push(buf);
    }
    READS.set(kept);
}

/// `f` with the thread's span scratch (empty or holding an earlier head's spans: it is
/// cleared by whoever fills it).
pub fn with_spans<R>(f: impl FnOnce(&mut Vec<Span>) -> R) -> R {
    let mut spans = SPANS.take();
    let r = f(&mut spans);
    SPANS.set(spans);
    r
}

/// An empty write buffer: the thread's (with its capacity), or a new one while another
/// response on this thread holds it.
pub fn take_write() -> Vec<u8> {
    WRITE.take()
}

/// Gives a write buffer back once its response is written.
pub fn put_write(mut buf: Vec<u8>) {
    if buf.capacity() <= KEEP_AT_MOST {
        buf.clear();
        WRITE.set(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffers_are_kept_only_when_nothing_else_holds_their_memory() {
        let mut b = BytesMut::with_capacity(READ_MIN);
        b.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = b.split_to(10).freeze();
        put_read(b);
        assert_eq!(take_read().capacity(), 0, "the head still refers to it");
        let mut b = BytesMut::from(&head[..]);
        drop(head);
        b.reserve(READ_MIN);
        let cap = b.capacity();
        put_read(b);
        let again = take_read();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
        assert_eq!(take_read().capacity(), 0);
        put_read(BytesMut::with_capacity(READ_KEPT_AT_MOST + 1));
        assert_eq!(take_read().capacity(), 0);
    }

    #[test]
    fn the_write_buffer_is_reused_and_a_huge_one_dropped() {
        let mut b = take_write();
        b.extend_from_slice(&[1; 300]);
        let cap = b.capacity();
        put_write(b);
        let b = take_write();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        // While it is out, a second response gets a new one.
        assert_eq!(take_write().capacity(), 0);
        put_write(b);
        put_write(Vec::with_capacity(KEEP_AT_MOST + 1));
        assert_eq!(take_write().capacity(), cap);
    }
}
