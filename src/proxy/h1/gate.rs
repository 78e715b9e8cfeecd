//! A future polled again only once it has asked to be: [`Gated`].
//!
//! Why: the fast path's connection task waits on the listener's state (`draining`,
//! `stopped`: a `tokio::sync::watch`) beside every client read and every upstream
//! exchange, so it polls those waits at each of its wake-ups, two to four per request.
//! A pending `watch` wait takes the channel's waiter lock on every poll to re-check its
//! waker; callgrind counted about 900 instructions per request for it, about a
//! sixteenth of the fast path's own (BENCHMARKS.md). The state changes once in a process's life.
//! Polled through a [`Gated`], the wait is polled once, with a waker of its own, and
//! again only after that waker was woken: between, a poll is an atomic swap and the
//! task's waker stored.
//!
//! Correctness rests on the `Future` contract: a future that returned `Pending` wakes
//! the waker of its last poll when it can progress. The inner future always gets the
//! same waker (this gate's), so it needs no poll merely because the task's waker
//! changed; the gate keeps the task's latest waker and wakes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `inner`, polled only on its first poll and after it woke its waker.
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker the inner future gets (`flag`'s), made once.
    waker: Waker,
}

/// Set when the inner future's waker is woken (and at first, so the first poll reaches
/// it); wakes the task that polls the gate.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // The task's waker first, then the flag: a wake between the two is seen by the
        // swap, one after it wakes the waker just stored.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, waking the waker it was last given.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A task waker that counts its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_again_only_after_it_woke_and_its_wake_reaches_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut gated = Box::pin(Gated::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        }));
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll reaches it");
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "unwoken, it is not polled");

        // A spurious wake: polled once more, pending again, then quiet again.
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "its wake woke the task");
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);

        // The task's waker changes: the wake goes to the latest one.
        let task2 = Arc::new(Count(AtomicUsize::new(0)));
        let waker2 = Waker::from(task2.clone());
        assert!(gated
            .as_mut()
            .poll(&mut Context::from_waker(&waker2))
            .is_pending());
        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake_by_ref();
        assert_eq!(task2.0.load(Ordering::SeqCst), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(gated
            .as_mut()
            .poll(&mut Context::from_waker(&waker2))
            .is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gated_watch_wait_ends_when_the_value_changes() {
        let (tx, mut rx) = tokio::sync::watch::channel(0u8);
        let wait = Gated::new(async move {
            let _ = rx.wait_for(|v| *v == 2).await;
        });
        let mut wait = Box::pin(wait);
        tokio::select! {
            biased;
            () = &mut wait => panic!("ended before the change"),
            () = tokio::task::yield_now() => {}
        }
        tx.send(1).unwrap();
        tokio::select! {
            biased;
            () = &mut wait => panic!("ended on a value it does not wait for"),
            () = tokio::task::yield_now() => {}
        }
        tx.send(2).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("the gated wait ends once the value it waits for is sent");
    }
}
