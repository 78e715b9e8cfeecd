//! A slot's request counters at one moment, and the arithmetic the watch, the analysis
//! and `/metrics` do on them (deltas, error rate, latency quantiles).
//!
//! The proxy's atomics (`proxy/stats.rs`) produce these, the external routers build
//! them from their own statistics, and the pure state machine reads them; they live in
//! the domain leaf so none of those layers imports another for them.

use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the latency histogram buckets, in microseconds. The last bucket is
/// everything above the last bound.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 250_000, 500_000, 750_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

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
