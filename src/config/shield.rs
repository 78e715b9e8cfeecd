//! `[services.<name>.shield]` and `[services.<name>.burst]`: what the proxy does on
//! its own, in the data plane, while a deployment's new release takes traffic and the
//! previous one still runs.
//!
//! The shield retries a request that failed on the new slot once on the previous slot
//! (the failure still counts against the new release). It is on by default only for
//! connection failures: a request that never reached the new release cannot have
//! been half-done by it, whatever its method. Retrying on a status is opt-in, for
//! idempotent methods only. The burst trigger switches traffic back from the worker
//! that saw the N-th failure, without waiting for the watch's next sample; it is off
//! unless configured.

use std::time::Duration;

use serde::Deserialize;

use super::read::{join, read_opt, Problems, Sub};
use super::rules::{duration, http_method, int_range, positive, status};
use super::values::{RawDuration, RawFraction};

/// When a request to the new slot is retried on the previous one.
#[derive(Debug, Clone, PartialEq)]
pub struct ShieldConfig {
    /// Retry at all. Default on.
    pub enabled: bool,
    /// Retry when the new slot could not be connected to (refused, unreachable) before
    /// any byte of the request was sent; any method. Default on.
    pub on_connect: bool,
    /// Retry an idempotent request the new slot answered with one of `statuses`.
    /// Default off.
    pub on_status: bool,
    /// Default 502, 503, 504.
    pub statuses: Vec<u16>,
    /// Methods treated as idempotent besides GET, HEAD and OPTIONS (upper case).
    pub methods: Vec<String>,
    /// Retries allowed: this share of the requests to the new slot over `window`...
    pub budget: f64,
    /// ...but at least this many per window. Default 10.
    pub budget_min: u32,
    /// Default 10s.
    pub window: Duration,
    /// Largest request body kept for a retry; bigger or streamed bodies are never
    /// retried. Default 64 KiB.
    pub max_body: u64,
}

impl ShieldConfig {
    pub const DEFAULT_BUDGET: f64 = 0.10;
    pub const DEFAULT_BUDGET_MIN: u32 = 10;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
    /// The largest `max_body` accepted: the body is held in memory per request.
    pub const MAX_MAX_BODY: u64 = 1024 * 1024;
}

impl Default for ShieldConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            on_connect: true,
            on_status: false,
            statuses: vec![502, 503, 504],
            methods: Vec::new(),
            budget: Self::DEFAULT_BUDGET,
            budget_min: Self::DEFAULT_BUDGET_MIN,
            window: Self::DEFAULT_WINDOW,
            max_body: Self::DEFAULT_MAX_BODY,
        }
    }
}

/// The data plane's own rollback trigger on the new slot. A failure is what the
/// analysis counts: a 5xx from the upstream or an upstream failure (refused, reset,
/// timed out); never a client's fault.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstConfig {
    /// Fire at this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Fire when this share of the last `window` requests failed...
    pub failure_ratio: Option<f64>,
    /// Default 20 requests.
    pub window: u32,
    /// ...once at least this many were seen. Default 10.
    pub min_requests: u32,
}

