//! The fast path's plumbing: one timer per connection, the connection-affine upstream
//! connections (left to the thread's spares, `spare`, when their client closes), and the hand-over
//! of a connection to the general (hyper) path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::spare::{still_open, IdleConn, IDLE_MAX};
use crate::domain::endpoint::Endpoint;

/// One poll of tokio's own read into `buf`.
///
/// Why not `try_read_buf`: a read that returns less than the room given means the
/// socket is drained, and tokio's read then forgets the socket's readiness (race-free:
/// only if no event arrived since). `try_read_buf` keeps it, so the next wait would
/// begin with a `recv` that can only say "would block": one wasted system call per
/// request on a keep-alive connection (BENCHMARKS.md, "One system call less per
/// request").
pub fn poll_read_once(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    std::future::Future::poll(std::pin::pin!(stream.read_buf(buf)), cx)
}

/// One timer for a connection's successive deadlines (waiting for a request head,
/// waiting for the upstream's response head).
///
/// Why not a fresh `timeout` per wait: re-arming a timer takes the runtime's timer
/// lock on every request. Here the timer is re-armed only when it fires before the
/// current deadline (or a deadline moves earlier than it), so on a busy keep-alive
/// connection it is touched about once per timeout period, not once per request.
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    until: Instant,
}

impl Deadline {
    pub fn new(until: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(until)),
            until,
        }
    }

    /// The current wait ends at `until`.
    pub fn set(&mut self, until: Instant) {
        self.until = until;
        if self.sleep.deadline() > until {
            self.sleep.as_mut().reset(until);
        }
    }

    /// Resolves once the current deadline has passed.
    pub async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= self.until {
                return;
            }
            let until = self.until;
            self.sleep.as_mut().reset(until);
        }
    }
}

/// How long a client connection may wait for its next request before its upstream
/// connections are closed. Why: most open client connections are idle, and one that
/// kept an upstream connection would cost the app a connection (and the proxy a
/// descriptor) per idle client: 10,000 idle browsers would hold 10,000 connections to
/// the app. A client sending its next request within this time (a page's follow-up
/// requests, a busy API client) still reuses its connection.
pub const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Upstream connections owned by one client connection: at most one per upstream
/// endpoint, at most two (a canary split alternates between the two slots).
///
/// Why per client connection and not a shared pool: a request never waits for or
/// contends on a pool, and the connection lives on the same thread and task as its
/// client. A client connection without one for an endpoint takes a spare one from its
/// thread (`spare`) before it connects; those it holds when it closes (or is handed to
/// the general path), and the older one when a third endpoint evicts it, become its
/// thread's spares, closed after [`IDLE_MAX`] idle unless taken. One idle for
/// [`IDLE_RELEASE`] closes its own. After a switch the old slot's connection is no
/// longer asked for; it is closed at the next request after [`IDLE_MAX`], or goes the
/// ways above.
#[derive(Default)]
pub struct Upstreams {
    conns: [Option<IdleConn>; 2],
}

impl Upstreams {
    /// An idle connection to `endpoint` that still looks open, removed from the set.
    /// Connections idle for longer than [`IDLE_MAX`] at `now` are closed first.
    pub fn take(&mut self, endpoint: &Endpoint, now: StdInstant) -> Option<TcpStream> {
        for c in &mut self.conns {
            if c.as_ref()
                .is_some_and(|i| now.saturating_duration_since(i.since) > IDLE_MAX)
            {
                *c = None;
            }
        }
        let mine = self
            .conns
            .iter_mut()
            .find(|c| c.as_ref().is_some_and(|i| i.endpoint == *endpoint))
            .and_then(Option::take);
        match mine {
            Some(idle) if still_open(&idle.stream) => Some(idle.stream),
            Some(_) => None,
            None => super::spare::take(endpoint),
        }
    }

    /// Whether any upstream connection is held.
    pub fn holds_any(&self) -> bool {
        self.conns.iter().any(Option::is_some)
    }

    /// Closes every held upstream connection (the client connection stays, idle).
    pub fn clear(&mut self) {
        self.conns = [None, None];
    }

    /// Keeps `stream` for the next request to `endpoint`, idle from `now`; when both
    /// places are taken, the older connection is closed.
    pub fn put(&mut self, endpoint: &Endpoint, stream: TcpStream, now: StdInstant) {
        let idle = IdleConn {
            endpoint: endpoint.clone(),
            stream,
            since: now,
        };
        if let Some(free) = self.conns.iter_mut().find(|c| c.is_none()) {
            *free = Some(idle);
            return;
        }
        // Both taken: the older becomes a spare, the newest is kept last.
        if let Some(older) = self.conns[0].take() {
            super::spare::give(older);
        }
        self.conns[0] = self.conns[1].take();
        self.conns[1] = Some(idle);
    }
}

impl Drop for Upstreams {
    /// The client connection is done with them (it closed, or was handed to the
    /// general path): every one held is idle after a complete exchange, and becomes
    /// a spare of the thread.
    fn drop(&mut self) {
        for c in &mut self.conns {
            if let Some(idle) = c.take() {
                super::spare::give(idle);
            }
        }
    }
}

