//! Rules for `[services.<name>.analysis]` and its `[[...analysis.metrics]]`: which
//! metrics judge a release and how many rounds it takes.
//!
//! Each metric names exactly one provider (`builtin`, `prometheus`, `command`,
//! `webhook`). Range keys (`min`, `max`, `inconclusive`) are only accepted where the
//! provider yields a number, and `max_increase_over_stable` only where the same metric
//! can be read for the old slot too (built-in signals; a Prometheus query with
//! `{slot}`), so a key that would be silently ignored is an error instead.

use super::delivery::{AnalysisConfig, MetricConfig, MetricProvider, Range};
use super::metric_providers::{argv, builtin, prometheus, webhook};
use super::raw::{RawAnalysis, RawMetric, RawRange};
use super::read::{join, read, Problems, Read, Sub};
use super::rules::{duration, int_range, positive, unique_name};
use super::values::placeholders;

pub(super) fn analysis(
    service_at: &str,
    sub: Option<&Sub<RawAnalysis>>,
    p: &mut Problems,
) -> Option<Option<AnalysisConfig>> {
    let Some(sub) = sub else { return Some(None) };
    let r = read::<RawAnalysis>(sub.value(), &join(service_at, "analysis"), p)?;
    let interval = duration(
        &r,
        "interval",
        r.raw.interval,
        AnalysisConfig::DEFAULT_INTERVAL,
    )
    .and_then(|d| positive(p, r.key("interval"), d));
    let rounds = count(
        &r,
        "count",
        r.raw.count,
        AnalysisConfig::DEFAULT_COUNT,
        1,
        p,
    );
    let failure_limit = count(
        &r,
        "failure_limit",
        r.raw.failure_limit,
        AnalysisConfig::DEFAULT_FAILURE_LIMIT,
        0,
        p,
    );
    let consecutive_error_limit = count(
        &r,
        "consecutive_error_limit",
        r.raw.consecutive_error_limit,
        AnalysisConfig::DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        1,
        p,
    );
    let inconclusive_limit = count(
        &r,
        "inconclusive_limit",
        r.raw.inconclusive_limit,
        AnalysisConfig::DEFAULT_INCONCLUSIVE_LIMIT,
        1,
        p,
    );
    let metrics = r
        .required(
            "metrics",
            r.raw.metrics.as_ref(),
            "an array of [[...analysis.metrics]] tables",
            p,
        )
        .and_then(|subs| metrics(&r.key("metrics"), subs, p));
    Some(Some(AnalysisConfig {
        interval: interval?,
        count: rounds?,
        failure_limit: failure_limit?,
        consecutive_error_limit: consecutive_error_limit?,
        inconclusive_limit: inconclusive_limit?,
        metrics: metrics?,
    }))
}

fn count<T>(
    r: &Read<T>,
    field: &str,
    v: Option<i64>,
    default: u32,
    min: i64,
    p: &mut Problems,
) -> Option<u32> {
    r.or(field, v, i64::from(default))
        .and_then(|v| int_range(p, r.key(field), v, min, i64::from(u32::MAX)))
        .map(|v| v as u32)
}

fn metrics(key: &str, subs: &[Sub<RawMetric>], p: &mut Problems) -> Option<Vec<MetricConfig>> {
    if subs.is_empty() {
        p.add(key, "expected at least one metric, got []");
        return None;
    }
    let before = p.count();
    let mut seen = Default::default();
    let mut out = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        let at = format!("{key}[{i}]");
        if let Some(m) = metric(&at, sub, p) {
            if unique_name(p, join(&at, "name"), &m.name, i, &mut seen, "metrics").is_some() {
                out.push(m);
            }
        }
    }
    (p.count() == before).then_some(out)
}

/// What a provider yields, for the rules on range keys.
#[derive(PartialEq)]
enum Yields {
    /// A number compared with `min`/`max`.
    Number,
    /// Pass or fail only (exit code, HTTP status).
    Verdict,
}

