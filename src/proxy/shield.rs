//! The data plane's guard over a deployment's new slot: the shield (retry a failed
//! request once on the previous release) and the burst trigger (switch traffic back
//! from the worker that saw the failure that crossed the threshold).
//!
//! # Why here, not in the control plane
//! The watch samples statistics on a timer; between two samples a release that fails
//! every request fails every client that reaches it. The proxy sees each failure as it
//! happens: it can give the client the previous release's answer at once, and it can
//! swap the routing table itself (one `ArcSwap` store, no await) and tell the
//! controller afterwards, which then ends the deployment rolled back through the same
//! path an analysis-driven rollback takes.
//!
//! # Rules (what keeps it honest and hostile-safe)
//! - A [`Guard`] exists only while a previous release runs beside the new one: set by
//!   the deployment's runner (through the built-in router) just before traffic first
//!   reaches the new slot, removed when the previous slot stops or a new deployment
//!   begins. No previous release, no guard, no retry.
//! - Only normal traffic chosen for the guard's new slot is guarded; preview traffic
//!   and requests to the previous slot never are.
//! - Every failure stays recorded against the new slot (its `SlotStats`, which the
//!   watch, the analysis and `/metrics` read); the retry is a second, separate request
//!   recorded on the previous slot, and counted in `shield_retries`.
//! - A client's fault (4xx, a client that left or stalled) is neither a failure for
//!   the trigger nor ever retried.
//! - Retries are bounded by a [`Budget`]: a share of the guarded requests over a
//!   sliding window plus a small minimum, so a failing release can never double the
//!   previous release's load. Once the trigger fired, the few requests still in flight
//!   to the new slot are retried outside the budget: all traffic goes to the previous
//!   slot by then anyway.
//! - The trigger fires at most once per guard (one guard per deployment) and only while
//!   armed: from the first request to the new slot until the watch ends.
//!
//! Nothing here takes a lock on the request path: atomics only.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use http::{Method, StatusCode};

use super::stats::Outcome;
use super::table::Routes;
use super::upstream::Upstream;
use crate::config::{BurstConfig, ShieldConfig};
use crate::domain::Slot;

/// Why a request was retried on the previous slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// The new slot could not be connected to; nothing was sent.
    Connect,
    /// The new slot answered an idempotent request with a retryable status.
    Status,
}

impl RetryKind {
    pub const ALL: [RetryKind; 2] = [RetryKind::Connect, RetryKind::Status];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RetryKind::Connect => "connect",
            RetryKind::Status => "status",
        }
    }
}

/// One deployment's guard over its new slot. Lives in the routing snapshot
/// (`ServiceEntry::guard`), so the request path sees it with the route it routes by.
#[derive(Debug)]
pub struct Guard {
    service: String,
    /// The slot under guard (the deployment's target).
    pub new: Upstream,
    /// Where a failed request is retried, and where traffic goes back to.
    pub previous: Upstream,
    shield: ShieldConfig,
    budget: Budget,
    trigger: Option<Trigger>,
    trigger_armed: AtomicBool,
    tripped: AtomicBool,
    report: OnceLock<String>,
    notify: tokio::sync::Notify,
    routes: Weak<Routes>,
    clock: Instant,
}