/// Connects to an upstream with `TCP_NODELAY`: an address directly, a host name
/// resolved now and its addresses tried in order (the caller's timer bounds it).
pub async fn connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    endpoint.connect().await
}

/// A client connection handed to the general path: the bytes the fast path already
/// read (the head it did not take, and anything after it) come first.
pub struct Rewind<S> {
    pre: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S, pre: Bytes) -> Self {
        Self { pre, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::spare;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Endpoint::from(listener.local_addr().unwrap());
        let mut ups = Upstreams::default();
        let client = connect(&addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        ups.put(&addr, client, StdInstant::now());
        // Open and idle: reused.
        let client = ups
            .take(&addr, StdInstant::now())
            .expect("an open idle connection is reused");
        ups.put(&addr, client, StdInstant::now());
        drop(server);
        // Let the runtime see the FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            ups.take(&addr, StdInstant::now()).is_none(),
            "a closed connection is dropped"
        );
        assert!(
            ups.take(&addr, StdInstant::now()).is_none(),
            "and forgotten"
        );
    }

    #[tokio::test]
    async fn two_addresses_are_kept_and_a_third_makes_the_oldest_a_spare() {
        let mut listeners = Vec::new();
        let mut ups = Upstreams::default();
        for _ in 0..3 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = Endpoint::from(l.local_addr().unwrap());
            ups.put(&addr, connect(&addr).await.unwrap(), StdInstant::now());
            listeners.push((l, addr));
        }
        let [(_, first), (_, second), (_, third)] = &listeners[..] else {
            unreachable!("three listeners")
        };
        assert_eq!(spare::kept_for(first), 1, "the oldest became a spare");
        assert_eq!(spare::kept_for(second) + spare::kept_for(third), 0);
        let now = StdInstant::now();
        assert!(ups.take(third, now).is_some(), "the newest is kept");
        assert!(ups.take(second, now).is_some());
        assert!(ups.take(first, now).is_some(), "the spare is taken back");
        assert_eq!(spare::kept_for(first), 0);
    }

    #[tokio::test]
    async fn a_client_connection_done_with_its_upstream_leaves_it_for_the_next_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Endpoint::from(listener.local_addr().unwrap());
        let mut first = Upstreams::default();
        first.put(&addr, connect(&addr).await.unwrap(), StdInstant::now());
        let (_server, _) = listener.accept().await.unwrap();
        drop(first);
        assert_eq!(spare::kept_for(&addr), 1, "closing leaves it");
        let mut next = Upstreams::default();
        let stream = next
            .take(&addr, StdInstant::now())
            .expect("the next client connection takes it");
        next.put(&addr, stream, StdInstant::now());
        drop(next);
        let mut third = Upstreams::default();
        assert!(third.take(&addr, StdInstant::now()).is_some());
        // Idle for `IDLE_RELEASE`, a client connection closes its own instead.
        third.clear();
        assert_eq!(spare::kept_for(&addr), 0);
        // One connection served all three: nothing else was accepted.
        let more = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(more.is_err(), "a second upstream connection was opened");
    }

    #[tokio::test]
    async fn connections_idle_past_the_limit_are_closed_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b): (Endpoint, Endpoint) = (
            listener.local_addr().unwrap().into(),
            "127.0.0.1:9".parse().unwrap(),
        );
        let mut ups = Upstreams::default();
        let t0 = StdInstant::now();
        ups.put(&a, connect(&a).await.unwrap(), t0);
        ups.put(&b, connect(&a).await.unwrap(), t0 + Duration::from_secs(3));
        // At t0 + 4.5 s the first is too old, the second is not.
        let later = t0 + IDLE_MAX + Duration::from_millis(500);
        assert!(ups.take(&a, later).is_none(), "idle for 4.5 s: closed");
        assert!(ups.take(&b, later).is_some(), "idle for 1.5 s: reused");
    }

    #[tokio::test]
    async fn a_host_name_endpoint_is_dialled_and_its_connection_kept_under_its_name() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let by_name = Endpoint::host("localhost", port).unwrap();
        let by_addr = Endpoint::from(listener.local_addr().unwrap());
        let mut ups = Upstreams::default();
        let client = connect(&by_name).await.unwrap();
        let _server = listener.accept().await.unwrap();
        ups.put(&by_name, client, StdInstant::now());
        assert!(
            ups.take(&by_addr, StdInstant::now()).is_none(),
            "another endpoint"
        );
        assert!(ups.take(&by_name, StdInstant::now()).is_some());
    }

    #[tokio::test]
    async fn rewind_replays_the_bytes_read_before_the_hand_over() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        peer.write_all(b" world").await.unwrap();
        drop(peer);
        let mut rewind = Rewind::new(server, Bytes::from_static(b"hello"));
        let mut all = String::new();
        rewind.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn the_deadline_fires_no_earlier_than_the_latest_time_it_was_set_to() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_millis(50));
        d.set(start + Duration::from_millis(200));
        d.expired().await;
        assert!(Instant::now() - start >= Duration::from_millis(200));
        // Set again after it fired: waits again.
        let now = Instant::now();
        d.set(now + Duration::from_millis(50));
        d.expired().await;
        assert!(Instant::now() - now >= Duration::from_millis(50));
    }
}
