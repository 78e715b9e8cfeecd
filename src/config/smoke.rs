//! Rules for `[services.<name>.smoke]`: declared requests sent to the idle slot in
//! order, where a step may use (`{{name}}`) only what an earlier step captured.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{SmokeConfig, SmokeStep};
use super::raw::{RawSmoke, RawStep};
use super::read::{join, read, read_opt, Problems, Sub};
use super::rules::{conditions, duration, http_method, positive, status, unique_name, url_path};
use super::values::{is_identifier, template_vars};

pub(super) fn smoke(
    service_at: &str,
    sub: Option<&Sub<RawSmoke>>,
    p: &mut Problems,
) -> Option<SmokeConfig> {
    let r = read_opt(sub, &join(service_at, "smoke"), p)?;
    let d = SmokeConfig::default();
    let timeout = duration(&r, "timeout", r.raw.timeout, d.timeout)
        .and_then(|v| positive(p, r.key("timeout"), v));
    let avg = r.optional("max_avg_latency", r.raw.max_avg_latency, |v| {
        positive(p, r.key("max_avg_latency"), v.0)
    });
    let p95 = r.optional("max_p95_latency", r.raw.max_p95_latency, |v| {
        positive(p, r.key("max_p95_latency"), v.0)
    });
    let steps = r.optional("steps", r.raw.steps.as_ref(), |subs| {
        let mut seen = BTreeMap::new();
        let mut captured = BTreeSet::new();
        let steps: Vec<Option<SmokeStep>> = subs
            .iter()
            .enumerate()
            .map(|(i, sub)| {
                let at = format!("{}[{i}]", r.key("steps"));
                step(&at, i, sub, &mut seen, &mut captured, p)
            })
            .collect();
        steps.into_iter().collect::<Option<Vec<_>>>()
    });
    Some(SmokeConfig {
        steps: steps?.unwrap_or_default(),
        timeout: timeout?,
        max_avg_latency: avg?,
        max_p95_latency: p95?,
    })
}

fn step(
    at: &str,
    i: usize,
    sub: &Sub<RawStep>,
    seen: &mut BTreeMap<String, usize>,
    captured: &mut BTreeSet<String>,
    p: &mut Problems,
) -> Option<SmokeStep> {
    let r = read::<RawStep>(sub.value(), at, p)?;
    let name = r
        .required("name", r.raw.name.as_deref(), "a name like \"create\"", p)
        .and_then(|n| unique_name(p, r.key("name"), n, i, seen, "steps").map(|_| n.to_string()));
    let method = r
        .or("method", r.raw.method.as_deref(), "GET")
        .and_then(|m| http_method(p, r.key("method"), m, "\"GET\" or \"POST\""));
    let path = r
        .required("path", r.raw.path.as_deref(), "a path like \"/items\"", p)
        .and_then(|path| url_path(p, r.key("path"), path));
    let headers = r.optional("headers", r.raw.headers.as_ref(), |h| {
        headers(p, &r.key("headers"), h)
    });
    let expect_status = r.optional("expect_status", r.raw.expect_status, |s| {
        status(p, r.key("expect_status"), s)
    });
    let expect_json = r.optional("expect_json", r.raw.expect_json.as_ref(), |m| {
        conditions(p, &r.key("expect_json"), m)
    });

    // `{{var}}` must come from an earlier step's capture, not this one's.
    let mut uses: Vec<(String, &str)> = Vec::new();
    uses.extend(r.raw.path.iter().map(|s| (r.key("path"), s.as_str())));
    for (h, v) in r.raw.headers.iter().flatten() {
        uses.push((join(&r.key("headers"), h), v.as_str()));
    }
    uses.extend(r.raw.body.iter().map(|s| (r.key("body"), s.as_str())));
    let mut vars_ok = true;
    for (key, text) in uses {
        for var in template_vars(text) {
            if !captured.contains(var) {
                vars_ok = false;
                let so_far = if captured.is_empty() {
                    "none".to_string()
                } else {
                    captured.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                p.add(&key, format!(
                    "uses `{{{{{var}}}}}`, but no earlier step captures `{var}` (captured so far: {so_far})"
                ));
            }
        }
    }

    let capture = r.optional("capture", r.raw.capture.as_ref(), |c| {
        let before = p.count();
        for (var, json_path) in c {
            let key = join(&r.key("capture"), var);
            if !is_identifier(var) {
                p.add(
                    &key,
                    format!("expected a variable name like \"item_id\", got {var:?}"),
                );
            }
            if json_path.trim().is_empty() {
                p.add(
                    &key,
                    "expected a dotted JSON path like \"id\" or \"items.0.id\", got \"\"",
                );
            }
        }
        (p.count() == before).then(|| c.clone())
    });
    captured.extend(r.raw.capture.iter().flat_map(|c| c.keys().cloned()));

    if !vars_ok {
        return None;
    }
    Some(SmokeStep {
        name: name?,
        method: method?,
        path: path?,
        headers: headers?.unwrap_or_default(),
        body: r.raw.body.clone(),
        expect_status: expect_status?,
        expect_body_contains: r.raw.expect_body_contains.clone(),
        expect_json: expect_json?.unwrap_or_default(),
        capture: capture?.unwrap_or_default(),
    })
}

/// Header names (lower-cased) and values; shared with HTTP hooks (`hooks.rs`).
pub(super) fn headers(
    p: &mut Problems,
    key: &str,
    headers: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let before = p.count();
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let k = join(key, name);
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            p.add(
                &k,
                format!("expected a header name like \"content-type\", got {name:?}"),
            );
        } else if http::HeaderValue::from_str(value).is_err() {
            p.add(
                &k,
                format!("expected a header value of visible characters, got {value:?}"),
            );
        } else if out.insert(lower, value.clone()).is_some() {
            p.add(
                &k,
                format!("header {name:?} is given twice (names are case-insensitive)"),
            );
        }
    }
    (p.count() == before).then_some(out)
}
