//! Smoke tests: a scripted sequence of requests against one slot before it gets traffic.
//!
//! Steps run in order and may capture values from a response (`id` from
//! `POST /items`) for later steps (`GET /items/{{id}}`), so a smoke test can exercise a
//! real create → read → update → delete flow instead of a single GET. The first failed
//! step ends the run; when all pass, the latency budget is applied to the whole run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use ::http::{HeaderMap, Method};
use bytes::Bytes;
use serde_json::Value;

use super::health::{judge, Expectations};
use super::http::ProbeRequest;
use super::{human_duration, json_path, CheckResult, ProbeTarget, SmokeReport};
use crate::config::{SmokeConfig, SmokeStep};

/// Runs every step, then the latency budget. See [`super::smoke`].
pub async fn run(cfg: &SmokeConfig, target: &ProbeTarget) -> SmokeReport {
    let mut vars = BTreeMap::new();
    let mut results = Vec::with_capacity(cfg.steps.len());
    for step in &cfg.steps {
        let started = Instant::now();
        let outcome = run_step(step, target, cfg.timeout, &mut vars).await;
        let ok = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|why| why);
        results.push(CheckResult {
            name: step.name.clone(),
            ok,
            detail: detail.clone(),
            duration: started.elapsed(),
        });
        if !ok {
            return SmokeReport {
                results,
                passed: false,
                failure: Some(format!("step `{}`: {detail}", step.name)),
                avg_latency: None,
                p95_latency: None,
            };
        }
    }
    let latencies: Vec<Duration> = results.iter().map(|r| r.duration).collect();
    let (avg, p95) = match (average(&latencies), p95(&latencies)) {
        (Some(avg), Some(p95)) => (avg, p95),
        _ => {
            return SmokeReport {
                results,
                passed: true,
                failure: None,
                avg_latency: None,
                p95_latency: None,
            }
        }
    };
    let mut over = Vec::new();
    if let Some(budget) = cfg.max_avg_latency.filter(|b| avg > *b) {
        over.push(format!(
            "average latency {} is over max_avg_latency {}",
            human_duration(avg),
            human_duration(budget)
        ));
    }
    if let Some(budget) = cfg.max_p95_latency.filter(|b| p95 > *b) {
        over.push(format!(
            "p95 latency {} is over max_p95_latency {}",
            human_duration(p95),
            human_duration(budget)
        ));
    }
    SmokeReport {
        results,
        passed: over.is_empty(),
        failure: (!over.is_empty()).then(|| over.join("; ")),
        avg_latency: Some(avg),
        p95_latency: Some(p95),
    }
}

