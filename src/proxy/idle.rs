//! Parked connections: an idle plaintext keep-alive connection is not a task, and not
//! even a socket in the runtime's reactor.
//!
//! Why: most open connections are idle (a browser keeps one open for minutes between
//! clicks), and whatever an idle connection keeps is multiplied by all of them (issue
//! #16: nginx keeps one in about 800 bytes). A task costs its whole future, however
//! small it is made: Tokio's task cell (aligned to 128 bytes), a timer and a shutdown
//! wait of its own, about 1 KiB in all. A socket registered with Tokio's reactor costs
//! its `ScheduledIo` (aligned to 128 bytes, 384 bytes with its reference counts), and
//! that allocation outlives the busy period around it, so it also keeps the pages of
//! the busy period resident.
//!
//! So a connection that has had nothing to do for `IDLE_RELEASE` ends its task and
//! leaves its socket, taken out of Tokio's reactor, in its listener's [`IdleSet`] (one
//! per listener and worker thread), in an epoll instance of the set's own. What it keeps
//! is one slab slot (the descriptor, its connection slot, its deadline; ~50 bytes)
//! and a deadline in a heap. One watcher task serves the whole set: the runtime watches
//! the set's epoll descriptor as one socket, and when it is readable the watcher asks it
//! which parked sockets are (a request, or EOF) and gives each back to the runtime in a
//! new connection task; one timer for the earliest deadline closes an entry past it
//! (`header_read_timeout` after the last response, as if it had never left); draining
//! closes them all at once. Parking and resuming cost two `epoll_ctl` calls each, once
//! per idle period of a second or more.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::conn::{ConnState, ListenerCtx};

/// An idle plaintext connection, as its task leaves it and a new task takes it back.
pub(crate) struct Parked {
    /// Its listener's context: held like a connection task holds it, so the
    /// listener's drain waits for parked connections as for any other.
    pub(crate) ctx: Arc<ListenerCtx>,
    /// (Its peer's address is asked of the socket again when it resumes: 32 bytes
    /// less per parked connection.)
    pub(crate) stream: TcpStream,
    /// Its slot under the listener's `max_connections`: a parked connection counts.
    pub(crate) permit: OwnedSemaphorePermit,
    /// When it is closed if no request head has come (`header_read_timeout` after
    /// its last response).
    pub(crate) head_by: Instant,
}

/// One listener's parked connections on one worker thread: where connection tasks
/// leave them for the watcher.
#[derive(Default)]
pub(crate) struct IdleSet {
    /// Parked since the watcher last looked; `true` once the watcher has ended (the
    /// listener drains): a connection parked then is closed at once.
    arrived: Mutex<(bool, Vec<Parked>)>,
    /// The watcher task.
    watcher: Mutex<Option<Waker>>,
}

impl IdleSet {
    /// Hands `parked` to the watcher; its task can end. Closed at once if the
    /// listener is draining.
    pub(crate) fn park(&self, parked: Parked) {
        {
            let mut arrived = lock(&self.arrived);
            if arrived.0 {
                return;
            }
            arrived.1.push(parked);
        }
        if let Some(w) = lock(&self.watcher).take() {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a parked connection keeps while it waits: its socket, out of the runtime's
/// reactor and in the set's epoll instance.
struct Entry {
    stream: std::net::TcpStream,
    ctx: Arc<ListenerCtx>,
    permit: OwnedSemaphorePermit,
    head_by: Instant,
}

/// The watcher's own state: a slab of entries (keys reused, generations tell a stale
/// deadline from a new entry) and a heap of deadlines.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<Entry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl Slab {
    fn insert(&mut self, entry: Entry) -> (u32, u32) {
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = self.generations[key as usize].wrapping_add(1);
        self.generations[key as usize] = generation;
        self.deadlines
            .push(Reverse((entry.head_by, key, generation)));
        self.entries[key as usize] = Some(entry);
        (key, generation)
    }

    fn remove(&mut self, key: u32, generation: u32) -> Option<Entry> {
        if self.generations.get(key as usize) != Some(&generation) {
            return None;
        }
        let entry = self.entries.get_mut(key as usize)?.take()?;
        self.free.push(key);
        Some(entry)
    }

    /// Closes entries past their deadline (closing a socket also takes it out of the
    /// epoll instance); the earliest deadline left.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((at, key, generation))) = self.deadlines.peek().copied() {
            if at > now {
                return Some(at);
            }
            self.deadlines.pop();
            drop(self.remove(key, generation));
        }
        None
    }
}

/// The set's epoll instance, which the runtime watches as one descriptor.
struct Poller(Epoll);

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// An entry's key and generation, as its epoll event carries them.
fn token(key: u32, generation: u32) -> u64 {
    (u64::from(key) << 32) | u64::from(generation)
}

