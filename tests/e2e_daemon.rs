//! The daemon's hold on its state directory, with the real binary: one daemon per
//! state directory, and a state directory removed under a running daemon is written
//! back so a restart still finds the live release.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cutover::domain::Slot;
use cutover::store::DeploymentOutcome;
use support::{free_addr, slot_pid, wait_until, within, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_directory_exits_1_naming_the_holder_and_changes_nothing()
{
    let mut h = Harness::builder().watch("6s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let id = h.deploy_no_wait("v2").await;
    h.wait_for_phase(id, "watch", 60).await;
    let before = h.status().await;

    // Same state directory, other ports: only the lock can stop it.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let other = text
        .replace(&h.proxy.to_string(), &free_addr().to_string())
        .replace(&h.api.to_string(), &free_addr().to_string());
    let other = h.write("second.toml", &other);
    let mut second = tokio::process::Command::new(support::exe());
    second
        .arg("-c")
        .arg(&other)
        .arg("serve")
        .env_remove("CUTOVER_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = within(30, "the second daemon to exit", second.output())
        .await
        .expect("run the second daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("(pid {})", h.daemon_pid()))
            && stderr.contains("holds the state directory"),
        "names the holder: {stderr}"
    );

    // The first daemon's deployment went on untouched.
    let d = h.wait_finished(id, 60).await;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{d:?}");
    let after = h.status().await;
    assert_eq!(after.live, Some(Slot::Green));
    assert_eq!(
        slot_pid(&after, Slot::Green),
        slot_pid(&before, Slot::Green),
        "the release was not restarted"
    );
    h.wait_serving("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_state_directory_is_written_back_and_a_restart_adopts_the_live_release() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let blue = slot_pid(&h.status().await, Slot::Blue).expect("blue runs");
    let state = h.state_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "the state directory is private");
    assert_eq!(mode(&state.join("cutover.db")), 0o600);

    std::fs::remove_dir_all(&state).unwrap();
    wait_until(20, "the state to be written back", || async {
        (state.join("cutover.db").exists() && state.join("cutover.lock").exists()).then_some(())
    })
    .await;
    h.wait_serving("v1").await;
    let logs = h.daemon_logs();
    assert!(
        logs.contains("state directory") && logs.contains("removed"),
        "{logs}"
    );

    // A crash now: the restarted daemon finds the live release and adopts it.
    h.crash().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.restart().await;
    h.wait_serving("v1").await;
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue), "{status:?}");
    assert_eq!(
        slot_pid(&status, Slot::Blue),
        Some(blue),
        "adopted, not started again"
    );
    let history: Vec<cutover::store::DeploymentRecord> = h
        .client()
        .get("/api/v1/services/web/history")
        .await
        .expect("history");
    assert_eq!(history.len(), 1, "the history survived: {history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_write_that_fails_stops_the_deployment_and_names_the_sqlite_cause() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);

    // From now on the store refuses check results (as a full disk would refuse them).
    let db = rusqlite::Connection::open(h.state_dir().join("cutover.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_checks BEFORE INSERT ON checks
         BEGIN SELECT RAISE(ABORT, 'checks refused by the test'); END;",
    )
    .unwrap();

    let out = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(out.code, 1, "{out}");
    let history: Vec<cutover::store::DeploymentRecord> = h
        .client()
        .get("/api/v1/services/web/history")
        .await
        .expect("history");
    let d = &history[0];
    assert_eq!(d.version, "v2");
    assert_eq!(d.outcome, Some(DeploymentOutcome::Failed), "{d:?}");
    let reason = d.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("the store failed")
            && reason.contains("cannot record a check result")
            && reason.contains("checks refused by the test"),
        "the reason names the write and SQLite's cause: {reason}"
    );
    assert_eq!(d.switched_at, None, "traffic never moved");
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue), "{status:?}");
    assert!(!status.slots[Slot::Green.index()].running, "v2 was stopped");
    h.wait_serving("v1").await;
}
