//! The rollback policy: turns a stream of per-slot statistics samples into a verdict.
//!
//! Pure (samples carry their own timestamps) so every threshold is a table-driven test.
//! Rates are computed over a trailing window; a trigger fires only when its condition
//! has held continuously for its `for_` duration and the window holds enough requests,
//! so one unlucky request at low traffic never rolls a release back.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::WatchConfig;
use crate::domain::stats::StatsSnapshot;

/// Milliseconds on the deployment's own clock (the runner's monotonic time).
pub type Ms = u64;

/// What one evaluation of the window saw.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowView {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p95: Option<Duration>,
}

/// Keeps recent samples and the time each trigger started breaching.
#[derive(Debug, Clone)]
pub struct WatchPolicy {
    cfg: WatchConfig,
    samples: VecDeque<(Ms, StatsSnapshot)>,
    error_breach_since: Option<Ms>,
    latency_breach_since: Option<Ms>,
    health_failures: u32,
    last_view: Option<WindowView>,
}

impl WatchPolicy {
    pub fn new(cfg: WatchConfig) -> Self {
        Self {
            cfg,
            samples: VecDeque::new(),
            error_breach_since: None,
            latency_breach_since: None,
            health_failures: 0,
            last_view: None,
        }
    }

    /// The most recent window evaluation (for progress display).
    pub fn last_view(&self) -> Option<&WindowView> {
        self.last_view.as_ref()
    }

    /// Adds a cumulative sample taken at `now`; returns the reason to roll back, if any.
    pub fn sample(&mut self, now: Ms, snap: StatsSnapshot) -> Option<String> {
        self.samples.push_back((now, snap));
        let window = self.cfg.window.as_millis() as Ms;
        // Keep exactly one sample at or before the window start as the baseline.
        while self.samples.len() > 2 && now.saturating_sub(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
        let (_, base) = self.samples.front()?;
        let delta = snap.since(base);
        let view = WindowView {
            requests: delta.judged(),
            errors: delta.errors(),
            error_rate: delta.error_rate(),
            p95: delta.quantile(0.95),
        };
        self.last_view = Some(view.clone());

        if let Some(t) = &self.cfg.error_rate {
            let breach = view.requests >= t.min_requests && view.error_rate > t.max;
            if let Some(since) = track(&mut self.error_breach_since, breach, now) {
                if now - since >= t.for_.as_millis() as Ms {
                    return Some(format!(
                        "error rate {:.1}% > {:.1}% for {} ({} of {} requests failed in the last {})",
                        view.error_rate * 100.0,
                        t.max * 100.0,
                        fmt_dur(Duration::from_millis(now - since)),
                        view.errors,
                        view.requests,
                        fmt_dur(self.cfg.window),
                    ));
                }
            }
        }
        if let Some(t) = &self.cfg.p95_latency {
            let p95 = view.p95.unwrap_or_default();
            let breach = view.requests >= t.min_requests && p95 > t.max;
            if let Some(since) = track(&mut self.latency_breach_since, breach, now) {
                if now - since >= t.for_.as_millis() as Ms {
                    return Some(format!(
                        "p95 latency {} > {} for {} ({} requests in the last {})",
                        fmt_dur(p95),
                        fmt_dur(t.max),
                        fmt_dur(Duration::from_millis(now - since)),
                        view.requests,
                        fmt_dur(self.cfg.window),
                    ));
                }
            }
        }
        None
    }

    /// Records one health round of the live new slot; returns the reason to roll back
    /// once `health_failures` consecutive rounds failed.
    pub fn health(&mut self, ok: bool, detail: &str) -> Option<String> {
        if ok {
            self.health_failures = 0;
            return None;
        }
        self.health_failures += 1;
        let limit = self.cfg.health_failures;
        (limit > 0 && self.health_failures >= limit).then(|| {
            format!(
                "health checks failed {} times in a row: {detail}",
                self.health_failures
            )
        })
    }
}

/// Updates a breach start time; returns it while the breach holds.
fn track(since: &mut Option<Ms>, breach: bool, now: Ms) -> Option<Ms> {
    if breach {
        Some(*since.get_or_insert(now))
    } else {
        *since = None;
        None
    }
}

/// `1.5s`, `250ms`, `2m`: short, for reasons and progress lines.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        let s = ms as f64 / 1000.0;
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{s:.1}s")
        }
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ErrorRateTrigger;

    fn cfg() -> WatchConfig {
        WatchConfig {
            duration: Duration::from_secs(60),
            interval: Duration::from_secs(1),
            window: Duration::from_secs(3),
            error_rate: Some(ErrorRateTrigger {
                max: 0.10,
                for_: Duration::ZERO,
                min_requests: 10,
            }),
            p95_latency: None,
            health_failures: 0,
        }
    }

    fn snap(requests: u64, errors: u64) -> StatsSnapshot {
        let mut s = StatsSnapshot {
            requests,
            ..Default::default()
        };
        s.status_class[1] = requests - errors;
        s.status_class[4] = errors;
        s.latency_buckets[0] = requests;
        s
    }

    #[test]
    fn errors_older_than_the_window_no_longer_count() {
        let mut p = WatchPolicy::new(cfg());
        assert_eq!(p.sample(0, snap(0, 0)), None);
        // A burst of 5 errors in 50 requests is 10%: not above the limit.
        assert_eq!(p.sample(1_000, snap(50, 5)), None);
        // Four clean seconds later the burst has left the 3s window.
        for (t, n) in [(2_000, 100), (3_000, 150), (4_000, 200), (5_000, 250)] {
            assert_eq!(p.sample(t, snap(n, 5)), None);
        }
        let view = p.last_view().unwrap();
        assert_eq!(view.errors, 0, "the window holds only the last 3s");
        assert_eq!(view.requests, 150);
    }

    #[test]
    fn with_a_zero_duration_the_first_breaching_sample_fires_and_names_the_numbers() {
        let mut p = WatchPolicy::new(cfg());
        p.sample(0, snap(0, 0));
        let why = p.sample(1_000, snap(20, 3)).expect("15% > 10%");
        assert!(why.starts_with("error rate 15.0% > 10.0%"), "{why}");
        assert!(why.contains("3 of 20 requests"), "{why}");
    }

    #[test]
    fn client_aborts_are_not_counted_against_the_release() {
        let mut p = WatchPolicy::new(cfg());
        p.sample(0, snap(0, 0));
        let mut s = snap(20, 0);
        s.client_failed = 15;
        assert_eq!(p.sample(1_000, s), None);
        assert_eq!(p.last_view().unwrap().requests, 5);
    }

    #[test]
    fn health_failures_are_counted_consecutively_and_zero_disables() {
        let mut c = cfg();
        c.health_failures = 2;
        let mut p = WatchPolicy::new(c.clone());
        assert_eq!(p.health(false, "x"), None);
        assert_eq!(p.health(true, ""), None);
        assert_eq!(p.health(false, "x"), None);
        assert!(p
            .health(false, "503")
            .unwrap()
            .contains("2 times in a row: 503"));
        c.health_failures = 0;
        let mut p = WatchPolicy::new(c);
        assert!((0..10).all(|_| p.health(false, "x").is_none()));
    }

    #[test]
    fn durations_are_formatted_for_people() {
        assert_eq!(fmt_dur(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_dur(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_dur(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_dur(Duration::from_secs(300)), "5m0s");
    }
}