impl Guard {
    pub fn new(
        service: &str,
        new: Upstream,
        previous: Upstream,
        shield: &ShieldConfig,
        burst: Option<&BurstConfig>,
        routes: &Arc<Routes>,
    ) -> Self {
        Self {
            service: service.to_string(),
            new,
            previous,
            budget: Budget::new(shield),
            shield: shield.clone(),
            trigger: burst.map(Trigger::new),
            trigger_armed: AtomicBool::new(burst.is_some()),
            tripped: AtomicBool::new(false),
            report: OnceLock::new(),
            notify: tokio::sync::Notify::new(),
            routes: Arc::downgrade(routes),
            clock: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// A request was sent to the new slot (the budget's denominator).
    pub fn admitted(&self) {
        self.budget.deposit(self.now_ms());
    }

    /// The method may be retried after a status (GET, HEAD, OPTIONS, or configured).
    pub fn idempotent(&self, method: &Method) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            || self.shield.methods.iter().any(|m| m == method.as_str())
    }

    /// Whether a request with this method may be retried after some status at all.
    pub fn status_retry_possible(&self, method: &Method) -> bool {
        self.shield.enabled && self.shield.on_status && self.idempotent(method)
    }

    /// The largest body kept for a retry.
    pub fn max_body(&self) -> u64 {
        self.shield.max_body
    }

    /// Whether the shield retries at all.
    pub fn retries(&self) -> bool {
        self.shield.enabled && (self.shield.on_connect || self.shield.on_status)
    }

    /// Whether this answer to an idempotent request is one to retry.
    pub fn retry_status(&self, status: StatusCode) -> bool {
        self.shield.statuses.contains(&status.as_u16())
    }

    /// Asks for one retry of `kind`: allowed by the config and within the budget (or
    /// the trigger already fired). Counted in the new slot's `shield_retries` if so.
    pub fn take_retry(&self, kind: RetryKind) -> bool {
        let wanted = self.shield.enabled
            && match kind {
                RetryKind::Connect => self.shield.on_connect,
                RetryKind::Status => self.shield.on_status,
            };
        if !wanted {
            return false;
        }
        let ok = self.tripped.load(Ordering::Acquire) || self.budget.try_take(self.now_ms());
        if ok {
            self.new.stats.shield_retried(kind);
        }
        ok
    }

    /// One request to the new slot ended (called by its `Recorder`, exactly once).
    pub fn observe(&self, outcome: Outcome) {
        let failed = match outcome {
            Outcome::Status(code) => code >= 500,
            Outcome::UpstreamFailed => true,
            Outcome::ClientFailed | Outcome::Overloaded => return,
        };
        let Some(trigger) = &self.trigger else { return };
        if !self.trigger_armed.load(Ordering::Acquire) {
            return;
        }
        if let Some(why) = trigger.observe(failed, self.new.slot) {
            self.trip(why);
        }
    }

    /// Switches traffic back (once) and tells whoever waits in [`Guard::tripped`].
    fn trip(&self, why: String) {
        if self.tripped.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(routes) = self.routes.upgrade() {
            routes.trip(&self.service, self);
        }
        tracing::warn!(service = %self.service, slot = %self.new.slot, %why, "burst trigger fired; traffic switched back");
        let _ = self.report.set(why);
        self.notify.notify_one();
    }

    /// Ends the trigger's watch (the deployment's watch passed); the shield goes on.
    pub fn disarm_trigger(&self) {
        self.trigger_armed.store(false, Ordering::Release);
    }

    pub fn has_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// Waits until the trigger fired; the reason (names the trigger and its counts).
    pub async fn tripped(&self) -> String {
        loop {
            if let Some(why) = self.report.get() {
                return why.clone();
            }
            self.notify.notified().await;
        }
    }
}

/// Buckets of the budget's sliding window.
const BUCKETS: u64 = 10;

/// Retries allowed: `share` of the guarded requests over the last window (in
/// `BUCKETS` steps), and at least `min` per window. Approximate under races (two
/// workers may both take the last retry): a budget, not an invariant.
#[derive(Debug)]
pub struct Budget {
    share: f64,
    min: u64,
    width_ms: u64,
    buckets: [Bucket; BUCKETS as usize],
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket period (1-based) the counts belong to.
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Budget {
    pub fn new(c: &ShieldConfig) -> Self {
        Self {
            share: c.budget,
            min: u64::from(c.budget_min),
            width_ms: (c.window.as_millis() as u64 / BUCKETS).max(1),
            buckets: Default::default(),
        }
    }

    fn epoch(&self, now_ms: u64) -> u64 {
        now_ms / self.width_ms + 1
    }

    fn bucket(&self, now_ms: u64) -> &Bucket {
        let e = self.epoch(now_ms);
        let b = &self.buckets[(e % BUCKETS) as usize];
        let old = b.epoch.load(Ordering::Acquire);
        if old != e
            && b.epoch
                .compare_exchange(old, e, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// (requests, retries) in the window ending at `now_ms`.
    fn totals(&self, now_ms: u64) -> (u64, u64) {
        let e = self.epoch(now_ms);
        let oldest = e.saturating_sub(BUCKETS - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=e).contains(&b.epoch.load(Ordering::Acquire)))
            .fold((0, 0), |(req, ret), b| {
                (
                    req + b.requests.load(Ordering::Relaxed),
                    ret + b.retries.load(Ordering::Relaxed),
                )
            })
    }

    pub fn deposit(&self, now_ms: u64) {
        self.bucket(now_ms).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry if the window still allows one.
    pub fn try_take(&self, now_ms: u64) -> bool {
        let (requests, retries) = self.totals(now_ms);
        let allowed = ((requests as f64 * self.share) as u64).max(self.min);
        if retries >= allowed {
            return false;
        }
        self.bucket(now_ms).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The burst trigger's state: failures in a row, and a ring of the last `window`
/// outcomes with its failure count.
#[derive(Debug)]
pub struct Trigger {
    consecutive: Option<u32>,
    ratio: Option<f64>,
    min: u32,
    run: AtomicU32,
    seen: AtomicU64,
    failed_total: AtomicU64,
    ring: Box<[AtomicBool]>,
    ring_failed: AtomicU32,
}

impl Trigger {
    pub fn new(c: &BurstConfig) -> Self {
        Self {
            consecutive: c.consecutive_failures,
            ratio: c.failure_ratio,
            min: c.min_requests,
            run: AtomicU32::new(0),
            seen: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
            ring: (0..c.window.max(1))
                .map(|_| AtomicBool::new(false))
                .collect(),
            ring_failed: AtomicU32::new(0),
        }
    }

    /// Takes one outcome; the reason when this one crossed a threshold.
    pub fn observe(&self, failed: bool, slot: Slot) -> Option<String> {
        let n = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
        let total_failed = self
            .failed_total
            .fetch_add(u64::from(failed), Ordering::AcqRel)
            + u64::from(failed);
        let run = if failed {
            self.run.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.run.store(0, Ordering::Release);
            0
        };
        let m = self.ring.len() as u64;
        let old = self.ring[((n - 1) % m) as usize].swap(failed, Ordering::AcqRel);
        let in_ring = match (old, failed) {
            (false, true) => self.ring_failed.fetch_add(1, Ordering::AcqRel) + 1,
            (true, false) => self.ring_failed.fetch_sub(1, Ordering::AcqRel) - 1,
            _ => self.ring_failed.load(Ordering::Acquire),
        };
        if let Some(limit) = self.consecutive {
            if failed && run == limit {
                return Some(format!(
                    "burst trigger: {run} consecutive failures on {slot} \
                     ({total_failed} of {n} requests failed)"
                ));
            }
        }
        if let Some(ratio) = self.ratio {
            let window = n.min(m);
            if failed
                && window >= u64::from(self.min)
                && f64::from(in_ring) >= ratio * window as f64
            {
                return Some(format!(
                    "burst trigger: {in_ring} of the last {window} requests on {slot} failed \
                     (limit {:.0}%; {total_failed} of {n} requests failed)",
                    ratio * 100.0
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(share: f64, min: u32) -> Budget {
        Budget::new(&ShieldConfig {
            budget: share,
            budget_min: min,
            window: Duration::from_secs(10),
            ..Default::default()
        })
    }

    #[test]
    fn the_budget_allows_its_minimum_then_its_share_of_requests() {
        let b = budget(0.10, 2);
        assert!(b.try_take(0) && b.try_take(0), "the minimum");
        assert!(!b.try_take(0), "nothing more without requests");
        for _ in 0..50 {
            b.deposit(10);
        }
        assert!(b.try_take(10) && b.try_take(10) && b.try_take(10));
        assert!(!b.try_take(10), "10% of 50 = 5 retries in the window");
    }

    #[test]
    fn the_budget_window_slides_and_old_retries_stop_counting() {
        let b = budget(0.0, 1);
        assert!(b.try_take(0));
        assert!(!b.try_take(9_000), "still in the 10s window");
        assert!(b.try_take(10_500), "the first bucket left the window");
        assert!(!b.try_take(10_600));
        // Requests age out too.
        let b = budget(0.5, 0);
        for _ in 0..4 {
            b.deposit(0);
        }
        assert!(b.try_take(1_000));
        assert!(!b.try_take(30_000), "the requests left the window");
    }

    fn trigger(consecutive: Option<u32>, ratio: Option<f64>, window: u32, min: u32) -> Trigger {
        Trigger::new(&BurstConfig {
            consecutive_failures: consecutive,
            failure_ratio: ratio,
            window,
            min_requests: min,
        })
    }

    #[test]
    fn consecutive_failures_fire_at_exactly_n_and_a_success_resets_the_run() {
        let t = trigger(Some(3), None, 20, 10);
        assert!(t.observe(true, Slot::Green).is_none());
        assert!(t.observe(true, Slot::Green).is_none());
        assert!(t.observe(false, Slot::Green).is_none(), "reset");
        assert!(t.observe(true, Slot::Green).is_none());
        assert!(t.observe(true, Slot::Green).is_none());
        let why = t.observe(true, Slot::Green).unwrap();
        assert!(why.contains("3 consecutive failures on green"), "{why}");
        assert!(why.contains("5 of 6 requests failed"), "{why}");
    }

    #[test]
    fn the_ratio_counts_only_the_last_m_requests_and_waits_for_the_minimum() {
        let t = trigger(None, Some(0.5), 4, 4);
        assert!(t.observe(true, Slot::Blue).is_none(), "below the minimum");
        assert!(t.observe(true, Slot::Blue).is_none());
        assert!(t.observe(false, Slot::Blue).is_none());
        let why = t.observe(true, Slot::Blue).unwrap();
        assert!(why.contains("3 of the last 4"), "{why}");
        // A fresh trigger: old failures leave the window of 4.
        let t = trigger(None, Some(0.75), 4, 4);
        for failed in [true, true, false, false, false, false] {
            assert!(t.observe(failed, Slot::Blue).is_none());
        }
        assert!(t.observe(true, Slot::Blue).is_none(), "1 of the last 4");
        assert!(t.observe(true, Slot::Blue).is_none(), "2 of the last 4");
        assert!(t.observe(true, Slot::Blue).is_some(), "3 of the last 4");
    }
}
