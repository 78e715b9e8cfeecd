//! Readers of one metric's provider table (`builtin`, `prometheus`, `webhook`, the
//! `command` argv) and the URL/header/placeholder rules they share with `notify.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::analysis::{DEFAULT_MIN_REQUESTS, METRIC_PLACEHOLDERS, SIGNALS};
use super::delivery::{BuiltinSignal, MetricProvider};
use super::read::{join, read, Problems, Sub};
use super::validate::int_range;
use super::values::placeholders;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    pub signal: Option<String>,
    pub min_requests: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    pub address: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhookMetric {
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub json_value: Option<String>,
}

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
    Some(MetricProvider::Prometheus {
        address: address?,
        query: query?,
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
    Some(MetricProvider::Webhook {
        url: url?,
        method: method?,
        headers: headers?.unwrap_or_default(),
        body: body?,
        json_value: json_value?,
    })
}

/// Header names and values that HTTP accepts.
pub(super) fn headers(
    p: &mut Problems,
    key: &str,
    h: std::collections::BTreeMap<String, String>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let before = p.count();
    for (name, value) in &h {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(
                join(key, name),
                format!("expected a header name like \"authorization\", got {name:?}"),
            );
        } else if http::HeaderValue::from_str(value).is_err() {
            p.add(
                join(key, name),
                "expected a header value of visible ASCII characters",
            );
        }
    }
    (p.count() == before).then_some(h)
}

/// An `http://` URL with a host. `https://` is refused: Cutover has no TLS client.
pub(super) fn http_url<'a>(p: &mut Problems, key: String, url: &'a str) -> Option<&'a str> {
    // Placeholders are substituted before sending; judge the URL's shape without them.
    let mut shape = url.to_string();
    for name in METRIC_PLACEHOLDERS {
        shape = shape.replace(&format!("{{{name}}}"), "x");
    }
    let parsed = shape.parse::<http::Uri>();
    match parsed {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Some(url),
        Ok(uri) if uri.scheme_str() == Some("https") => {
            p.add(key, format!(
                "https is not supported yet (Cutover has no TLS client), got {url:?}; use an http:// URL, e.g. a local relay"
            ));
            None
        }
        _ => {
            p.add(
                key,
                format!("expected a URL like \"http://127.0.0.1:9090\", got {url:?}"),
            );
            None
        }
    }
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
