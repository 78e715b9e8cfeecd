//! The CLI and the API as a user meets them, with the real binary: config mistakes,
//! usage errors and their exit codes (0 ok, 1 failed or refused, 2 bad config or
//! usage), the bearer token, abort, rollback, check and `/metrics`.

mod support;

use std::path::Path;

use cutover::api::client::ClientError;
use cutover::domain::Slot;
use serde_json::{json, Value};
use support::{run_cli, slot_pid, Harness, SERVICE};

/// A daemon with v1 live (2s watch).
async fn daemon_with_v1() -> Harness {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    h
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

#[tokio::test]
async fn validate_names_the_file_and_the_key_of_a_typo_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "broken.toml",
        r#"
[api]
listen = "127.0.0.1:1"

[services.web]
listen = "127.0.0.1:2"

[services.web.runtime]
kind = "process"
comand = ["./web", "--port", "{port}"]
"#,
    );
    let out = run_cli(&path, &["validate"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("broken.toml"),
        "the file is not named:\n{out}"
    );
    assert!(
        out.stderr.contains("services.web.runtime"),
        "the key is not named:\n{out}"
    );
    assert!(
        out.stderr.contains("comand"),
        "the typo is not named:\n{out}"
    );
}

#[tokio::test]
async fn validate_lists_every_mistake_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "many.toml",
        r#"
[api]
listen = "127.0.0.1:1"

[services.web]
listen = "not-an-address"
warm_for = "forever"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]

[services.web.health]
interval = "soon"
"#,
    );
    let out = run_cli(&path, &["validate"]).await;
    assert_eq!(out.code, 2, "{out}");
    for key in [
        "services.web.listen",
        "services.web.warm_for",
        "services.web.health.interval",
    ] {
        assert!(out.stderr.contains(key), "{key} is not reported:\n{out}");
    }
    assert!(out.stderr.contains("3 problems"), "{out}");
}

