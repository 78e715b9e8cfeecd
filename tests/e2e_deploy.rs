//! Deployments end to end with the real binary: the scripted demo, the same story
//! driven command by command through the CLI under live load, and one deployment at a
//! time per service.

mod support;

use std::time::Duration;

use cutover::demo::load::Load;
use cutover::store::DeploymentOutcome;
use serde_json::Value;
use support::{within, Harness};

/// v3 never gets healthy, v4 answers a fifth of its requests with 500.
const STORY: &str = "[v3]\nunhealthy = true\n\n[v4]\nerror_rate = 0.2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_demo_plays_the_whole_story_and_exits_zero() {
    // The harness only provides a directory here: the demo makes its own in TMPDIR,
    // which the harness's cleanup then covers.
    let h = Harness::builder().build().await;
    let mut cmd = tokio::process::Command::new(support::exe());
    cmd.args(["demo", "--rate", "40"])
        .env("TMPDIR", h.dir())
        .env_remove("CUTOVER_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = within(300, "cutover demo", cmd.output())
        .await
        .expect("run cutover demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    for line in [
        "zero failed requests during v1 → v2 (saw 0)",
        "v3 was rejected",
        "traffic never moved to v3",
        "v4 was rolled back automatically",
        "reason recorded: error rate",
        "v2 is live again",
        "demo finished: every act ended as expected.",
    ] {
        assert!(
            stdout.contains(line),
            "missing {line:?} in the demo's output:\n{all}"
        );
    }
    assert!(
        !stdout.contains("✗ NOT:"),
        "an act did not end as expected:\n{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_driven_through_the_cli_under_load_ends_with_v2_live() {
    let mut h = Harness::builder()
        .behaviour(STORY)
        .watch("5s")
        .build()
        .await;
    h.start().await;

    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}");

    let load = Load::start(h.proxy, "/", 40, 8, Duration::from_secs(300));
    // Let the load reach v1 before the switch, so the count covers both sides of it.
    support::wait_until(20, "the load to reach v1", || async {
        load.stats().by_version.contains_key("v1").then_some(())
    })
    .await;

    let before = load.stats();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    let during_v2 = load.stats().since(&before);
    assert_eq!(v2.code, 0, "deploy v2:\n{v2}");
    assert_eq!(
        during_v2.failed(),
        0,
        "failed requests during v1 → v2: {during_v2:?}"
    );
    assert!(
        during_v2.by_version.contains_key("v2"),
        "no request reached v2: {during_v2:?}"
    );

    let before = load.stats();
    let v3 = h.cli(&["deploy", "web", "v3"]).await;
    let during_v3 = load.stats().since(&before);
    assert_eq!(v3.code, 1, "deploy v3 (unhealthy) must fail:\n{v3}");
    assert!(
        !during_v3.by_version.contains_key("v3"),
        "a request reached v3: {during_v3:?}"
    );

    let v4 = h.cli(&["deploy", "web", "v4"]).await;
    assert_eq!(
        v4.code, 1,
        "deploy v4 (20% errors) must be rolled back:\n{v4}"
    );
    let total = load.stop().await;
    assert!(
        !total.by_version.contains_key("v3"),
        "a request reached v3: {total:?}"
    );

    let history = h.cli(&["history", "web", "--json"]).await;
    assert_eq!(history.code, 0, "{history}");
    let list = history.json();
    let list = list.as_array().expect("history is a list");
    let seen: Vec<(&str, &str)> = list
        .iter()
        .map(|d| {
            (
                d["version"].as_str().unwrap_or("?"),
                d["outcome"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("v4", "rolled_back"),
            ("v3", "failed"),
            ("v2", "succeeded"),
            ("v1", "succeeded")
        ],
        "history, newest first:\n{history}"
    );
    let reason = list[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error rate"), "v4's reason: {reason:?}");

    let status = h.cli(&["status", "web", "--json"]).await;
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(status.json()["live_version"], "v2", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_while_one_is_in_progress_is_refused_and_the_first_carries_on() {
    // 25 healthy rounds 200 ms apart: every deployment spends seconds in wait_healthy.
    let mut h = Harness::builder()
        .watch("2s")
        .healthy_threshold(25)
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}");

    let first = h.deploy_no_wait("v2").await;
    h.wait_for_phase(first, "wait_healthy", 30).await;

    let second = h.cli(&["deploy", "web", "v3"]).await;
    assert_ne!(second.code, 0, "a second deploy must be refused:\n{second}");
    assert!(second.stderr.contains("already in progress"), "{second}");
    let status = h.status().await;
    let active = status
        .active_deployment
        .as_ref()
        .expect("the first deployment is still active");
    assert_eq!(active.id, first);
    assert_eq!(active.version, "v2");

    let done = h.wait_finished(first, 120).await;
    assert_eq!(done.outcome, Some(DeploymentOutcome::Succeeded), "{done:?}");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v2"));
    let history: Vec<Value> = h
        .client()
        .get("/api/v1/services/web/history")
        .await
        .expect("history");
    assert!(
        history.iter().all(|d| d["version"] != "v3"),
        "the refused deploy left a record: {history:?}"
    );
}