fn metric(at: &str, sub: &Sub<RawMetric>, p: &mut Problems) -> Option<MetricConfig> {
    let r = read::<RawMetric>(sub.value(), at, p)?;
    let before = p.count();
    let name = r.required("name", r.raw.name.clone(), "a name like \"error-rate\"", p);
    let given: Vec<&str> = [
        ("builtin", r.raw.builtin.is_some()),
        ("prometheus", r.raw.prometheus.is_some()),
        ("command", r.raw.command.is_some()),
        ("webhook", r.raw.webhook.is_some()),
    ]
    .into_iter()
    .filter(|(k, set)| *set || r.rejected(k))
    .map(|(k, _)| k)
    .collect();
    let provider = match given.as_slice() {
        ["builtin"] => r
            .raw
            .builtin
            .as_ref()
            .and_then(|s| builtin(&r.key("builtin"), s, p)),
        ["prometheus"] => r
            .raw
            .prometheus
            .as_ref()
            .and_then(|s| prometheus(&r.key("prometheus"), s, p)),
        ["command"] => r.raw.command.as_ref().and_then(|a| {
            argv(p, &r.key("command"), a).map(|argv| MetricProvider::Command {
                argv,
                numeric: r.raw.numeric.unwrap_or(false),
            })
        }),
        ["webhook"] => r
            .raw
            .webhook
            .as_ref()
            .and_then(|s| webhook(&r.key("webhook"), s, p)),
        [] => {
            if !r.rejected("builtin") {
                p.add(at, "expected exactly one of `builtin = { signal = ... }`, `prometheus = { address, query }`, `command = [...]` or `webhook = { url }`, got none");
            }
            None
        }
        many => {
            p.add(
                at,
                format!(
                    "expected exactly one provider, got {} (keep one of them)",
                    many.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            None
        }
    };
    if r.raw.numeric.is_some() && !matches!(given.as_slice(), ["command"]) {
        p.add(
            r.key("numeric"),
            "`numeric` only applies to `command` metrics",
        );
    }
    let pass = Range {
        min: r.raw.min.map(|f| f.0),
        max: r.raw.max.map(|f| f.0),
    };
    if let (Some(lo), Some(hi)) = (pass.min, pass.max) {
        if lo > hi {
            p.add(
                r.key("min"),
                format!("expected min <= max, got min {lo} and max {hi}"),
            );
        }
    }
    let inconclusive = r.optional("inconclusive", r.raw.inconclusive.as_ref(), |sub| {
        let ir = read::<RawRange>(sub.value(), &r.key("inconclusive"), p)?;
        let range = Range {
            min: ir.raw.min.map(|f| f.0),
            max: ir.raw.max.map(|f| f.0),
        };
        if range.is_empty() && !ir.rejected("min") && !ir.rejected("max") {
            p.add(&ir.at, "expected `min`, `max` or both, got an empty table");
            return None;
        }
        Some(range)
    });
    let increase = r.raw.max_increase_over_stable.map(|f| f.0);
    if let Some(provider) = &provider {
        let yields = match provider {
            MetricProvider::Command { numeric: false, .. } => Yields::Verdict,
            MetricProvider::Webhook {
                json_value: None, ..
            } => Yields::Verdict,
            _ => Yields::Number,
        };
        let range_keys = [
            ("min", r.raw.min.is_some()),
            ("max", r.raw.max.is_some()),
            ("inconclusive", r.raw.inconclusive.is_some()),
        ];
        if yields == Yields::Verdict {
            for (k, set) in range_keys {
                if set {
                    p.add(r.key(k), format!(
                        "`{k}` needs a number, but this metric only passes or fails (set `numeric = true` on a command, or `json_value` on a webhook)"
                    ));
                }
            }
        } else if pass.is_empty() && increase.is_none() && !r.rejected("min") && !r.rejected("max")
        {
            p.add(at, "expected `min`, `max` or `max_increase_over_stable`: without a bound every value would pass");
        }
        let comparable = match provider {
            MetricProvider::Builtin { .. } => true,
            MetricProvider::Prometheus { query, .. } => placeholders(query).contains(&"slot"),
            _ => false,
        };
        if increase.is_some() && !comparable {
            p.add(r.key("max_increase_over_stable"), "compares with the old slot, so it needs a `builtin` metric or a `prometheus` query containing `{slot}` (run once per slot)");
        }
    }
    if increase.is_some_and(|v| v < 0.0) {
        p.add(r.key("max_increase_over_stable"), "expected a number >= 0");
    }
    let inconclusive = inconclusive?;
    if p.count() != before {
        return None;
    }
    Some(MetricConfig {
        name: name?,
        provider: provider?,
        pass,
        inconclusive,
        max_increase_over_stable: increase,
    })
}
