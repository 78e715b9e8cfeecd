//! Per-slot request statistics, written by the proxy on every finished request and
//! read by the watch (rollback triggers) and by `/metrics`.
//!
//! Lock-free: plain atomics, one set per (service, slot), created once at boot and
//! shared through `Arc`, so recording a request never takes a lock and never allocates.
//! Readers take a [`StatsSnapshot`] (cumulative counters) and subtract two of them to
//! get what happened in between.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the latency histogram buckets, in microseconds. The last bucket is
/// everything above the last bound.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 250_000, 500_000, 750_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

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
}

#[derive(Debug, Default)]
pub struct SlotStats {
    requests: AtomicU64,
    /// Indexed by status class: 1xx..5xx → 0..4.
    status_class: [AtomicU64; 5],
    upstream_failed: AtomicU64,
    client_failed: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
    in_flight: AtomicI64,
}

/// Cumulative counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub status_class: [u64; 5],
    pub upstream_failed: u64,
    pub client_failed: u64,
    pub latency_buckets: [u64; BUCKETS],
    pub latency_sum_us: u64,
    pub in_flight: i64,
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
        }
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let bucket = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
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

impl StatsSnapshot {
    /// What happened between `earlier` and `self` (counters saturate at zero).
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            status_class: std::array::from_fn(|i| {
                self.status_class[i].saturating_sub(earlier.status_class[i])
            }),
            upstream_failed: self.upstream_failed.saturating_sub(earlier.upstream_failed),
            client_failed: self.client_failed.saturating_sub(earlier.client_failed),
            latency_buckets: std::array::from_fn(|i| {
                self.latency_buckets[i].saturating_sub(earlier.latency_buckets[i])
            }),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
            in_flight: self.in_flight,
        }
    }

    /// Requests that count against the release: 5xx answers and upstream failures.
    pub fn errors(&self) -> u64 {
        self.status_class[4] + self.upstream_failed
    }

    /// Requests the release is judged on (client aborts excluded).
    pub fn judged(&self) -> u64 {
        self.requests.saturating_sub(self.client_failed)
    }

    /// Share of judged requests that failed; 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        match self.judged() {
            0 => 0.0,
            n => self.errors() as f64 / n as f64,
        }
    }

    /// Upper bound of the bucket holding the `q` quantile (0 < q ≤ 1); `None` when empty.
    /// Conservative: the true quantile is at most this.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let us = LATENCY_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] * 2);
                return Some(Duration::from_micros(us));
            }
        }
        None
    }

    pub fn mean_latency(&self) -> Option<Duration> {
        let total: u64 = self.latency_buckets.iter().sum();
        (total > 0).then(|| Duration::from_micros(self.latency_sum_us / total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