/// `Ok(what was seen)` or `Err(why the step failed)`; stores captures in `vars`.
async fn run_step(
    step: &SmokeStep,
    target: &ProbeTarget,
    timeout: Duration,
    vars: &mut BTreeMap<String, String>,
) -> Result<String, String> {
    let req = build_request(step, vars)?;
    let resp = target.send(req, timeout).await.map_err(|e| e.to_string())?;
    let expect = Expectations {
        status: step.expect_status,
        body_contains: step.expect_body_contains.as_deref(),
        json: &step.expect_json,
    };
    let mut seen = judge(&expect, &resp)?;
    if step.capture.is_empty() {
        return Ok(seen);
    }
    let doc: Value = serde_json::from_slice(&resp.body).map_err(|e| {
        let names: Vec<&str> = step.capture.keys().map(String::as_str).collect();
        format!(
            "cannot capture {}: the response is not JSON ({e})",
            names.join(", ")
        )
    })?;
    for (name, path) in &step.capture {
        let value = json_path::get(&doc, path).ok_or_else(|| {
            format!("cannot capture `{name}`: the response has no value at `{path}`")
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        seen.push_str(&format!(", captured {name} = {value}"));
        vars.insert(name.clone(), text);
    }
    Ok(seen)
}

fn build_request(
    step: &SmokeStep,
    vars: &BTreeMap<String, String>,
) -> Result<ProbeRequest, String> {
    let method = Method::from_bytes(step.method.as_bytes())
        .map_err(|_| format!("invalid method `{}`", step.method))?;
    let path = substitute(&step.path, vars)?;
    let mut headers = HeaderMap::new();
    for (name, value) in &step.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{name}`"))?;
        let value = substitute(value, vars)?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("invalid value for header `{name}`: {value:?}"))?;
        headers.append(header, value);
    }
    let body = match &step.body {
        Some(body) => substitute(body, vars)?,
        None => String::new(),
    };
    if !body.is_empty() && !headers.contains_key(CONTENT_TYPE) {
        // A body that is JSON is almost always meant as JSON; say so, since many
        // frameworks refuse a JSON body without the header.
        let kind = if serde_json::from_str::<Value>(&body).is_ok() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    }
    Ok(ProbeRequest {
        method,
        path,
        headers,
        body: Bytes::from(body),
    })
}

/// Replaces every `{{name}}` with its captured value; an unknown name is an error.
/// A `{{` without a closing `}}` is left as it is.
pub fn substitute(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        let value = vars.get(name).ok_or_else(|| {
            format!("`{{{{{name}}}}}` is not a value captured by an earlier step")
        })?;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn average(latencies: &[Duration]) -> Option<Duration> {
    let n = u32::try_from(latencies.len()).ok().filter(|n| *n > 0)?;
    Some(latencies.iter().sum::<Duration>() / n)
}

/// Nearest-rank 95th percentile: the smallest value with at least 95 % of the values at
/// or below it.
fn p95(latencies: &[Duration]) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = (95 * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JsonCondition;
    use crate::demo::app::{spawn_for_test, Behaviour};
    use crate::domain::Slot;
    use serde_json::json;

    fn step(name: &str, method: &str, path: &str) -> SmokeStep {
        SmokeStep {
            name: name.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            headers: BTreeMap::new(),
            body: None,
            expect_status: None,
            expect_body_contains: None,
            expect_json: vec![],
            capture: BTreeMap::new(),
        }
    }

    fn config(steps: Vec<SmokeStep>) -> SmokeConfig {
        SmokeConfig {
            steps,
            timeout: Duration::from_secs(5),
            max_avg_latency: None,
            max_p95_latency: None,
        }
    }

    async fn app(behaviour: Behaviour) -> ProbeTarget {
        ProbeTarget {
            endpoint: spawn_for_test(behaviour).await.into(),
            service: "web".to_string(),
            slot: Slot::Blue,
            version: "v1".to_string(),
            tls: None,
        }
    }

    fn crud() -> Vec<SmokeStep> {
        let mut create = step("create", "POST", "/items");
        create.body = Some(r#"{"name": "widget"}"#.to_string());
        create.expect_status = Some(201);
        create.capture.insert("id".to_string(), "id".to_string());
        create
            .capture
            .insert("name".to_string(), "name".to_string());
        let mut read = step("read", "GET", "/items/{{id}}");
        read.expect_status = Some(200);
        read.expect_json = vec![JsonCondition {
            path: "name".to_string(),
            expected: json!("widget"),
        }];
        let mut update = step("update", "PUT", "/items/{{ id }}");
        update
            .headers
            .insert("x-item".to_string(), "{{name}}".to_string());
        update.body = Some(r#"{"name": "{{name}}-2"}"#.to_string());
        update.expect_body_contains = Some("widget-2".to_string());
        let mut delete = step("delete", "DELETE", "/items/{{id}}");
        delete.expect_status = Some(204);
        let mut gone = step("gone", "GET", "/items/{{id}}");
        gone.expect_status = Some(404);
        vec![create, read, update, delete, gone]
    }

    #[tokio::test]
    async fn a_create_read_update_delete_sequence_with_captures_passes() {
        let target = app(Behaviour::healthy("v1")).await;
        let report = smoke_run(&config(crud()), &target).await;
        assert!(report.passed, "{report:#?}");
        assert_eq!(report.failure, None);
        let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["create", "read", "update", "delete", "gone"]);
        assert_eq!(
            report.results[0].detail,
            r#"201 Created, captured id = 1, captured name = "widget""#
        );
        assert!(report.avg_latency.is_some() && report.p95_latency.is_some());
    }

    #[tokio::test]
    async fn a_smoke_test_runs_against_a_slot_given_by_host_name() {
        let mut target = app(Behaviour::healthy("v1")).await;
        let port = target.endpoint.port();
        target.endpoint = crate::domain::endpoint::Endpoint::host("localhost", port).unwrap();
        let report = smoke_run(&config(crud()), &target).await;
        assert!(report.passed, "{report:#?}");
        assert_eq!(report.results.len(), 5);
    }

    async fn smoke_run(cfg: &SmokeConfig, target: &ProbeTarget) -> SmokeReport {
        crate::checks::smoke(cfg, target).await
    }

    #[tokio::test]
    async fn a_step_with_an_unexpected_status_ends_the_run_and_is_named() {
        let target = app(Behaviour::healthy("v1")).await;
        let mut read = step("read", "GET", "/items/999");
        read.expect_status = Some(200);
        let report = smoke_run(&config(vec![read, step("never", "GET", "/")]), &target).await;
        assert!(!report.passed);
        assert_eq!(report.results.len(), 1);
        let failure = report.failure.unwrap();
        assert!(
            failure.starts_with("step `read`: expected status 200, got 404 Not Found"),
            "{failure}"
        );
        assert_eq!(report.avg_latency, None);
    }

    #[tokio::test]
    async fn a_capture_from_a_missing_path_fails_naming_the_variable_and_path() {
        let target = app(Behaviour::healthy("v1")).await;
        let mut version = step("version", "GET", "/version");
        version
            .capture
            .insert("build".to_string(), "build.id".to_string());
        let report = smoke_run(&config(vec![version]), &target).await;
        assert!(!report.passed);
        assert_eq!(
            report.failure.as_deref(),
            Some("step `version`: cannot capture `build`: the response has no value at `build.id`")
        );
    }

    #[tokio::test]
    async fn a_variable_never_captured_fails_the_step_that_uses_it() {
        let target = app(Behaviour::healthy("v1")).await;
        let report = smoke_run(&config(vec![step("read", "GET", "/items/{{id}}")]), &target).await;
        assert_eq!(
            report.failure.as_deref(),
            Some("step `read`: `{{id}}` is not a value captured by an earlier step")
        );
    }

    #[tokio::test]
    async fn a_latency_budget_below_the_apps_latency_fails_naming_the_budget() {
        let mut slow = Behaviour::healthy("v1");
        slow.latency = Duration::from_millis(30);
        let target = app(slow).await;
        let mut cfg = config(vec![
            step("root", "GET", "/"),
            step("version", "GET", "/version"),
        ]);
        cfg.max_avg_latency = Some(Duration::from_millis(5));
        cfg.max_p95_latency = Some(Duration::from_secs(60));
        let report = smoke_run(&cfg, &target).await;
        assert!(!report.passed);
        assert!(report.results.iter().all(|r| r.ok));
        let failure = report.failure.unwrap();
        assert!(failure.starts_with("average latency "), "{failure}");
        assert!(
            failure.ends_with(" is over max_avg_latency 5ms"),
            "{failure}"
        );
        assert!(report.avg_latency.unwrap() >= Duration::from_millis(30));

        cfg.max_avg_latency = None;
        cfg.max_p95_latency = Some(Duration::from_millis(5));
        let failure = smoke_run(&cfg, &target).await.failure.unwrap();
        assert!(
            failure.ends_with(" is over max_p95_latency 5ms"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn no_steps_pass_without_latencies() {
        let target = app(Behaviour::healthy("v1")).await;
        let report = smoke_run(&config(vec![]), &target).await;
        assert!(report.passed);
        assert_eq!((report.avg_latency, report.p95_latency), (None, None));
    }

    #[test]
    fn captures_substitute_and_a_lone_brace_pair_is_kept() {
        let vars = BTreeMap::from([("id".to_string(), "42".to_string())]);
        assert_eq!(
            substitute("/a/{{id}}/b/{{ id }}", &vars).unwrap(),
            "/a/42/b/42"
        );
        assert_eq!(
            substitute("{\"x\": {{id}}} {{", &vars).unwrap(),
            "{\"x\": 42} {{"
        );
    }

    #[test]
    fn p95_is_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(p95(&ms(&[5])), Some(Duration::from_millis(5)));
        // 20 values: rank ceil(0.95 * 20) = 19.
        let twenty: Vec<u64> = (1..=20).collect();
        assert_eq!(p95(&ms(&twenty)), Some(Duration::from_millis(19)));
        // 10 values: rank ceil(9.5) = 10, the maximum.
        assert_eq!(
            p95(&ms(&[10, 1, 2, 3, 4, 5, 6, 7, 8, 9])),
            Some(Duration::from_millis(10))
        );
        assert_eq!(average(&ms(&[10, 20])), Some(Duration::from_millis(15)));
        assert_eq!(p95(&[]), None);
    }
}
