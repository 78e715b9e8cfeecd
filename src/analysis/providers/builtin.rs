//! Built-in signals: the proxy's own per-slot counters over the measurement interval
//! (`MeasureContext.canary_stats`, a delta), so a canary can be judged with no metrics
//! system at all.
//!
//! Fewer than `min_requests` judged requests is "not enough data" (an `Inconclusive`
//! the run only acts on when it would otherwise pass, see `AnalysisRun`): too few
//! requests make an error rate meaningless, and neither passing nor failing on them is
//! honest. The request rate itself has no minimum: a low rate is its signal.

use std::time::Duration;

use super::super::judge::{judge, Baseline};
use super::super::{MeasureContext, Measurement, Verdict, NOT_ENOUGH_DATA};
use crate::config::{BuiltinSignal, MetricConfig};
use crate::domain::stats::StatsSnapshot;

pub(super) fn measure(
    metric: &MetricConfig,
    signal: BuiltinSignal,
    min_requests: u64,
    ctx: &MeasureContext,
) -> Measurement {
    let canary = &ctx.canary_stats;
    let value = match value(signal, canary, ctx.interval, min_requests) {
        Ok(v) => v,
        Err(why) => {
            return Measurement {
                metric: metric.name.clone(),
                value: None,
                verdict: Verdict::Inconclusive,
                detail: format!("{NOT_ENOUGH_DATA}: {why}"),
            }
        }
    };
    let baseline = match (metric.max_increase_over_stable, &ctx.stable_stats) {
        (None, _) => Baseline::NotCompared,
        (Some(_), None) => Baseline::Missing("no stable slot"),
        (Some(_), Some(stable)) => match value_of(signal, stable, ctx.interval, min_requests) {
            Some(v) => Baseline::Value(v),
            None => Baseline::Missing("too few requests on the stable slot"),
        },
    };
    judge(metric, value, baseline)
}

fn value_of(signal: BuiltinSignal, s: &StatsSnapshot, interval: Duration, min: u64) -> Option<f64> {
    value(signal, s, interval, min).ok()
}

/// The signal's value, or why there is none.
fn value(
    signal: BuiltinSignal,
    s: &StatsSnapshot,
    interval: Duration,
    min_requests: u64,
) -> Result<f64, String> {
    if signal == BuiltinSignal::RequestRate {
        let secs = interval.as_secs_f64();
        return if secs > 0.0 {
            Ok(s.judged() as f64 / secs)
        } else {
            Err("empty interval".into())
        };
    }
    let judged = s.judged();
    if judged < min_requests.max(1) {
        return Err(format!("{judged} requests < min_requests {min_requests}"));
    }
    let q = match signal {
        BuiltinSignal::ErrorRate => return Ok(s.error_rate()),
        BuiltinSignal::P50Latency => 0.50,
        BuiltinSignal::P95Latency => 0.95,
        BuiltinSignal::P99Latency => 0.99,
        BuiltinSignal::RequestRate => unreachable!("handled above"),
    };
    s.quantile(q)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| "no latency recorded".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MetricProvider, Range};
    use crate::domain::Slot;
    use crate::proxy::stats::{Outcome, SlotStats};

    fn stats(ok: u64, errors: u64, latency: Duration) -> StatsSnapshot {
        let s = SlotStats::default();
        for _ in 0..ok {
            s.record(Outcome::Status(200), latency);
        }
        for _ in 0..errors {
            s.record(Outcome::Status(503), latency);
        }
        s.snapshot()
    }

    fn ctx(canary: StatsSnapshot, stable: Option<StatsSnapshot>) -> MeasureContext {
        MeasureContext {
            service: "web".into(),
            version: "v2".into(),
            canary: Slot::Green,
            stable: stable.map(|_| Slot::Blue),
            canary_stats: canary,
            stable_stats: stable,
            interval: Duration::from_secs(10),
        }
    }

    fn metric(signal: BuiltinSignal, max: Option<f64>, inc: Option<f64>) -> MetricConfig {
        MetricConfig {
            name: "sig".into(),
            provider: MetricProvider::Builtin {
                signal,
                min_requests: 20,
            },
            pass: Range { min: None, max },
            inconclusive: None,
            max_increase_over_stable: inc,
        }
    }

    #[test]
    fn builtin_signals_are_judged_from_the_interval_delta() {
        let ms = Duration::from_millis;
        let cases = [
            // (signal, canary stats, max, verdict, value)
            (
                BuiltinSignal::ErrorRate,
                stats(95, 5, ms(1)),
                0.05,
                Verdict::Pass,
                Some(0.05),
            ),
            (
                BuiltinSignal::ErrorRate,
                stats(90, 10, ms(1)),
                0.05,
                Verdict::Fail,
                Some(0.1),
            ),
            (
                BuiltinSignal::ErrorRate,
                stats(5, 5, ms(1)),
                0.05,
                Verdict::Inconclusive,
                None,
            ),
            (
                BuiltinSignal::P95Latency,
                stats(100, 0, ms(400)),
                0.25,
                Verdict::Fail,
                Some(0.5),
            ),
            (
                BuiltinSignal::P50Latency,
                stats(100, 0, ms(20)),
                0.25,
                Verdict::Pass,
                Some(0.025),
            ),
            (
                BuiltinSignal::RequestRate,
                stats(5, 0, ms(1)),
                1.0,
                Verdict::Pass,
                Some(0.5),
            ),
        ];
        for (signal, canary, max, verdict, value) in cases {
            let m = measure(
                &metric(signal, Some(max), None),
                signal,
                20,
                &ctx(canary, None),
            );
            assert_eq!(
                (m.verdict, m.value),
                (verdict, value),
                "{signal:?}: {}",
                m.detail
            );
        }
    }

    #[test]
    fn too_few_requests_is_not_enough_data_and_says_how_many() {
        let m = measure(
            &metric(BuiltinSignal::ErrorRate, Some(0.05), None),
            BuiltinSignal::ErrorRate,
            20,
            &ctx(stats(3, 0, Duration::ZERO), None),
        );
        assert!(m.is_not_enough_data());
        assert_eq!(m.detail, "not enough data: 3 requests < min_requests 20");
    }

    #[test]
    fn the_error_rate_may_rise_by_at_most_the_allowed_points_over_stable() {
        let m = metric(BuiltinSignal::ErrorRate, None, Some(0.01));
        let stable = stats(98, 2, Duration::ZERO); // 2 %
        let pass = measure(
            &m,
            BuiltinSignal::ErrorRate,
            20,
            &ctx(stats(97, 3, Duration::ZERO), Some(stable)),
        );
        assert_eq!(
            (pass.verdict, pass.detail.as_str()),
            (Verdict::Pass, "0.03 <= stable 0.02 + 0.01")
        );
        let fail = measure(
            &m,
            BuiltinSignal::ErrorRate,
            20,
            &ctx(stats(96, 4, Duration::ZERO), Some(stable)),
        );
        assert_eq!(
            (fail.verdict, fail.detail.as_str()),
            (Verdict::Fail, "0.04 > stable 0.02 + 0.01")
        );
    }
}
