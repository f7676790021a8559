//! Relay between two TCP sockets. Each direction starts by copying through a small
//! buffer; once it has moved [`SPLICE_AFTER`] bytes it switches to `splice(2)`, which
//! moves bytes from one socket into a pipe and from the pipe into the other socket inside
//! the kernel, never copying them into user space. A pipe costs five system calls to make
//! and two to close: more than a short exchange (a request and an answer of a few hundred
//! bytes) costs to copy, so short connections never make one, and bulk transfers pay for
//! it once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::{self, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::io::ActivityClock;

/// Bytes asked of each splice call, and the pipe size asked for.
const CHUNK: usize = 256 * 1024;
/// A direction splices once it has copied this many bytes.
const SPLICE_AFTER: u64 = 64 * 1024;
/// The copy buffer of a direction that has not switched to splicing yet.
const COPY_CHUNK: usize = 16 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // A bigger pipe moves more per call. The kernel may refuse (`pipe-max-size`, the
        // user's pipe page budget); the default 64 KiB works too.
        let _ = pipe::fcntl_setpipe_size(&write, CHUNK);
        Ok(Pipe { read, write })
    }
}

fn splice_move(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    Ok(pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

/// Relays both directions until both have ended (each end's half-close is passed on).
/// Every move is counted on `clock`: a to b as `a`'s received bytes, b to a as sent.
pub async fn relay(a: &TcpStream, b: &TcpStream, clock: &ActivityClock) -> io::Result<()> {
    tokio::try_join!(
        one_way(a, b, clock, Dir::FromA),
        one_way(b, a, clock, Dir::ToA)
    )?;
    Ok(())
}

/// Which way bytes move, counted on the clock as `a`'s received or sent bytes.
#[derive(Debug, Clone, Copy)]
enum Dir {
    FromA,
    ToA,
}

fn moved(clock: &ActivityClock, dir: Dir, n: usize) {
    match dir {
        Dir::FromA => clock.received(n as u64),
        Dir::ToA => clock.sent(n as u64),
    }
}

async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    clock: &ActivityClock,
    dir: Dir,
) -> io::Result<()> {
    if copy_first(src, dst, clock, dir).await? {
        return Ok(());
    }
    // Made on the first byte after the switch.
    let mut pipe: Option<Pipe> = None;
    loop {
        src.readable().await?;
        let p = match &pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        // The pipe is empty here, so "would block" can only mean the socket has nothing.
        let n = match src.try_io(Interest::READABLE, || {
            splice_move(src.as_fd(), p.write.as_fd(), CHUNK)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            half_close(dst);
            return Ok(());
        }
        clock.touch();
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice_move(p.read.as_fd(), dst.as_fd(), left)
            }) {
                Ok(m) => {
                    left -= m;
                    moved(clock, dir, m);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The peer finished sending: pass the half-close on.
fn half_close(dst: &TcpStream) {
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
}

/// Copies from `src` to `dst` through a buffer until [`SPLICE_AFTER`] bytes have moved
/// or `src` has finished (then `dst` is half-closed). Returns
/// whether `src` finished. The buffer is allocated on the first byte, so a quiet
/// connection holds none.
async fn copy_first(
    src: &TcpStream,
    dst: &TcpStream,
    clock: &ActivityClock,
    dir: Dir,
) -> io::Result<bool> {
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    while total < SPLICE_AFTER {
        src.readable().await?;
        if buf.is_empty() {
            buf = vec![0; COPY_CHUNK];
        }
        let n = match src.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            half_close(dst);
            return Ok(true);
        }
        clock.touch();
        let mut sent = 0;
        while sent < n {
            dst.writable().await?;
            match dst.try_write(&buf[sent..n]) {
                Ok(m) => {
                    sent += m;
                    moved(clock, dir, m);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// Sends `data` and half-closes while reading everything the peer sends until its
    /// half-close; returns what was read.
    async fn exchange(mut s: TcpStream, data: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        tokio::join!(send, recv).1
    }

    /// A short exchange stays on the copy path (under the switch in both directions):
    /// bytes, counts and half-closes are the same as when splicing.
    #[tokio::test]
    async fn short_exchange_is_copied() {
        let (client, a) = pair().await;
        let (b, server) = pair().await;
        let clock = ActivityClock::default();
        let counts = clock.clone();
        let relay = tokio::spawn(async move { relay(&a, &b, &clock).await });
        let server_task = tokio::spawn(exchange(server, b"pong".to_vec()));
        let got = exchange(client, b"ping!".to_vec()).await;
        assert_eq!(got, b"pong");
        assert_eq!(server_task.await.unwrap(), b"ping!");
        relay.await.unwrap().unwrap();
        assert_eq!(counts.bytes(), (5, 4));
    }

    /// 8 MiB one way and 1 MiB the other, concurrently, with half-closes: every byte
    /// arrives in order, both counts are right, and each end sees the other's EOF.
    #[tokio::test]
    async fn relays_both_directions_and_half_closes() {
        let (client, a) = pair().await;
        let (b, server) = pair().await;
        let clock = ActivityClock::default();
        let counts = clock.clone();
        let relay = tokio::spawn(async move { relay(&a, &b, &clock).await });
        let up: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 241) as u8).collect();
        let server_task = tokio::spawn(exchange(server, down.clone()));
        let got = exchange(client, up.clone()).await;
        assert!(got == down, "downstream got {} bytes", got.len());
        let got = server_task.await.unwrap();
        assert!(
            got == up,
            "upstream got {} bytes, not the sent ones",
            got.len()
        );
        relay.await.unwrap().unwrap();
        let (ab, ba) = counts.bytes();
        assert_eq!((ab, ba), (up.len() as u64, down.len() as u64));
    }
}