impl BurstConfig {
    pub const DEFAULT_WINDOW: u32 = 20;
    pub const DEFAULT_MIN_REQUESTS: u32 = 10;
    /// The ring of outcomes is kept per deployment: bounded.
    pub const MAX_WINDOW: u32 = 10_000;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShield {
    pub enabled: Option<bool>,
    pub retry_on: Option<Vec<String>>,
    pub statuses: Option<Vec<i64>>,
    pub methods: Option<Vec<String>>,
    pub budget: Option<RawFraction>,
    pub budget_min: Option<i64>,
    pub budget_window: Option<RawDuration>,
    pub max_body: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBurst {
    pub consecutive_failures: Option<i64>,
    pub failure_ratio: Option<RawFraction>,
    pub window: Option<i64>,
    pub min_requests: Option<i64>,
}

pub(super) fn shield(
    service_at: &str,
    sub: Option<&Sub<RawShield>>,
    p: &mut Problems,
) -> Option<ShieldConfig> {
    let r = read_opt(sub, &join(service_at, "shield"), p)?;
    let d = ShieldConfig::default();
    let enabled = r.or("enabled", r.raw.enabled, d.enabled);
    let retry_on = r.optional("retry_on", r.raw.retry_on.as_ref(), |list| {
        let mut on = (false, false);
        let mut ok = true;
        for item in list {
            match item.as_str() {
                "connect" => on.0 = true,
                "status" => on.1 = true,
                other => {
                    p.add(
                        r.key("retry_on"),
                        format!("expected \"connect\" and/or \"status\", got {other:?}"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(on)
    });
    let statuses = r.optional("statuses", r.raw.statuses.as_ref(), |list| {
        let mut out = Vec::new();
        for &s in list {
            let s = status(p, r.key("statuses"), s)?;
            if s < 500 {
                p.add(
                    r.key("statuses"),
                    format!("expected 5xx statuses (a 4xx is the client's answer), got {s}"),
                );
                return None;
            }
            out.push(s);
        }
        Some(out)
    });
    let methods = r.optional("methods", r.raw.methods.as_ref(), |list| {
        let out: Vec<_> = list
            .iter()
            .map(|m| http_method(p, r.key("methods"), m, "\"PUT\""))
            .collect();
        out.into_iter().collect::<Option<Vec<_>>>()
    });
    let budget = r.optional("budget", r.raw.budget, |b| {
        if (0.0..=1.0).contains(&b.0) {
            Some(b.0)
        } else {
            p.add(
                r.key("budget"),
                format!("expected a share from 0 to 1 (0.1 or \"10%\"), got {}", b.0),
            );
            None
        }
    });
    let budget_min = r
        .or("budget_min", r.raw.budget_min, i64::from(d.budget_min))
        .and_then(|v| int_range(p, r.key("budget_min"), v, 0, 1_000_000))
        .map(|v| v as u32);
    let window = duration(&r, "budget_window", r.raw.budget_window, d.window)
        .and_then(|v| positive(p, r.key("budget_window"), v));
    let max_body = r
        .or("max_body", r.raw.max_body, d.max_body as i64)
        .and_then(|v| {
            int_range(
                p,
                r.key("max_body"),
                v,
                0,
                ShieldConfig::MAX_MAX_BODY as i64,
            )
        })
        .map(|v| v as u64);
    let (on_connect, on_status) = retry_on?.unwrap_or((d.on_connect, d.on_status));
    Some(ShieldConfig {
        enabled: enabled?,
        on_connect,
        on_status,
        statuses: statuses?.unwrap_or(d.statuses),
        methods: methods?.unwrap_or_default(),
        budget: budget?.unwrap_or(d.budget),
        budget_min: budget_min?,
        window: window?,
        max_body: max_body?,
    })
}

/// `None` inside: no `[services.<name>.burst]` table, the trigger is off.
pub(super) fn burst(
    service_at: &str,
    sub: Option<&Sub<RawBurst>>,
    p: &mut Problems,
) -> Option<Option<BurstConfig>> {
    let Some(sub) = sub else { return Some(None) };
    let r = read_opt(Some(sub), &join(service_at, "burst"), p)?;
    let consecutive = r.optional("consecutive_failures", r.raw.consecutive_failures, |v| {
        int_range(p, r.key("consecutive_failures"), v, 1, 1_000_000).map(|v| v as u32)
    });
    let ratio = r.optional("failure_ratio", r.raw.failure_ratio, |f| {
        if f.0 > 0.0 && f.0 <= 1.0 {
            Some(f.0)
        } else {
            p.add(
                r.key("failure_ratio"),
                format!(
                    "expected a share greater than 0 and at most 1 (0.5 or \"50%\"), got {}",
                    f.0
                ),
            );
            None
        }
    });
    let window = r
        .or(
            "window",
            r.raw.window,
            i64::from(BurstConfig::DEFAULT_WINDOW),
        )
        .and_then(|v| int_range(p, r.key("window"), v, 1, i64::from(BurstConfig::MAX_WINDOW)))
        .map(|v| v as u32);
    let min_requests = r
        .or(
            "min_requests",
            r.raw.min_requests,
            i64::from(BurstConfig::DEFAULT_MIN_REQUESTS),
        )
        .and_then(|v| int_range(p, r.key("min_requests"), v, 1, i64::from(u32::MAX)))
        .map(|v| v as u32);
    let (consecutive, ratio) = (consecutive?, ratio?);
    if consecutive.is_none() && ratio.is_none() {
        p.add(
            r.key("consecutive_failures"),
            "missing: a burst trigger needs `consecutive_failures` and/or `failure_ratio`",
        );
        return None;
    }
    let (window, min_requests) = (window?, min_requests?);
    if ratio.is_some() && min_requests > window {
        p.add(
            r.key("min_requests"),
            format!("expected at most burst.window ({window}), got {min_requests}"),
        );
        return None;
    }
    Some(Some(BurstConfig {
        consecutive_failures: consecutive,
        failure_ratio: ratio,
        window,
        min_requests,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Sub<T> {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_shield_is_on_for_connection_failures_only_by_default() {
        let mut p = Problems::default();
        let s = shield("services.web", None, &mut p).unwrap();
        assert_eq!(p.count(), 0);
        assert!(s.enabled && s.on_connect && !s.on_status);
        assert_eq!(s.statuses, [502, 503, 504]);
        assert_eq!(s.max_body, 64 * 1024);
        assert_eq!(burst("services.web", None, &mut p), Some(None));
    }

    #[test]
    fn shield_mistakes_name_the_key_and_what_was_expected() {
        let mut p = Problems::default();
        let sub = parse::<RawShield>(
            "retry_on = [\"connect\", \"sometimes\"]\nstatuses = [404]\nbudget = 2.0\nmax_body = -1",
        );
        assert!(shield("services.web", Some(&sub), &mut p).is_none());
        let text = format!("{:?}", p.into_vec());
        for key in [
            "shield.retry_on",
            "shield.statuses",
            "shield.budget",
            "shield.max_body",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
    }

    #[test]
    fn a_burst_table_needs_a_rule_and_a_window_that_holds_its_minimum() {
        let mut p = Problems::default();
        let sub = parse::<RawBurst>("window = 5");
        assert!(burst("services.web", Some(&sub), &mut p).is_none());
        let sub = parse::<RawBurst>("failure_ratio = \"50%\"\nwindow = 5\nmin_requests = 6");
        assert!(burst("services.web", Some(&sub), &mut p).is_none());
        let text = format!("{:?}", p.into_vec());
        assert!(text.contains("burst.consecutive_failures"), "{text}");
        assert!(text.contains("burst.min_requests"), "{text}");
        let mut p = Problems::default();
        let sub = parse::<RawBurst>("consecutive_failures = 3");
        let b = burst("services.web", Some(&sub), &mut p).unwrap().unwrap();
        assert_eq!(b.consecutive_failures, Some(3));
        assert_eq!(b.failure_ratio, None);
    }
}
