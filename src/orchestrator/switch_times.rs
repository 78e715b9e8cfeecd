//! How long a switch takes inside the process, per service: from the moment the state
//! machine decides to move traffic (the step that yields the route change) to the
//! moment the router reports the new route in effect. In between: only the router's
//! apply (for the built-in proxy, one atomic swap of the routing snapshot; for nginx, a
//! config swap, `nginx -t` and a reload); the step's store transaction comes after it
//! (see `runner`).
//!
//! Why measure it here: outside the process a switch is only seen through an API call
//! and a probe request, whose own latency hides the switch. Exposed on `/metrics` as the
//! histogram `cutover_switch_duration_seconds`; microsecond buckets make "under 1 ms"
//! checkable.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Bucket upper bounds, in microseconds (plus +Inf).
pub const BOUNDS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000,
];

/// One service's switches so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchHistogram {
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
    /// Per bucket (not cumulative): `buckets[i]` counts switches ≤ `BOUNDS_US[i]` and
    /// above the previous bound; the last one is +Inf.
    pub buckets: [u64; BOUNDS_US.len() + 1],
}

/// Every service's switch times. Written once per switch, read at scrape time.
#[derive(Debug, Default)]
pub struct SwitchTimes {
    by_service: Mutex<BTreeMap<String, SwitchHistogram>>,
}

impl SwitchTimes {
    pub fn record(&self, service: &str, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let idx = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len());
        let mut all = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let h = all.entry(service.to_string()).or_default();
        h.count += 1;
        h.sum_us = h.sum_us.saturating_add(us);
        h.max_us = h.max_us.max(us);
        h.buckets[idx] += 1;
    }

    /// (service, histogram) in service order.
    pub fn snapshot(&self) -> Vec<(String, SwitchHistogram)> {
        let all = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_switch_lands_in_the_smallest_bucket_that_holds_it() {
        let t = SwitchTimes::default();
        t.record("web", Duration::from_micros(40));
        t.record("web", Duration::from_micros(1_000));
        t.record("web", Duration::from_micros(1_001));
        t.record("web", Duration::from_secs(60));
        t.record("api", Duration::from_micros(300));
        let snap = t.snapshot();
        assert_eq!(snap.len(), 2);
        let (name, web) = &snap[1];
        assert_eq!(name, "web");
        assert_eq!((web.count, web.max_us), (4, 60_000_000));
        assert_eq!(web.sum_us, 40 + 1_000 + 1_001 + 60_000_000);
        assert_eq!(web.buckets[0], 1, "40 µs ≤ 50 µs");
        assert_eq!(web.buckets[4], 1, "exactly 1 ms is in the 1 ms bucket");
        assert_eq!(web.buckets[5], 1, "1.001 ms is not");
        assert_eq!(web.buckets[BOUNDS_US.len()], 1, "60 s is in +Inf");
        assert_eq!(snap[0].1.buckets[3], 1, "api: 300 µs ≤ 500 µs");
    }
}
