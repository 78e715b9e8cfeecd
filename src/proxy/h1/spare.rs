//! Each worker thread's spare upstream connections: idle ones no client connection
//! holds, for the next client connection or HTTP/2 stream on that thread to the same
//! endpoint.
//!
//! Why: a client connection owns its upstream connections while it is busy
//! (`io::Upstreams`), but clients come and go. Without a place to leave them, every
//! new client connection (every one of a `Connection: close` client, every TLS
//! handshake) opened a new upstream connection and every closing one closed its own:
//! a connect, an accept in the app and two closes per client connection, none of it
//! needed. HTTP/2 streams (`exchange`) have no connection of their own and always
//! take one from here.
//!
//! Workers are thread-per-core and a connection's task never leaves its thread, so the
//! list is a thread-local without a lock. At most [`SPARE_KEEP`] are kept per thread
//! (the oldest goes first); one idle for longer than [`IDLE_MAX`] is never handed
//! out, and the worker's tidy-up closes those once a second ([`sweep`]), so an old
//! release's connections go soon after a switch and idle clients hold none.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::domain::endpoint::Endpoint;

/// How long an upstream connection may sit idle and still be reused. Shorter than the
/// 5 s keep-alive of common app servers (Node, uvicorn), so the proxy lets go first
/// and rarely reuses a connection the app is closing; and it bounds how long an idle
/// connection to a slot that no longer gets traffic (after a switch) stays open, so a
/// release that waits for its connections to close on `SIGTERM` is not held up.
pub const IDLE_MAX: Duration = Duration::from_secs(4);

/// An idle upstream connection and since when it has been idle (a client connection's own,
/// `io::Upstreams`, or a spare).
pub(super) struct IdleConn {
    /// Cloned from the routing snapshot: a copy for an address, a reference count for
    /// a host name; never an allocation.
    pub(super) endpoint: Endpoint,
    pub(super) stream: TcpStream,
    pub(super) since: Instant,
}

/// Whether an idle upstream connection can be reused: nothing may be readable on it
/// (an idle connection that is readable was closed by the upstream or sent garbage).
/// Costs no system call unless the runtime already saw it become readable.
pub(super) fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Spare upstream connections one worker thread keeps (as many as hyper-util's pool
/// keeps per upstream: `pool_max_idle_per_host`).
pub const SPARE_KEEP: usize = 1024;

thread_local! {
    static SPARE: RefCell<VecDeque<IdleConn>> = const { RefCell::new(VecDeque::new()) };
}

/// The most recently idled spare connection to `endpoint` that still looks open; those
/// idle for longer than [`IDLE_MAX`] are closed on the way.
pub fn take(endpoint: &Endpoint) -> Option<TcpStream> {
    let now = Instant::now();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        while spare.front().is_some_and(|c| too_old(c, now)) {
            spare.pop_front();
        }
        let at = spare.iter().rposition(|c| c.endpoint == *endpoint)?;
        let conn = spare.remove(at)?;
        (!too_old(&conn, now) && still_open(&conn.stream)).then_some(conn.stream)
    })
}

/// Keeps `stream`, idle since `since`, for the next request to `endpoint` on this
/// thread (the oldest goes when [`SPARE_KEEP`] are kept). On a thread that is ending
/// (its thread-locals already gone) the connection is simply closed.
pub fn put(endpoint: &Endpoint, stream: TcpStream, since: Instant) {
    let conn = IdleConn {
        endpoint: endpoint.clone(),
        stream,
        since,
    };
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() >= SPARE_KEEP {
            spare.pop_front();
        }
        spare.push_back(conn);
    });
}

/// Leaves `conn` (a client connection's idle upstream connection) for the others.
pub(super) fn give(conn: IdleConn) {
    put(&conn.endpoint, conn.stream, conn.since);
}

fn too_old(c: &IdleConn, now: Instant) -> bool {
    now.saturating_duration_since(c.since) > IDLE_MAX
}

/// Closes this thread's spare connections idle for longer than [`IDLE_MAX`]. Called by
/// its worker once a second (`workers::TIDY_EVERY`).
pub fn sweep() {
    let now = Instant::now();
    SPARE.with(|spare| spare.borrow_mut().retain(|c| !too_old(c, now)));
}

/// How many spare connections to `endpoint` this thread keeps.
#[cfg(test)]
pub fn kept_for(endpoint: &Endpoint) -> usize {
    SPARE.with(|spare| {
        spare
            .borrow()
            .iter()
            .filter(|c| c.endpoint == *endpoint)
            .count()
    })
}