#[tokio::test]
async fn validate_accepts_the_demo_config() {
    let h = Harness::builder().build().await;
    let out = h.cli(&["validate"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("ok (1 service(s))"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_a_service_nobody_configured_exits_2() {
    let mut h = Harness::builder().build().await;
    h.start().await;

    // Not in the CLI's config: refused before calling the daemon.
    let out = h.cli(&["deploy", "nosuch", "v1"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("unknown service `nosuch`"), "{out}");

    // In the CLI's config but not in the daemon's: the daemon refuses it.
    let text = std::fs::read_to_string(&h.config_path).expect("config");
    let other = format!(
        "{text}\n[services.api]\nlisten = \"{}\"\n\n[services.api.runtime]\nkind = \"process\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\n",
        support::free_addr(),
        support::exe(),
    );
    let other = h.write("other.toml", &other);
    let out = h.cli_with_config(&other, &["deploy", "api", "v1"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("unknown service `api`"), "{out}");
    assert!(
        h.status().await.last_deployment.is_none(),
        "something was deployed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_an_invalid_version_exits_2_with_the_apis_message() {
    let mut h = Harness::builder().build().await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "bad version!"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("invalid version `bad version!`"),
        "{out}"
    );
    let status = h.status().await;
    assert!(
        status.last_deployment.is_none() && status.active_deployment.is_none(),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_without_the_right_token_get_401_and_change_nothing() {
    let h = daemon_with_v1().await;
    let before = h.status().await;
    let history_before: Vec<Value> = h
        .client()
        .get("/api/v1/services/web/history")
        .await
        .expect("history");

    let calls: [(&str, Value); 4] = [
        ("/api/v1/services/web/deploy", json!({ "version": "v2" })),
        ("/api/v1/services/web/rollback", json!({})),
        ("/api/v1/services/web/abort", json!({})),
        ("/api/v1/services/web/check?slot=blue", json!({})),
    ];
    for token in [None, Some("wrong-token"), Some("")] {
        let client = h.client_with_token(token);
        for (path, body) in &calls {
            match client.post::<Value>(path, body.clone()).await {
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                }) => {
                    assert_eq!(
                        (status, code.as_str()),
                        (401, "unauthorized"),
                        "POST {path} with {token:?}: {message}"
                    );
                    assert!(message.contains("Bearer"), "{message}");
                }
                other => panic!(
                    "POST {path} with token {token:?}: expected a 401 JSON error, got {other:?}"
                ),
            }
        }
    }

    // The CLI with a wrong token in its config is told so (a usage error).
    let wrong = std::fs::read_to_string(&h.config_path)
        .expect("config")
        .replace("demo-token", "not-the-token");
    let wrong = h.write("wrong-token.toml", &wrong);
    let out = h.cli_with_config(&wrong, &["deploy", "web", "v2"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("Bearer"), "{out}");

    let after = h.status().await;
    let history_after: Vec<Value> = h
        .client()
        .get("/api/v1/services/web/history")
        .await
        .expect("history");
    assert_eq!(history_after, history_before, "the history changed");
    assert_eq!(after.live, before.live);
    assert_eq!(after.live_version, before.live_version);
    assert!(after.active_deployment.is_none(), "{after:?}");
    assert_eq!(slot_pid(&after, Slot::Blue), slot_pid(&before, Slot::Blue));
    assert_eq!(
        slot_pid(&after, Slot::Green),
        None,
        "something started in green: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_with_nothing_in_progress_exits_1_and_says_so() {
    let h = daemon_with_v1().await;
    let out = h.cli(&["abort", "web"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("no deployment of `web` is in progress"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_a_successful_deploy_brings_the_warm_previous_release_back() {
    let h = daemon_with_v1().await;
    let blue_pid = slot_pid(&h.status().await, Slot::Blue).expect("blue pid");
    let out = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}");
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v2"));
    let blue = status
        .slots
        .iter()
        .find(|s| s.record.slot == Slot::Blue)
        .expect("blue");
    assert_eq!(
        blue.record.state.as_str(),
        "standby",
        "v1 is kept warm: {status:?}"
    );

    let out = h.cli(&["rollback", "web"]).await;
    assert_eq!(out.code, 0, "rollback:\n{out}");
    let out = h.cli(&["status", "web", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let status = out.json();
    assert_eq!(status["live"], "blue", "{out}");
    assert_eq!(status["live_version"], "v1", "{out}");
    let pid = status["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["slot"] == "blue"))
        .and_then(|s| s["handle"].as_str())
        .and_then(support::pid_of_handle);
    assert_eq!(
        pid,
        Some(blue_pid),
        "v1 was restarted rather than switched back to while warm"
    );
    let (code, body) = h.get_proxy("/").await.expect("the proxy answers");
    assert_eq!((code, body.trim()), (200, "hello from v1"));

    // The release traffic left is kept warm too: rolling back again is instant.
    let green_pid = support::pid_of_handle(
        status["slots"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["slot"] == "green"))
            .and_then(|s| s["handle"].as_str())
            .expect("green still runs after the rollback"),
    );
    let out = h.cli(&["rollback", "web"]).await;
    assert_eq!(out.code, 0, "second rollback:\n{out}");
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v2"));
    assert_eq!(
        slot_pid(&status, Slot::Green),
        green_pid,
        "v2 was restarted, not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_live_slot_healthy_with_its_smoke_tests_passed() {
    let h = daemon_with_v1().await;
    let out = h.cli(&["check", "web", "--slot", "blue", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let report = out.json();
    assert_eq!(report["healthy"], true, "{out}");
    assert_eq!(report["smoke"]["passed"], true, "{out}");
    assert_eq!(report["version"], "v1", "{out}");

    // Green never ran: checking it is refused, not reported healthy.
    let out = h.cli(&["check", "web", "--slot", "green", "--json"]).await;
    assert_ne!(out.code, 0, "{out}");
    // With --json the error is JSON on stdout too.
    assert!(out.stdout.contains("not running"), "{out}");
    assert_eq!(out.json()["error"]["code"], "slot_not_running", "{out}");
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_service_and_slot_and_show_the_live_slot() {
    let h = daemon_with_v1().await;
    for _ in 0..25 {
        let (code, _) = h.get_proxy("/").await.expect("the proxy answers");
        assert_eq!(code, 200);
    }
    let (code, text) = support::http_get(h.api, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200);

    let requests = samples(&text, "cutover_requests_total");
    let blue_2xx = requests
        .iter()
        .find(|(labels, _)| {
            labels.contains(&format!("service=\"{SERVICE}\""))
                && labels.contains("slot=\"blue\"")
                && labels.contains("result=\"2xx\"")
        })
        .unwrap_or_else(|| panic!("no cutover_requests_total for web/blue/2xx in:\n{text}"));
    assert!(blue_2xx.1 >= 25.0, "{blue_2xx:?}");
    let green_2xx = requests
        .iter()
        .find(|(l, _)| l.contains("slot=\"green\"") && l.contains("result=\"2xx\""))
        .map(|(_, v)| *v)
        .unwrap_or(0.0);
    assert_eq!(green_2xx, 0.0, "green never served:\n{text}");

    let live = samples(&text, "cutover_live_slot");
    let live_of = |slot: &str| {
        live.iter()
            .find(|(l, _)| l.contains("service=\"web\"") && l.contains(&format!("slot=\"{slot}\"")))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no cutover_live_slot for {slot} in:\n{text}"))
    };
    assert_eq!((live_of("blue"), live_of("green")), (1.0, 0.0));

    // The v1 deploy switched traffic once; its in-process duration is a histogram.
    let count = samples(&text, "cutover_switch_duration_seconds_count");
    assert_eq!(count, [("service=\"web\"", 1.0)], "{text}");
    let inf = samples(&text, "cutover_switch_duration_seconds_bucket")
        .into_iter()
        .find(|(l, _)| l.contains("le=\"+Inf\""))
        .map(|(_, v)| v);
    assert_eq!(inf, Some(1.0), "{text}");

    // Request latency buckets are cumulative: non-decreasing, +Inf equal to the count.
    let blue: Vec<f64> = samples(&text, "cutover_request_duration_seconds_bucket")
        .into_iter()
        .filter(|(l, _)| l.contains("slot=\"blue\""))
        .map(|(_, v)| v)
        .collect();
    let count = samples(&text, "cutover_request_duration_seconds_count")
        .into_iter()
        .find(|(l, _)| l.contains("slot=\"blue\""))
        .map(|(_, v)| v);
    assert!(blue.windows(2).all(|w| w[0] <= w[1]), "{blue:?}");
    assert_eq!(blue.last().copied(), count, "{text}");
    assert!(count.is_some_and(|c| c >= 25.0), "{text}");
}

#[tokio::test]
async fn commands_without_a_daemon_exit_1_and_say_how_to_start_it() {
    let h = Harness::builder().build().await;
    let out = h.cli(&["status", "web"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("cutover serve"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_during_wait_healthy_stops_the_new_release_and_keeps_traffic() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .watch("2s")
        .unhealthy_threshold(10_000)
        .health_deadline("120s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    let id = h.deploy_no_wait("v2").await;
    h.wait_for_phase(id, "wait_healthy", 30).await;

    let out = h.cli(&["abort", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    let d = h.wait_finished(id, 60).await;
    assert_eq!(
        d.outcome,
        Some(cutover::store::DeploymentOutcome::Aborted),
        "{d:?}"
    );
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    let green = status
        .slots
        .iter()
        .find(|s| s.record.slot == Slot::Green)
        .expect("green");
    assert!(!green.running, "v2 still runs after the abort: {status:?}");
    let (code, body) = h.get_proxy("/").await.expect("the proxy answers");
    assert_eq!((code, body.trim()), (200, "hello from v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_during_the_watch_switches_back_at_once() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    // A long watch for v2 so the rollback surely lands in it.
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;
    h.edit_config("duration = \"2s\"", "duration = \"60s\"");
    h.restart().await;
    let id = h.deploy_no_wait("v2").await;
    h.wait_for_phase(id, "watch", 60).await;

    let out = h.cli(&["rollback", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    let d = h.wait_finished(id, 30).await;
    assert_eq!(
        d.outcome,
        Some(cutover::store::DeploymentOutcome::RolledBack),
        "{d:?}"
    );
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue));
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    let (code, body) = h.get_proxy("/").await.expect("the proxy answers");
    assert_eq!((code, body.trim()), (200, "hello from v1"));
}

#[tokio::test]
async fn preview_url_prints_a_token_for_the_service_and_refuses_when_preview_is_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = r#"
[services.web]
listen = "127.0.0.1:2"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;
    let off = write(dir.path(), "off.toml", base);
    let out = run_cli(&off, &["preview-url", "web"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("enabled = true"), "{out}");

    let secret = "a-preview-secret-of-length";
    let on = write(
        dir.path(),
        "on.toml",
        &format!(
            "{base}\n[proxy.preview]\nenabled = true\nsecret = \"{secret}\"\ntoken_ttl = \"10m\"\n"
        ),
    );
    let out = run_cli(&on, &["preview-url", "web", "--ttl", "2h"]).await;
    assert_eq!(out.code, 0, "{out}");
    let token = out.stdout.trim();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    use cutover::proxy::preview::verify;
    assert!(
        verify(secret.as_bytes(), "web", token.as_bytes(), now),
        "{token}"
    );
    assert!(!verify(secret.as_bytes(), "api", token.as_bytes(), now));
    // The token lives no longer than token_ttl, whatever --ttl asked.
    assert!(!verify(
        secret.as_bytes(),
        "web",
        token.as_bytes(),
        now + 601
    ));
    assert!(out.stderr.contains("x-cutover-preview: "), "{out}");
}
