//! `kill -9` at every phase of a deployment (issue #11 item 7), with the real binary:
//! the daemon is made to stand still right after a phase was persisted
//! (`CUTOVER_FAULT_PAUSE_AT`, `orchestrator/runner/fault.rs`), killed there, and
//! started again. After the restart, every case asserts: traffic is answered by a
//! healthy release (the expected one), the deployment is settled with a truthful
//! outcome, no release process runs twice or unaccounted for, and the history holds
//! each deployment exactly once.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cutover::store::{DeploymentOutcome, DeploymentRecord};
use support::{running_slot_pids, wait_until, Harness};

const PAUSE: &str = "CUTOVER_FAULT_PAUSE_AT";

/// How a case brings the paused deployment about.
enum Scenario {
    /// v1 live; deploying v2 pauses at the point.
    Deploy,
    /// v1 live, v2 live (v1 warm); `rollback` pauses at the point.
    Rollback,
    /// v1 live; deploying v2 reaches its watch; `rollback` then sends traffic back,
    /// pausing at the point.
    RollbackDuringWatch,
}

struct Case {
    point: &'static str,
    scenario: Scenario,
    /// The watch's duration and the warm period.
    watch: &'static str,
    warm_for: &'static str,
    /// Extra config tables (appended after `[services.web]`'s keys).
    extra: &'static str,
    outcome: DeploymentOutcome,
    /// The release answering after the restart.
    serves: &'static str,
}

async fn history(h: &Harness) -> Vec<DeploymentRecord> {
    h.client()
        .get("/api/v1/services/web/history?limit=50")
        .await
        .expect("history")
}

async fn run(case: Case) {
    let mut h = Harness::builder()
        .watch(case.watch)
        .without_latency_trigger()
        .edit(
            "warm_for = \"60s\"\n",
            &format!("warm_for = \"{}\"\n{}", case.warm_for, case.extra),
        )
        .build()
        .await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    if matches!(case.scenario, Scenario::Rollback) {
        assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    }
    // A daemon that stands still at the point.
    h.crash().await;
    h.start_with_env(&[(PAUSE, case.point)]).await;
    let id = match case.scenario {
        Scenario::Deploy => h.deploy_no_wait("v2").await,
        Scenario::Rollback => rollback_no_wait(&h).await,
        Scenario::RollbackDuringWatch => {
            let id = h.deploy_no_wait("v2").await;
            h.wait_for_phase(id, "watch", 60).await;
            rollback_no_wait(&h).await;
            id
        }
    };
    let point = case.point;
    wait_until(
        60,
        &format!("the daemon to stand still at {point}"),
        || async {
            h.daemon_logs()
                .contains("fault injection: the deployment stands still here")
                .then_some(())
        },
    )
    .await;
    let before = history(&h).await;

    h.crash().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.restart().await;

    // Settled, truthfully.
    let d = h.deployment(id).await.deployment;
    assert_eq!(
        d.outcome,
        Some(case.outcome),
        "{point}: {:?}\n{}",
        d.reason,
        h.daemon_logs()
    );
    assert!(
        d.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("interrupted")),
        "{point}: the reason says the daemon was interrupted: {:?}",
        d.reason
    );
    // Traffic on a healthy release.
    let expected = format!("hello from {}", case.serves);
    wait_until(
        30,
        &format!("{point}: the proxy to answer {expected}"),
        || async {
            match h.get_proxy("/").await {
                Ok((200, body)) if body.trim() == expected => Some(()),
                _ => None,
            }
        },
    )
    .await;
    for _ in 0..5 {
        let (status, body) = h.get_proxy("/").await.expect("the proxy answers");
        assert_eq!((status, body.trim()), (200, expected.as_str()), "{point}");
    }
    // No release twice, none unaccounted for.
    let status = h.status().await;
    let reported = running_slot_pids(&status);
    assert_eq!(
        reported.len(),
        status.slots.iter().filter(|s| s.running).count(),
        "{point}: two slots report one pid: {status:?}"
    );
    assert_eq!(h.slot_processes(), reported, "{point}: {status:?}");
    let live = status.live.expect("a live slot");
    assert!(status.slots[live.index()].running, "{point}: {status:?}");
    // Every deployment once, none lost.
    let after = history(&h).await;
    let ids: BTreeSet<i64> = after.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), after.len(), "{point}: a history row twice");
    assert_eq!(
        ids,
        before.iter().map(|d| d.id).collect::<BTreeSet<_>>(),
        "{point}: rows lost or added"
    );
    assert!(
        after.iter().all(|d| d.outcome.is_some()),
        "{point}: {after:?}"
    );
}

async fn rollback_no_wait(h: &Harness) -> i64 {
    let v: serde_json::Value = h
        .client()
        .post("/api/v1/services/web/rollback", serde_json::json!({}))
        .await
        .expect("rollback");
    v["deployment_id"].as_i64().expect("deployment_id")
}

fn deploy(point: &'static str, outcome: DeploymentOutcome, serves: &'static str) -> Case {
    Case {
        point,
        scenario: Scenario::Deploy,
        watch: "30s",
        warm_for: "60s",
        extra: "",
        outcome,
        serves,
    }
}

use DeploymentOutcome::{Interrupted, RolledBack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_start() {
    run(deploy("start", Interrupted, "v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_wait_healthy() {
    run(deploy("wait_healthy", Interrupted, "v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_smoke() {
    run(deploy("smoke", Interrupted, "v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_the_switch() {
    // The route moved in memory first; the store still says blue, and boot restores it.
    run(deploy("switch", Interrupted, "v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_a_canary_step() {
    // Paused as step 2 begins: step 1 already sent a quarter of the traffic to v2.
    run(Case {
        point: "canary_2",
        extra: "\n[services.web.strategy]\nkind = \"canary\"\nsteps = [{ weight = 25, pause = \"1s\" }, { weight = 50, pause = \"until-promoted\" }]\n",
        ..deploy("canary_2", RolledBack, "v1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_watch() {
    run(deploy("watch", RolledBack, "v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_switching_back() {
    run(Case {
        scenario: Scenario::RollbackDuringWatch,
        ..deploy("switch_back", RolledBack, "v1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_when_finishing() {
    // The watch passed but the outcome was not written: boot cannot know the release
    // was judged good, so traffic goes back to the previous one (the safe side).
    run(Case {
        watch: "2s",
        ..deploy("finish", RolledBack, "v1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_an_instant_rollback_to_the_warm_standby() {
    run(Case {
        scenario: Scenario::Rollback,
        watch: "0s",
        ..deploy("switch", Interrupted, "v2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_rollback_that_restarts_the_previous_release() {
    // No warm period: v1 was stopped after v2 succeeded, so the rollback starts it.
    run(Case {
        scenario: Scenario::Rollback,
        watch: "0s",
        warm_for: "0s",
        ..deploy("wait_healthy", Interrupted, "v2")
    })
    .await;
}
