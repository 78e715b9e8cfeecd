//! Canary deployments end to end with the real binary, under live load through the
//! built-in proxy: a canary that passes every step with its analysis, one whose new
//! release degrades at 50 % and is rolled back with the failing metric named, and one
//! held at a step until `cutover promote`.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::time::Duration;

use cutover::demo::load::Load;
use cutover::store::DeploymentOutcome;
use support::{wait_until, Harness};

/// Two analysed steps (10 %, 50 %), analysis on the built-in proxy's error rate.
const CANARY: &str = r#"[services.web.strategy]
kind = "canary"
steps = [ { weight = 10, analyze = true }, { weight = 50, analyze = true } ]

[services.web.analysis]
interval = "1s"
count = 3
failure_limit = 0
inconclusive_limit = 3

[[services.web.analysis.metrics]]
name = "error-rate"
builtin = { signal = "error_rate", min_requests = 3 }
max = 0.05

[services.web.watch]"#;

async fn canary_daemon(behaviour: &str, strategy: &str) -> Harness {
    let mut h = Harness::builder()
        .behaviour(behaviour)
        .watch("2s")
        .without_latency_trigger()
        .edit("[services.web.watch]", strategy)
        .build()
        .await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_passes_every_step_goes_live_with_zero_failed_requests() {
    let h = canary_daemon("", CANARY).await;
    let load = Load::start(h.proxy, "/", 100, 8, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = h.cli(&["deploy", "web", "v2"]).await;
    let seen = load.stop().await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}");
    assert_eq!(
        seen.failed(),
        0,
        "failed requests during the canary: {seen:?}"
    );
    assert!(
        seen.by_version.contains_key("v1") && seen.by_version.contains_key("v2"),
        "{seen:?}"
    );

    let history = h.cli(&["history", "web", "--json"]).await.json();
    let d = &history[0];
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    let phases: Vec<&str> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    for phase in ["canary_1", "canary_2", "switch", "watch"] {
        assert!(phases.contains(&phase), "phase {phase} missing: {phases:?}");
    }
    let measurements = d["measurements"].as_array().expect("measurements");
    let at_10: Vec<_> = measurements
        .iter()
        .filter(|m| m["phase"] == "canary_1 (10%)")
        .collect();
    let at_50: Vec<_> = measurements
        .iter()
        .filter(|m| m["phase"] == "canary_2 (50%)")
        .collect();
    assert_eq!(at_10.len(), 3, "count = 3 rounds at 10%: {measurements:#?}");
    assert_eq!(at_50.len(), 3, "count = 3 rounds at 50%: {measurements:#?}");
    assert!(
        at_10.iter().chain(&at_50).all(|m| m["verdict"] == "pass"),
        "{measurements:#?}"
    );
    assert!(
        out.stdout.contains("canary_2 (50%) error-rate"),
        "deploy shows each measurement:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_degrades_at_fifty_percent_is_rolled_back_naming_the_metric() {
    // v3 is fine for its first 40 requests (all of step 1 at 10 %), then answers half
    // of them with 500 — which happens during step 2 at 50 %.
    let h = canary_daemon(
        "[v3]\ndegrade_after_requests = 40\ndegraded_error_rate = 0.5\n",
        CANARY,
    )
    .await;
    let load = Load::start(h.proxy, "/", 100, 8, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = h.cli(&["deploy", "web", "v3"]).await;
    load.stop().await;
    assert_eq!(out.code, 1, "deploy v3 must fail:\n{out}");
    let history = h.cli(&["history", "web", "--json"]).await.json();
    let d = &history[0];
    assert_eq!(d["outcome"], "rolled_back", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("canary step 2 (50%)"), "{reason}");
    assert!(
        reason.contains("error-rate"),
        "the failing metric is named: {reason}"
    );
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    let (code, body) = h.get_proxy("/").await.expect("proxy answers");
    assert_eq!((code, body.trim()), (200, "hello from v1"));
    // After the rollback no request goes to v3 any more.
    let after = Load::start(h.proxy, "/", 100, 4, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = after.stop().await;
    assert_eq!(seen.failed(), 0, "{seen:?}");
    assert_eq!(
        seen.by_version.keys().collect::<Vec<_>>(),
        vec!["v1"],
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_held_until_promoted_waits_for_cutover_promote() {
    let strategy = "[services.web.strategy]\nkind = \"canary\"\nsteps = [ { weight = 20, pause = \"until-promoted\", analyze = false } ]\n\n[services.web.watch]";
    let h = canary_daemon("", strategy).await;
    let id = h.deploy_no_wait("v2").await;
    wait_until(30, "the canary reaches its first step", || async {
        let s = h.cli(&["status", "web", "--json"]).await.json();
        (s["progress"]["canary"]["step"] == 1).then_some(())
    })
    .await;
    let status = h.cli(&["status", "web", "--json"]).await.json();
    assert_eq!(status["progress"]["canary"]["weight"], 20, "{status:#}");
    // Held: it stays there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.deployment(id).await.deployment.outcome, None);
    let text = h.cli(&["status", "web"]).await;
    assert!(
        text.stdout
            .contains("canary step 1/1: 20% of traffic on green"),
        "{text}"
    );

    let out = h.cli(&["promote", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    let d = h.wait_finished(id, 60).await;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{d:?}");
    // Promote with nothing in canary is refused clearly.
    let out = h.cli(&["promote", "web"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("no deployment of `web` is in progress"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gate_answering_non_2xx_holds_the_step_until_it_answers_2xx() {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;

    // The external gate (a CI job, a person's approval): 503 until it is opened.
    let gate = Arc::new(AtomicU16::new(503));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate_addr = listener.local_addr().unwrap();
    let app =
        axum::Router::new().route(
            "/approve",
            axum::routing::post({
                let gate = gate.clone();
                move || async move {
                    axum::http::StatusCode::from_u16(gate.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let strategy = format!(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [ {{ weight = 20, analyze = true }} ]\n\n\
         [services.web.analysis]\ninterval = \"300ms\"\ncount = 1\n\n\
         [[services.web.analysis.metrics]]\nname = \"approval\"\n\
         webhook = {{ url = \"http://{gate_addr}/approve\", method = \"POST\" }}\n\n[services.web.watch]"
    );
    let h = canary_daemon("", &strategy).await;
    let id = h.deploy_no_wait("v2").await;
    wait_until(30, "the canary reaches its first step", || async {
        let s = h.cli(&["status", "web", "--json"]).await.json();
        (s["progress"]["canary"]["step"] == 1).then_some(())
    })
    .await;
    // Several rounds with the gate closed: the step holds, nothing fails.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = h.deployment(id).await;
    assert_eq!(view.deployment.outcome, None, "{view:?}");
    let closed = view
        .deployment
        .measurements
        .iter()
        .filter(|m| m.detail.starts_with("gate closed"))
        .count();
    assert!(
        closed >= 3,
        "the gate is asked every interval: {:?}",
        view.deployment.measurements
    );
    let status = h.cli(&["status", "web", "--json"]).await.json();
    assert_eq!(status["progress"]["canary"]["step"], 1, "{status:#}");

    gate.store(200, Ordering::SeqCst);
    let d = h.wait_finished(id, 60).await;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{d:?}");
    assert!(
        d.measurements
            .iter()
            .any(|m| m.metric == "approval" && m.verdict == "pass"),
        "{:?}",
        d.measurements
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_the_daemon_drives_the_canary_analysis() {
    // The analysis asks a real Prometheus server, which scrapes the daemon's own
    // /metrics, how many 5xx the canary slot answered: v2 none, v3 about 30 %.
    let port = prometheus::free_port();
    let strategy = format!(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [ {{ weight = 30, analyze = true }} ]\n\n\
         [services.web.analysis]\ninterval = \"2s\"\ncount = 3\n\n\
         [[services.web.analysis.metrics]]\nname = \"canary-5xx\"\n\
         prometheus = {{ address = \"http://127.0.0.1:{port}\", query = 'sum(cutover_request_errors_total{{service=\"web\",slot=\"{{slot}}\"}})' }}\n\
         max = 0\n\n[services.web.watch]"
    );
    let h = canary_daemon("[v3]\nerror_rate = 0.3\n", &strategy).await;
    let prom = prometheus::Prometheus::start_on(port, h.api);
    let prom_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(60, "Prometheus has scraped the daemon", || async {
        match support::http_get(prom_addr, "/api/v1/query?query=cutover_live_slot").await {
            Ok((200, body)) if body.contains("\"value\"") => Some(()),
            _ => None,
        }
    })
    .await;

    let load = Load::start(h.proxy, "/", 100, 8, Duration::from_secs(120));
    let out = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(
        out.code,
        0,
        "v2 passes its Prometheus analysis:\n{out}\n{}",
        prom.log()
    );
    let out = h.cli(&["deploy", "web", "v3"]).await;
    load.stop().await;
    assert_eq!(out.code, 1, "v3 fails its Prometheus analysis:\n{out}");

    let history = h.cli(&["history", "web", "--json"]).await.json();
    let (v3, v2) = (&history[0], &history[1]);
    assert_eq!(v2["outcome"], "succeeded", "{v2:#}");
    let passes = v2["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["metric"] == "canary-5xx" && m["verdict"] == "pass")
        .count();
    assert_eq!(passes, 3, "{v2:#}");
    assert_eq!(v3["outcome"], "rolled_back", "{v3:#}");
    let reason = v3["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("canary step 1 (30%)") && reason.contains("canary-5xx"),
        "{reason}"
    );
    assert_eq!(h.status().await.live_version.as_deref(), Some("v2"));
}
