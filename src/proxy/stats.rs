//! Per-slot request statistics, written by the proxy on every finished request and
//! read by the watch (rollback triggers) and by `/metrics`.
//!
//! Lock-free: plain atomics, one set per (service, slot), created once at boot and
//! shared through `Arc`, so recording a request never takes a lock and never allocates.
//! Readers take a [`StatsSnapshot`] (cumulative counters, defined in the domain leaf
//! with its arithmetic) and subtract two of them to get what happened in between.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::shield::RetryKind;
use crate::domain::stats::{StatsSnapshot, BUCKETS, LATENCY_BOUNDS_US};

/// How a proxied request ended, from the proxy's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (any status, 5xx included).
    Status(u16),
    /// The upstream could not be reached, reset the connection or timed out; the client
    /// got a 502/504 from the proxy. Counts as an error for rollback.
    UpstreamFailed,
    /// The client went away or sent something broken mid-request. Not the release's
    /// fault: never counts towards the error rate.
    ClientFailed,
    /// Cutover itself had no file descriptor left to reach the upstream (EMFILE or
    /// ENFILE: too many connections held open); the client got 503. Neither the
    /// release's fault nor the client's: not a request of the slot at all (so a flood
    /// of connections cannot push a healthy release's error rate up), only counted
    /// apart ([`SlotStats::overloaded`]).
    Overloaded,
}

#[derive(Debug, Default)]
pub struct SlotStats {
    requests: AtomicU64,
    /// Indexed by status class: 1xx..5xx → 0..4.
    status_class: [AtomicU64; 5],
    upstream_failed: AtomicU64,
    client_failed: AtomicU64,
    /// Requests answered 503 because Cutover ran out of descriptors ([`Outcome::Overloaded`]).
    overloaded: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
    in_flight: AtomicI64,
    /// Requests to this slot the shield retried on the previous slot, by
    /// [`RetryKind`] (kept out of the snapshot: the failures themselves are counted
    /// above like any other).
    shield_retries: [AtomicU64; 2],
}

/// Marks a request as in flight until dropped.
pub struct InFlight<'a>(&'a SlotStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Like [`InFlight`], but owns a handle on the counters, so it can travel with a
/// response body that outlives the handler that started the request.
#[derive(Debug)]
pub struct OwnedInFlight(Arc<SlotStats>);

impl OwnedInFlight {
    /// The counters this request is counted in.
    pub fn stats(&self) -> &SlotStats {
        &self.0
    }
}

impl Drop for OwnedInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SlotStats {
    /// Counts a request as in flight until the guard drops (the drain waits on this).
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// [`SlotStats::begin`] with an owned guard (one reference-count increment, no
    /// allocation).
    pub fn begin_owned(self: &Arc<Self>) -> OwnedInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        OwnedInFlight(Arc::clone(self))
    }

    /// Records one finished request. Call exactly once per request.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        if outcome == Outcome::Overloaded {
            let n = self.overloaded.fetch_add(1, Ordering::Relaxed) + 1;
            // 1, 10, 100, ...: said, but not once per request of a flood.
            if n.checked_ilog10().is_some_and(|e| 10u64.pow(e) == n) {
                tracing::warn!(
                    total = n,
                    "out of file descriptors: requests answered 503 and not counted against the release (raise the daemon's descriptor limit, or lower proxy.max_connections)"
                );
            }
            return;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Status(code) => {
                let class = (code / 100).clamp(1, 5) as usize - 1;
                self.status_class[class].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::UpstreamFailed => {
                self.upstream_failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::ClientFailed => {
                self.client_failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Overloaded => {}
        }
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let bucket = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// One request to this slot was retried on the previous slot.
    pub fn shield_retried(&self, kind: RetryKind) {
        self.shield_retries[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries so far, indexed by [`RetryKind::index`].
    pub fn shield_retries(&self) -> [u64; 2] {
        std::array::from_fn(|i| self.shield_retries[i].load(Ordering::Relaxed))
    }

    /// Requests answered 503 because Cutover ran out of descriptors.
    #[cfg(test)]
    fn overloaded(&self) -> u64 {
        self.overloaded.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            status_class: std::array::from_fn(|i| self.status_class[i].load(Ordering::Relaxed)),
            upstream_failed: self.upstream_failed.load(Ordering::Relaxed),
            client_failed: self.client_failed.load(Ordering::Relaxed),
            latency_buckets: std::array::from_fn(|i| {
                self.latency_buckets[i].load(Ordering::Relaxed)
            }),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_request_is_not_a_request_of_the_slot() {
        let s = SlotStats::default();
        s.record(Outcome::Overloaded, Duration::from_millis(1));
        s.record(Outcome::Status(200), Duration::from_millis(1));
        let snap = s.snapshot();
        assert_eq!(
            (snap.requests, snap.upstream_failed, snap.client_failed),
            (1, 0, 0)
        );
        assert_eq!(snap.latency_buckets.iter().sum::<u64>(), 1);
        assert_eq!(s.overloaded(), 1);
    }

    #[test]
    fn records_status_classes_and_failures_separately() {
        let s = SlotStats::default();
        s.record(Outcome::Status(200), Duration::from_millis(1));
        s.record(Outcome::Status(503), Duration::from_millis(1));
        s.record(Outcome::UpstreamFailed, Duration::from_millis(1));
        s.record(Outcome::ClientFailed, Duration::from_millis(1));
        let snap = s.snapshot();
        assert_eq!(snap.requests, 4);
        assert_eq!(snap.status_class, [0, 1, 0, 0, 1]);
        assert_eq!(snap.errors(), 2);
        assert_eq!(snap.judged(), 3);
        assert!((snap.error_rate() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn quantile_reports_the_bucket_bound_holding_the_rank() {
        let s = SlotStats::default();
        for _ in 0..94 {
            s.record(Outcome::Status(200), Duration::from_micros(800));
        }
        for _ in 0..6 {
            s.record(Outcome::Status(200), Duration::from_millis(400));
        }
        let snap = s.snapshot();
        assert_eq!(snap.quantile(0.50), Some(Duration::from_millis(1)));
        assert_eq!(snap.quantile(0.95), Some(Duration::from_millis(500)));
        assert_eq!(StatsSnapshot::default().quantile(0.95), None);
    }

    #[test]
    fn since_subtracts_and_in_flight_guard_counts() {
        let s = SlotStats::default();
        let before = s.snapshot();
        {
            let _g = s.begin();
            assert_eq!(s.in_flight(), 1);
            s.record(Outcome::Status(500), Duration::from_millis(3));
        }
        assert_eq!(s.in_flight(), 0);
        let delta = s.snapshot().since(&before);
        assert_eq!(delta.requests, 1);
        assert_eq!(delta.errors(), 1);
    }

    #[test]
    fn owned_in_flight_guard_counts_until_dropped() {
        let s = Arc::new(SlotStats::default());
        let a = s.begin_owned();
        let b = s.begin_owned();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(b.stats().in_flight(), 1);
        drop(b);
        assert_eq!(s.in_flight(), 0);
    }
}
