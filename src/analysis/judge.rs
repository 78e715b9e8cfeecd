//! A measured value against a metric's ranges: the verdict and the sentence people
//! read (`0.72 > max 0.5`). Pure, shared by every numeric provider.

use super::{Measurement, Verdict};
use crate::config::{num, MetricConfig};

/// The stable slot's value of the same metric, when the metric compares against it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Baseline {
    /// The metric has no `max_increase_over_stable`.
    NotCompared,
    Value(f64),
    /// The metric compares, but the stable slot's value could not be had (no stable
    /// slot, or too little traffic on it); the detail says why.
    Missing(&'static str),
}

/// Judges `value` for `metric`: inside `pass` (and within `max_increase_over_stable` of
/// the baseline) passes; otherwise inside `inconclusive` is inconclusive; else fails.
pub(super) fn judge(metric: &MetricConfig, value: f64, baseline: Baseline) -> Measurement {
    let mut reasons: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let has_range = !metric.pass.is_empty();
    if has_range {
        let text = metric.pass.explain(value);
        if metric.pass.contains(value) {
            notes.push(text);
        } else {
            reasons.push(text);
        }
    }
    if let Some(inc) = metric.max_increase_over_stable {
        match baseline {
            Baseline::Value(old) => {
                let limit = old + inc;
                if value > limit + f64::EPSILON * limit.abs().max(1.0) {
                    reasons.push(format!(
                        "{} > stable {} + {}",
                        num(value),
                        num(old),
                        num(inc)
                    ));
                } else {
                    notes.push(format!(
                        "{} <= stable {} + {}",
                        num(value),
                        num(old),
                        num(inc)
                    ));
                }
            }
            Baseline::Missing(why) if !has_range => {
                return Measurement {
                    metric: metric.name.clone(),
                    value: Some(value),
                    verdict: Verdict::Inconclusive,
                    detail: format!(
                        "{}: {why}, cannot compare {}",
                        super::NOT_ENOUGH_DATA,
                        num(value)
                    ),
                };
            }
            Baseline::Missing(why) => notes.push(format!("not compared with stable ({why})")),
            Baseline::NotCompared => {}
        }
    }
    let (verdict, detail) = if reasons.is_empty() {
        (Verdict::Pass, notes.join("; "))
    } else if metric.inconclusive.is_some_and(|r| r.contains(value)) {
        let detail = format!("{} (inconclusive range)", reasons.join("; "));
        (Verdict::Inconclusive, detail)
    } else {
        (Verdict::Fail, reasons.join("; "))
    };
    Measurement {
        metric: metric.name.clone(),
        value: Some(value),
        verdict,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MetricProvider, Range};

    fn metric(pass: Range, inconclusive: Option<Range>, inc: Option<f64>) -> MetricConfig {
        MetricConfig {
            name: "m".into(),
            provider: MetricProvider::Command {
                argv: vec!["true".into()],
                numeric: true,
            },
            pass,
            inconclusive,
            max_increase_over_stable: inc,
        }
    }

    const MAX_HALF: Range = Range {
        min: None,
        max: Some(0.5),
    };

    #[test]
    fn values_are_judged_against_pass_then_inconclusive_ranges() {
        let cases = [
            // (value, inconclusive range, verdict, detail)
            (0.4, None, Verdict::Pass, "0.4 <= max 0.5"),
            (0.5, None, Verdict::Pass, "0.5 <= max 0.5"),
            (0.72, None, Verdict::Fail, "0.72 > max 0.5"),
            (
                0.72,
                Some(Range {
                    min: None,
                    max: Some(0.8),
                }),
                Verdict::Inconclusive,
                "0.72 > max 0.5 (inconclusive range)",
            ),
            (
                0.9,
                Some(Range {
                    min: None,
                    max: Some(0.8),
                }),
                Verdict::Fail,
                "0.9 > max 0.5",
            ),
        ];
        for (value, inconclusive, verdict, detail) in cases {
            let m = judge(
                &metric(MAX_HALF, inconclusive, None),
                value,
                Baseline::NotCompared,
            );
            assert_eq!(
                (m.verdict, m.detail.as_str()),
                (verdict, detail),
                "value {value}"
            );
            assert_eq!(m.value, Some(value));
        }
    }

    #[test]
    fn the_new_slot_is_compared_with_the_stable_one() {
        let m = metric(Range::default(), None, Some(0.01));
        let cases = [
            (
                0.02,
                Baseline::Value(0.015),
                Verdict::Pass,
                "0.02 <= stable 0.015 + 0.01",
            ),
            (
                0.03,
                Baseline::Value(0.015),
                Verdict::Fail,
                "0.03 > stable 0.015 + 0.01",
            ),
            (
                0.03,
                Baseline::Missing("no stable slot"),
                Verdict::Inconclusive,
                "not enough data: no stable slot, cannot compare 0.03",
            ),
        ];
        for (value, baseline, verdict, detail) in cases {
            let got = judge(&m, value, baseline);
            assert_eq!(
                (got.verdict, got.detail.as_str()),
                (verdict, detail),
                "{baseline:?}"
            );
        }
        // With an absolute bound too, a missing baseline falls back to the bound.
        let both = metric(MAX_HALF, None, Some(0.01));
        let got = judge(&both, 0.2, Baseline::Missing("no stable slot"));
        assert_eq!(got.verdict, Verdict::Pass);
        assert_eq!(
            got.detail,
            "0.2 <= max 0.5; not compared with stable (no stable slot)"
        );
        let got = judge(&both, 0.45, Baseline::Value(0.1));
        assert_eq!(
            (got.verdict, got.detail.as_str()),
            (Verdict::Fail, "0.45 > stable 0.1 + 0.01")
        );
    }
}