fn untoken(data: u64) -> (u32, u32) {
    ((data >> 32) as u32, data as u32)
}

impl Poller {
    #[allow(unsafe_code)]
    fn new() -> std::io::Result<AsyncFd<Poller>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // SAFETY: the descriptor is the `OwnedFd` inside the `Poller` the `AsyncFd`
        // takes ownership of: open, the same, and `as_raw_fd` returns it, for as long
        // as the `AsyncFd` lives (it is closed only when the `Poller` is dropped).
        unsafe { AsyncFd::register_with_interest(Poller(epoll), Interest::READABLE) }
            .map_err(std::io::Error::from)
    }

    /// Takes `parked`'s socket out of the runtime's reactor into this instance. A
    /// socket that cannot be moved is closed (the client opens a new connection).
    fn park(&self, slab: &mut Slab, parked: Parked) {
        let Ok(stream) = parked.stream.into_std() else {
            return;
        };
        let (key, generation) = slab.insert(Entry {
            stream,
            ctx: parked.ctx,
            permit: parked.permit,
            head_by: parked.head_by,
        });
        let Some(Some(entry)) = slab.entries.get(key as usize) else {
            return;
        };
        // Level-triggered: a request that came before this call is reported at once.
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            token(key, generation),
        );
        if let Err(e) = self.0.add(&entry.stream, event) {
            tracing::debug!(error = %e, "cannot park an idle connection; closed");
            drop(slab.remove(key, generation));
        }
    }

    /// The entries whose sockets are readable, out of the slab and this instance, at
    /// most `events.len()` of them; `true` if there may be more.
    fn take_ready(&self, slab: &mut Slab, events: &mut [EpollEvent], out: &mut Vec<Entry>) -> bool {
        let n = self.0.wait(events, 0u8).unwrap_or(0);
        for event in &events[..n] {
            let (key, generation) = untoken(event.data());
            if let Some(entry) = slab.remove(key, generation) {
                let _ = self.0.delete(&entry.stream);
                out.push(entry);
            }
        }
        n == events.len()
    }
}

/// Serves `set` until the listener drains: readable entries go back to the runtime
/// and to `resume` (which spawns their connection task), expired ones are closed.
/// Drops (closes) every entry left when the listener drains or stops.
pub(crate) async fn watch(
    set: Arc<IdleSet>,
    mut state: watch::Receiver<ConnState>,
    resume: impl Fn(Parked),
) {
    let closing = state.wait_for(|s| matches!(s, ConnState::Draining | ConnState::Stopped));
    // Re-armed to the earliest deadline; parked far away while the set is empty.
    let far = || Instant::now() + std::time::Duration::from_secs(86_400);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(closing, timer);
    let mut slab = Slab::default();
    let poller = match Poller::new() {
        Ok(p) => Some(p),
        // Out of descriptors at start: idle connections are closed instead of parked
        // (a server may close an idle keep-alive connection at any time).
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch idle connections; they will be closed");
            None
        }
    };
    let mut events = vec![EpollEvent::empty(); 64];
    let mut ready = Vec::new();
    if let Some(poller) = &poller {
        std::future::poll_fn(|cx| loop {
            *lock(&set.watcher) = Some(cx.waker().clone());
            if closing.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let arrived = std::mem::take(&mut lock(&set.arrived).1);
            for parked in arrived {
                poller.get_ref().park(&mut slab, parked);
            }
            loop {
                let mut guard = match poller.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(guard)) => guard,
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(error = %e, "idle connections' watcher failed; closing them");
                        return Poll::Ready(());
                    }
                };
                let more = poller
                    .get_ref()
                    .take_ready(&mut slab, &mut events, &mut ready);
                if !more {
                    guard.clear_ready();
                }
                for entry in ready.drain(..) {
                    // Back in the runtime's reactor (a socket it refuses is closed).
                    let Ok(stream) = TcpStream::from_std(entry.stream) else {
                        continue;
                    };
                    resume(Parked {
                        ctx: entry.ctx,
                        stream,
                        permit: entry.permit,
                        head_by: entry.head_by,
                    });
                }
            }
            let next = slab.expire(Instant::now()).unwrap_or_else(far);
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(cx).is_ready() {
                continue;
            }
            // Connections parked while this ran are looked at now, not lost.
            if lock(&set.arrived).1.is_empty() {
                return Poll::Pending;
            }
        })
        .await;
    }
    // Draining: every parked connection closes (with `slab`), and so does any parked
    // from now on.
    let late = {
        let mut arrived = lock(&set.arrived);
        arrived.0 = true;
        std::mem::take(&mut arrived.1)
    };
    drop(slab);
    drop(late);
}
