//! Rules for how a release is judged: `health` (before traffic and during the watch),
//! `smoke` (declared requests against the idle slot) and `watch` (rollback triggers
//! after the switch). Absent sections get the defaults of the model's `Default` impls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::model::{
    ErrorRateTrigger, HealthCheck, HealthConfig, HttpProbe, JsonCondition, LatencyTrigger, Probe,
    SmokeConfig, SmokeStep, WatchConfig,
};
use super::raw::{
    RawCheck, RawErrorRate, RawHealth, RawHttpProbe, RawLatencyTrigger, RawSmoke, RawStep, RawWatch,
};
use super::read::{join, read, read_opt, Problems, Read, Sub};
use super::service::argv_ok;
use super::validate::{duration, int_range, positive, show};
use super::values::{is_identifier, template_vars, toml_to_json};

pub(super) fn health(
    service_at: &str,
    sub: Option<&Sub<RawHealth>>,
    p: &mut Problems,
) -> Option<HealthConfig> {
    let r = read_opt(sub, &join(service_at, "health"), p)?;
    let d = HealthConfig::default();
    let interval = duration(&r, "interval", r.raw.interval, d.interval)
        .and_then(|v| positive(p, r.key("interval"), v));
    let timeout = duration(&r, "timeout", r.raw.timeout, d.timeout)
        .and_then(|v| positive(p, r.key("timeout"), v));
    let deadline = duration(&r, "deadline", r.raw.deadline, d.deadline)
        .and_then(|v| positive(p, r.key("deadline"), v));
    let mut threshold = |field: &str, value: Option<i64>, default: u32| {
        r.or(field, value, i64::from(default))
            .and_then(|v| int_range(p, r.key(field), v, 1, i64::from(u32::MAX)))
            .map(|v| v as u32)
    };
    let healthy = threshold(
        "healthy_threshold",
        r.raw.healthy_threshold,
        d.healthy_threshold,
    );
    let unhealthy = threshold(
        "unhealthy_threshold",
        r.raw.unhealthy_threshold,
        d.unhealthy_threshold,
    );
    let checks = r.optional("checks", r.raw.checks.as_ref(), |subs| {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let checks: Vec<Option<HealthCheck>> = subs
            .iter()
            .enumerate()
            .map(|(i, sub)| check(&format!("{}[{i}]", r.key("checks")), i, sub, &mut seen, p))
            .collect();
        checks.into_iter().collect::<Option<Vec<_>>>()
    });
    Some(HealthConfig {
        interval: interval?,
        timeout: timeout?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
        deadline: deadline?,
        checks: checks?.unwrap_or_default(),
    })
}

/// Records `name` as used at index `i`; reports a duplicate at `key`.
fn unique_name(
    p: &mut Problems,
    key: String,
    name: &str,
    i: usize,
    seen: &mut BTreeMap<String, usize>,
    list: &str,
) -> Option<()> {
    if name.trim().is_empty() {
        p.add(key, "expected a non-empty name, got \"\"");
        return None;
    }
    if let Some(first) = seen.get(name) {
        p.add(
            key,
            format!("duplicate name {name:?}, already used by {list}[{first}]"),
        );
        return None;
    }
    seen.insert(name.to_string(), i);
    Some(())
}

fn check(
    at: &str,
    i: usize,
    sub: &Sub<RawCheck>,
    seen: &mut BTreeMap<String, usize>,
    p: &mut Problems,
) -> Option<HealthCheck> {
    let r = read::<RawCheck>(sub.value(), at, p)?;
    let name = r
        .required("name", r.raw.name.as_deref(), "a name like \"live\"", p)
        .and_then(|n| unique_name(p, r.key("name"), n, i, seen, "checks").map(|_| n.to_string()));
    let mut given: Vec<&str> = Vec::new();
    if r.raw.http.is_some() || r.rejected("http") {
        given.push("http");
    }
    if r.raw.tcp == Some(true) || r.rejected("tcp") {
        given.push("tcp");
    }
    if r.raw.command.is_some() || r.rejected("command") {
        given.push("command");
    }
    const ONE_OF: &str = "expected exactly one of `http = { path = \"/health\" }`, `tcp = true` or `command = [...]`";
    let probe = match given.as_slice() {
        [] => {
            p.add(at, format!("no probe, {ONE_OF}"));
            None
        }
        ["http"] => r
            .raw
            .http
            .as_ref()
            .and_then(|sub| http_probe(&r.key("http"), sub, p))
            .map(Probe::Http),
        ["tcp"] => (!r.rejected("tcp")).then_some(Probe::Tcp),
        ["command"] => r
            .raw
            .command
            .as_ref()
            .filter(|argv| argv_ok(p, &r.key("command"), argv))
            .map(|argv| Probe::Command(argv.clone())),
        several => {
            p.add(at, format!("found {}, {ONE_OF}", several.join(" and ")));
            None
        }
    };
    Some(HealthCheck {
        name: name?,
        probe: probe?,
    })
}

fn http_probe(at: &str, sub: &Sub<RawHttpProbe>, p: &mut Problems) -> Option<HttpProbe> {
    let r = read::<RawHttpProbe>(sub.value(), at, p)?;
    let path = r
        .required("path", r.raw.path.as_deref(), "a path like \"/health\"", p)
        .and_then(|path| url_path(p, r.key("path"), path));
    let status = r.optional("status", r.raw.status, |s| status(p, r.key("status"), s));
    let json = r.optional("json", r.raw.json.as_ref(), |m| {
        conditions(p, &r.key("json"), m)
    });
    Some(HttpProbe {
        path: path?,
        expect_status: status?,
        json: json?.unwrap_or_default(),
        body_contains: r.raw.body_contains.clone(),
    })
}

fn url_path(p: &mut Problems, key: String, path: &str) -> Option<String> {
    if path.starts_with('/') {
        return Some(path.to_string());
    }
    p.add(
        key,
        format!("expected a path starting with \"/\", got {path:?}"),
    );
    None
}

fn status(p: &mut Problems, key: String, status: i64) -> Option<u16> {
    int_range(p, key, status, 100, 599).map(|s| s as u16)
}

fn conditions(
    p: &mut Problems,
    key: &str,
    map: &BTreeMap<String, toml::Value>,
) -> Option<Vec<JsonCondition>> {
    let before = p.count();
    let mut out = Vec::new();
    for (path, value) in map {
        let k = join(key, path);
        if path.trim().is_empty() {
            p.add(
                &k,
                "expected a dotted JSON path like \"checks.database\", got \"\"",
            );
            continue;
        }
        match toml_to_json(value) {
            Ok(expected) => out.push(JsonCondition {
                path: path.clone(),
                expected,
            }),
            Err(m) => p.add(&k, m),
        }
    }
    (p.count() == before).then_some(out)
}

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
        .and_then(|m| {
            let upper = m.trim().to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(_) if !upper.is_empty() => Some(upper),
                _ => {
                    p.add(
                        r.key("method"),
                        format!("expected an HTTP method like \"GET\" or \"POST\", got {m:?}"),
                    );
                    None
                }
            }
        });
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

fn headers(
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
