//! Rules for `[services.<name>.watch]`: how long the new slot is watched after the
//! switch and which triggers roll it back. No trigger at all is valid.

use std::time::Duration;

use super::model::{ErrorRateTrigger, LatencyTrigger, WatchConfig};
use super::raw::{RawErrorRate, RawLatencyTrigger, RawWatch};
use super::read::{join, read, read_opt, Problems, Read, Sub};
use super::rules::{duration, int_range, positive, show};

pub(super) fn watch(
    service_at: &str,
    sub: Option<&Sub<RawWatch>>,
    p: &mut Problems,
) -> Option<WatchConfig> {
    let r = read_opt(sub, &join(service_at, "watch"), p)?;
    let d = WatchConfig::default();
    let total = duration(&r, "duration", r.raw.duration, d.duration);
    let window = duration(&r, "window", r.raw.window, d.window)
        .and_then(|v| positive(p, r.key("window"), v));
    let interval = duration(&r, "interval", r.raw.interval, d.interval)
        .and_then(|v| positive(p, r.key("interval"), v))
        .and_then(|v| match window {
            Some(w) if v > w => {
                p.add(
                    r.key("interval"),
                    format!(
                        "expected at most watch.window ({}), got {}",
                        show(w),
                        show(v)
                    ),
                );
                None
            }
            _ => Some(v),
        });
    let error_rate = r.optional("error_rate", r.raw.error_rate.as_ref(), |sub| {
        error_rate(&r.key("error_rate"), sub, p)
    });
    let p95 = r.optional("p95_latency", r.raw.p95_latency.as_ref(), |sub| {
        latency(&r.key("p95_latency"), sub, p)
    });
    let health_failures = r
        .or(
            "health_failures",
            r.raw.health_failures,
            i64::from(d.health_failures),
        )
        .and_then(|v| int_range(p, r.key("health_failures"), v, 0, i64::from(u32::MAX)))
        .map(|v| v as u32);
    Some(WatchConfig {
        duration: total?,
        interval: interval?,
        window: window?,
        error_rate: error_rate?,
        p95_latency: p95?,
        health_failures: health_failures?,
    })
}

fn min_requests<T>(r: &Read<T>, value: Option<i64>, p: &mut Problems) -> Option<u64> {
    let default = ErrorRateTrigger::DEFAULT_MIN_REQUESTS as i64;
    r.or("min_requests", value, default)
        .and_then(|v| int_range(p, r.key("min_requests"), v, 0, i64::MAX))
        .map(|v| v as u64)
}

fn error_rate(at: &str, sub: &Sub<RawErrorRate>, p: &mut Problems) -> Option<ErrorRateTrigger> {
    let r = read::<RawErrorRate>(sub.value(), at, p)?;
    let max = r
        .required("max", r.raw.max, "a fraction like 0.05 or \"5%\"", p)
        .and_then(|m| {
            if m.0 > 0.0 && m.0 <= 1.0 {
                Some(m.0)
            } else {
                p.add(
                    r.key("max"),
                    format!(
                        "expected a share greater than 0 and at most 1 (0.05 or \"5%\"), got {}",
                        m.0
                    ),
                );
                None
            }
        });
    let for_ = duration(&r, "for", r.raw.for_, Duration::ZERO);
    let min_requests = min_requests(&r, r.raw.min_requests, p);
    Some(ErrorRateTrigger {
        max: max?,
        for_: for_?,
        min_requests: min_requests?,
    })
}

fn latency(at: &str, sub: &Sub<RawLatencyTrigger>, p: &mut Problems) -> Option<LatencyTrigger> {
    let r = read::<RawLatencyTrigger>(sub.value(), at, p)?;
    let max = r
        .required("max", r.raw.max, "a duration like \"500ms\"", p)
        .and_then(|m| positive(p, r.key("max"), m.0));
    let for_ = duration(&r, "for", r.raw.for_, Duration::ZERO);
    let min_requests = min_requests(&r, r.raw.min_requests, p);
    Some(LatencyTrigger {
        max: max?,
        for_: for_?,
        min_requests: min_requests?,
    })
}
