//! Parked connections: an idle plaintext keep-alive connection is not a task.
//!
//! Why: most open connections are idle (a browser keeps one open for minutes between
//! clicks), and a task per idle connection costs its whole future however small it is
//! made: Tokio's task cell (aligned to 128 bytes), the future with a timer and a
//! shutdown wait of its own (about 1 KiB in all, issue #16). nginx keeps an idle
//! connection in about 700 bytes. Here a connection that has had nothing to do for
//! `IDLE_RELEASE` ends its task and leaves only a [`Parked`] entry (its socket, its
//! connection slot, its deadline) in its listener's [`IdleSet`], one per listener
//! and worker thread. One watcher task serves the whole set: one waker per entry (a
//! small `Arc`, registered as the socket's read waker, so a readable socket names
//! itself), one timer for the earliest deadline (a heap), one shutdown wait. A
//! readable socket (a request, or EOF) gets a new connection task with its entry;
//! an entry past its deadline (`header_read_timeout` after the last response, as if
//! it had never left) is closed; draining closes them all at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use tokio::sync::watch;

use super::conn::{ConnState, ListenerCtx};

/// An idle plaintext connection without a task.
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
/// leave them and wakers report them readable.
#[derive(Default)]
pub(crate) struct IdleSet {
    /// Parked since the watcher last looked; `true` once the watcher has ended (the
    /// listener drains): a connection parked then is closed at once.
    arrived: Mutex<(bool, Vec<Parked>)>,
    /// Entries whose socket woke them: (key, generation).
    ready: Mutex<Vec<(u32, u32)>>,
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
        self.wake_watcher();
    }

    fn wake_watcher(&self) {
        if let Some(w) = lock(&self.watcher).take() {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One parked connection: its entry and its waker in one allocation (the waker
/// reports the key to the set, so the watcher polls only sockets that woke).
struct Node {
    set: Arc<IdleSet>,
    key: u32,
    generation: u32,
    /// Taken by the watcher (on its own thread) when the entry resumes or closes.
    /// Always taken before the node leaves the slab: the socket's registration holds
    /// this node's waker, so a node still holding its socket would never be freed.
    parked: Mutex<Option<Parked>>,
}

impl Wake for Node {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.set.ready).push((self.key, self.generation));
        self.set.wake_watcher();
    }
}

/// The watcher's own state: a slab of entries (keys reused, generations tell a stale
/// wake-up from a new entry) and a heap of deadlines.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<Arc<Node>>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl Slab {
    fn insert(&mut self, set: &Arc<IdleSet>, parked: Parked) -> (u32, u32) {
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
            .push(Reverse((parked.head_by, key, generation)));
        self.entries[key as usize] = Some(Arc::new(Node {
            set: set.clone(),
            key,
            generation,
            parked: Mutex::new(Some(parked)),
        }));
        (key, generation)
    }

    fn node(&self, key: u32, generation: u32) -> Option<&Arc<Node>> {
        let node = self.entries.get(key as usize)?.as_ref()?;
        (node.generation == generation).then_some(node)
    }

    fn remove(&mut self, key: u32, generation: u32) -> Option<Parked> {
        self.node(key, generation)?;
        let node = self.entries[key as usize].take()?;
        self.free.push(key);
        let parked = lock(&node.parked).take();
        parked
    }

    /// The entry, if readable now (a request or EOF): removed. Else its waker is
    /// registered with the socket.
    fn poll_entry(&mut self, key: u32, generation: u32) -> Option<Parked> {
        let node = self.node(key, generation)?;
        let waker = Waker::from(node.clone());
        let mut cx = Context::from_waker(&waker);
        let readable = match lock(&node.parked).as_ref() {
            Some(p) => p.stream.poll_read_ready(&mut cx).is_ready(),
            None => false,
        };
        if readable {
            self.remove(key, generation)
        } else {
            None
        }
    }

    /// Closes entries past their deadline; the earliest deadline left.
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

/// Serves `set` until the listener drains: readable entries go to `resume` (which
/// spawns their connection task), expired ones are closed. Drops (closes) every
/// entry left when the listener drains or stops.
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
    std::future::poll_fn(|cx| loop {
        *lock(&set.watcher) = Some(cx.waker().clone());
        if closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let arrived = std::mem::take(&mut lock(&set.arrived).1);
        let mut ready = std::mem::take(&mut *lock(&set.ready));
        for parked in arrived {
            // Polled once at once: a request may have come while it was parked.
            ready.push(slab.insert(&set, parked));
        }
        for (key, generation) in ready {
            if let Some(parked) = slab.poll_entry(key, generation) {
                resume(parked);
            }
        }
        let next = slab.expire(Instant::now()).unwrap_or_else(far);
        if timer.deadline() != next {
            timer.as_mut().reset(next);
        }
        if timer.as_mut().poll(cx).is_ready() {
            continue;
        }
        // Wakes that came while this ran are looked at now, not lost.
        if lock(&set.arrived).1.is_empty() && lock(&set.ready).is_empty() {
            return Poll::Pending;
        }
    })
    .await;
    // Draining: every parked connection closes (with `slab`), and so does any parked
    // from now on.
    let late = {
        let mut arrived = lock(&set.arrived);
        arrived.0 = true;
        std::mem::take(&mut arrived.1)
    };
    // A node's waker sits in its socket's registration and the node holds the
    // socket: take each socket out, or neither would ever be freed.
    for node in slab.entries.drain(..).flatten() {
        drop(lock(&node.parked).take());
    }
    drop(late);
}
