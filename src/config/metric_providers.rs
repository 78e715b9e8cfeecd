//! Readers of one metric's provider table (`builtin`, `prometheus`, `webhook`, the
//! `command` argv) and their placeholder rules; the URL and header rules they share
//! with `notify.rs` are in `rules.rs`.

use super::client_tls::client_tls;
use super::delivery::{BuiltinSignal, MetricProvider};
use super::raw::{RawBuiltin, RawPrometheus, RawWebhookMetric};
use super::read::{read, Problems, Sub};
use super::rules::{headers, http_url, int_range, METRIC_PLACEHOLDERS};
use super::values::placeholders;

pub(super) const SIGNALS: &str =
    "\"request_rate\", \"error_rate\", \"p50_latency\", \"p95_latency\" or \"p99_latency\"";

pub(super) const DEFAULT_MIN_REQUESTS: i64 = 20;

pub(super) fn builtin(at: &str, sub: &Sub<RawBuiltin>, p: &mut Problems) -> Option<MetricProvider> {
    let r = read::<RawBuiltin>(sub.value(), at, p)?;
    let signal = r
        .required("signal", r.raw.signal.as_deref(), SIGNALS, p)
        .and_then(|s| {
            let signal = match s {
                "request_rate" => BuiltinSignal::RequestRate,
                "error_rate" => BuiltinSignal::ErrorRate,
                "p50_latency" => BuiltinSignal::P50Latency,
                "p95_latency" => BuiltinSignal::P95Latency,
                "p99_latency" => BuiltinSignal::P99Latency,
                other => {
                    p.add(
                        r.key("signal"),
                        format!("expected {SIGNALS}, got {other:?}"),
                    );
                    return None;
                }
            };
            Some(signal)
        });
    let min_requests = r
        .or("min_requests", r.raw.min_requests, DEFAULT_MIN_REQUESTS)
        .and_then(|v| int_range(p, r.key("min_requests"), v, 0, i64::MAX))
        .map(|v| v as u64);
    Some(MetricProvider::Builtin {
        signal: signal?,
        min_requests: min_requests?,
    })
}

pub(super) fn prometheus(
    at: &str,
    sub: &Sub<RawPrometheus>,
    p: &mut Problems,
) -> Option<MetricProvider> {
    let r = read::<RawPrometheus>(sub.value(), at, p)?;
    let address = r
        .required(
            "address",
            r.raw.address.as_deref(),
            "a URL like \"http://127.0.0.1:9090\"",
            p,
        )
        .and_then(|a| http_url(p, r.key("address"), a))
        .map(|a| a.trim_end_matches('/').to_string());
    let query = r
        .required("query", r.raw.query.clone(), "a PromQL expression", p)
        .and_then(|q| {
            if q.trim().is_empty() {
                p.add(r.key("query"), "expected a PromQL expression, got \"\"");
                return None;
            }
            known_placeholders(p, [(r.key("query"), q.as_str())]).map(|_| q)
        });
    let tls = client_tls(
        &r,
        r.raw.ca_file.as_deref(),
        r.raw.tls_insecure_skip_verify,
        p,
    );
    Some(MetricProvider::Prometheus {
        address: address?,
        query: query?,
        tls: tls?,
    })
}

pub(super) fn webhook(
    at: &str,
    sub: &Sub<RawWebhookMetric>,
    p: &mut Problems,
) -> Option<MetricProvider> {
    let r = read::<RawWebhookMetric>(sub.value(), at, p)?;
    let url = r
        .required(
            "url",
            r.raw.url.as_deref(),
            "a URL like \"http://ci.example/approve\"",
            p,
        )
        .and_then(|u| http_url(p, r.key("url"), u))
        .and_then(|u| known_placeholders(p, [(r.key("url"), u)]).map(|_| u.to_string()));
    let method = r
        .or("method", r.raw.method.clone(), "GET".to_string())
        .and_then(|m| {
            let upper = m.trim().to_ascii_uppercase();
            if upper.is_empty() || http::Method::from_bytes(upper.as_bytes()).is_err() {
                p.add(
                    r.key("method"),
                    format!("expected an HTTP method like \"POST\", got {m:?}"),
                );
                return None;
            }
            Some(upper)
        });
    let headers = r.optional("headers", r.raw.headers.clone(), |h| {
        headers(p, &r.key("headers"), h)
    });
    let body = r.optional("body", r.raw.body.clone(), |b| {
        known_placeholders(p, [(r.key("body"), b.as_str())]).map(|_| b)
    });
    let json_value = r.optional("json_value", r.raw.json_value.clone(), |j| {
        if j.trim().is_empty() {
            p.add(
                r.key("json_value"),
                "expected a dotted JSON path like \"score\", got \"\"",
            );
            return None;
        }
        Some(j)
    });
    let tls = client_tls(
        &r,
        r.raw.ca_file.as_deref(),
        r.raw.tls_insecure_skip_verify,
        p,
    );
    Some(MetricProvider::Webhook {
        url: url?,
        method: method?,
        headers: headers?.unwrap_or_default(),
        body: body?,
        json_value: json_value?,
        tls: tls?,
    })
}

/// Every `{name}` in `texts` is one we substitute; `texts` are (key, text) pairs.
pub(super) fn known_placeholders<'a>(
    p: &mut Problems,
    texts: impl IntoIterator<Item = (String, &'a str)>,
) -> Option<()> {
    let before = p.count();
    for (key, text) in texts {
        for name in placeholders(text) {
            if !METRIC_PLACEHOLDERS.contains(&name) {
                p.add(&key, format!(
                    "unknown placeholder `{{{name}}}`, expected one of: {{service}}, {{version}}, {{slot}}, {{stable_slot}}"
                ));
            }
        }
    }
    (p.count() == before).then_some(())
}

/// A non-empty argv with a program name and known placeholders.
pub(super) fn argv(p: &mut Problems, key: &str, argv: &[String]) -> Option<Vec<String>> {
    match argv.first() {
        None => {
            p.add(
                key,
                "expected a non-empty argv like [\"./check.sh\", \"{version}\"], got []",
            );
            return None;
        }
        Some(program) if program.trim().is_empty() => {
            p.add(format!("{key}[0]"), "expected a program name, got \"\"");
            return None;
        }
        Some(_) => {}
    }
    known_placeholders(
        p,
        argv.iter()
            .enumerate()
            .map(|(i, a)| (format!("{key}[{i}]"), a.as_str())),
    )
    .map(|_| argv.to_vec())
}
