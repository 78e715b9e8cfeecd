//! The I/O half of the analysis: one metric measured once, by its provider.
//!
//! Every provider turns "could not read the metric" into `Verdict::Error` (counted
//! against `consecutive_error_limit`) and never panics or hangs: each call is bounded
//! by [`call_timeout`].

mod builtin;
mod command;
mod prometheus;
mod webhook;

use std::time::Duration;

use super::{MeasureContext, Measurement, Verdict};
use crate::config::{MetricConfig, MetricProvider};

pub(super) async fn measure(metric: &MetricConfig, ctx: &MeasureContext) -> Measurement {
    match &metric.provider {
        MetricProvider::Builtin {
            signal,
            min_requests,
        } => builtin::measure(metric, *signal, *min_requests, ctx),
        MetricProvider::Prometheus {
            address,
            query,
            tls,
        } => prometheus::measure(metric, address, query, tls, ctx).await,
        MetricProvider::Command { argv, numeric } => {
            command::measure(metric, argv, *numeric, ctx).await
        }
        MetricProvider::Webhook {
            url,
            method,
            headers,
            body,
            json_value,
            tls,
        } => {
            let req = webhook::Gate {
                url,
                method,
                headers,
                body: body.as_deref(),
                json_value: json_value.as_deref(),
                tls,
            };
            webhook::measure(metric, req, ctx).await
        }
    }
}

/// Time one external call (query, command, webhook) may take: the measurement
/// interval, within 1s..=30s, so a slow provider cannot stretch a round much past its
/// interval.
pub(super) fn call_timeout(ctx: &MeasureContext) -> Duration {
    ctx.interval
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// `{service}`, `{version}`, `{slot}` (the slot judged), `{stable_slot}` (the other
/// one, or "" without one).
pub(super) fn substitute(text: &str, ctx: &MeasureContext, slot: crate::domain::Slot) -> String {
    text.replace("{service}", &ctx.service)
        .replace("{version}", &ctx.version)
        .replace("{slot}", slot.as_str())
        .replace("{stable_slot}", ctx.stable.map_or("", |s| s.as_str()))
}

pub(super) fn error(metric: &MetricConfig, detail: impl Into<String>) -> Measurement {
    Measurement {
        metric: metric.name.clone(),
        value: None,
        verdict: Verdict::Error,
        detail: detail.into(),
    }
}

pub(super) fn verdict(
    metric: &MetricConfig,
    verdict: Verdict,
    detail: impl Into<String>,
) -> Measurement {
    Measurement {
        metric: metric.name.clone(),
        value: None,
        verdict,
        detail: detail.into(),
    }
}
