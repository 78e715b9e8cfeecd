//! Crash safety with the real binary: `kill -9` the daemon at the worst moments and
//! start it again on the same state directory. The rule under test (see
//! `orchestrator::recovery`): traffic goes to the last live slot that was healthy,
//! running releases are adopted rather than duplicated, and an interrupted deployment
//! is finished in the store with the reason.

mod support;

use std::time::Duration;

use cutover::demo::load::Load;
use cutover::domain::Slot;
use cutover::store::DeploymentOutcome;
use support::{running_slot_pids, slot_pid, wait_until, Harness};

/// Asks the proxy until it answers 200 from `version`, then checks the next few
/// answers all come from it too.
async fn proxy_serves(h: &Harness, version: &str) {
    let expected = format!("hello from {version}");
    wait_until(
        30,
        &format!("the proxy to answer from {version}"),
        || async {
            match h.get_proxy("/").await {
                Ok((200, body)) if body.trim() == expected => Some(()),
                _ => None,
            }
        },
    )
    .await;
    for _ in 0..10 {
        let (status, body) = h.get_proxy("/").await.expect("the proxy answers");
        assert_eq!((status, body.trim()), (200, expected.as_str()));
    }
}

/// The slot processes alive on the machine are exactly the ones the daemon reports
/// running, and those are `expected`: nothing was started twice, nothing runs
/// unaccounted for.
async fn only_these_slot_processes_run(h: &Harness, expected: &[u32]) {
    let status = h.status().await;
    let reported = running_slot_pids(&status);
    let running = status.slots.iter().filter(|s| s.running).count();
    assert_eq!(
        reported.len(),
        running,
        "two slots report the same pid: {status:?}"
    );
    assert_eq!(
        h.slot_processes(),
        reported,
        "processes on the machine vs the daemon's view: {status:?}"
    );
    assert_eq!(reported, expected.iter().copied().collect(), "{status:?}");
}

/// Deploys v1 with the short watch of `h`'s config; returns blue's pid.
async fn deploy_v1(h: &Harness) -> u32 {
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue));
    slot_pid(&status, Slot::Blue).expect("blue has a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_watch_rolls_back_to_the_previous_release() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let blue_pid = deploy_v1(&h).await;

    // A long watch for v2, so the crash surely lands in it. The graceful restart in
    // between leaves v1 running, to be adopted.
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;
    h.edit_config("duration = \"2s\"", "duration = \"60s\"");
    h.restart().await;
    assert_eq!(
        slot_pid(&h.status().await, Slot::Blue),
        Some(blue_pid),
        "v1 was not adopted"
    );

    let id = h.deploy_no_wait("v2").await;
    h.wait_for_phase(id, "watch", 60).await;
    proxy_serves(&h, "v2").await;
    let green_pid = slot_pid(&h.status().await, Slot::Green).expect("green has a pid");

    h.crash().await;
    h.restart().await;

    proxy_serves(&h, "v1").await;
    let d = h.deployment(id).await.deployment;
    assert_eq!(d.outcome, Some(DeploymentOutcome::RolledBack), "{d:?}");
    let reason = d.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("interrupted"), "reason: {reason:?}");
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue));
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    assert!(status.active_deployment.is_none(), "{status:?}");
    assert_eq!(
        slot_pid(&status, Slot::Blue),
        Some(blue_pid),
        "v1 was restarted instead of adopted"
    );
    assert!(
        !h.slot_processes().contains(&green_pid),
        "v2's process still runs"
    );
    only_these_slot_processes_run(&h, &[blue_pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_under_load_with_no_deployment_keeps_the_live_release_and_adopts_it() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let blue_pid = deploy_v1(&h).await;

    let load = Load::start(h.proxy, "/", 40, 4, Duration::from_secs(120));
    wait_until(20, "the load to reach v1", || async {
        (load.stats().ok > 0).then_some(())
    })
    .await;

    h.crash().await;
    h.restart().await;
    // Requests sent while no daemon listened fail; what matters is what follows.
    let after_restart = load.stats();
    wait_until(30, "the load to be answered after the restart", || async {
        (load.stats().since(&after_restart).ok >= 20).then_some(())
    })
    .await;
    let total = load.stop().await;
    assert_eq!(
        total.by_version.keys().collect::<Vec<_>>(),
        ["v1"],
        "{total:?}"
    );

    proxy_serves(&h, "v1").await;
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    assert_eq!(
        slot_pid(&status, Slot::Blue),
        Some(blue_pid),
        "v1 was restarted instead of adopted"
    );
    assert!(
        status
            .slots
            .iter()
            .any(|s| s.record.slot == Slot::Blue && s.running),
        "{status:?}"
    );
    only_these_slot_processes_run(&h, &[blue_pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_waiting_for_health_marks_the_deployment_interrupted() {
    // v2 answers 503 on its health checks; with these thresholds it stays in
    // wait_healthy for two minutes instead of failing after three rounds.
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .watch("2s")
        .unhealthy_threshold(10_000)
        .health_deadline("120s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let blue_pid = deploy_v1(&h).await;

    let id = h.deploy_no_wait("v2").await;
    h.wait_for_phase(id, "wait_healthy", 30).await;
    // Wait for a real health round against the started v2.
    wait_until(30, "a failed health round of v2", || async {
        let d = h.deployment(id).await.deployment;
        d.checks
            .iter()
            .any(|c| !c.ok && c.detail.contains("503"))
            .then_some(())
    })
    .await;
    let green_pid = slot_pid(&h.status().await, Slot::Green).expect("green has a pid");

    h.crash().await;
    h.restart().await;

    proxy_serves(&h, "v1").await;
    let d = h.deployment(id).await.deployment;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Interrupted), "{d:?}");
    assert!(d.switched_at.is_none(), "{d:?}");
    let reason = d.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("interrupted"), "reason: {reason:?}");
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue));
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    assert_eq!(slot_pid(&status, Slot::Blue), Some(blue_pid));
    assert!(
        !h.slot_processes().contains(&green_pid),
        "v2's process still runs"
    );
    only_these_slot_processes_run(&h, &[blue_pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_mid_deployment_the_next_deployment_goes_through() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .watch("2s")
        .unhealthy_threshold(10_000)
        .health_deadline("120s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    deploy_v1(&h).await;
    let id = h.deploy_no_wait("v2").await;
    h.wait_for_phase(id, "wait_healthy", 30).await;
    h.crash().await;
    h.restart().await;

    // The interrupted deployment holds no lock and left nothing in green's way.
    let out = h.cli(&["deploy", "web", "v3"]).await;
    assert_eq!(out.code, 0, "deploy v3 after the crash:\n{out}");
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Green));
    assert_eq!(status.live_version.as_deref(), Some("v3"));
    proxy_serves(&h, "v3").await;
    let blue = slot_pid(&status, Slot::Blue).expect("v1 is kept warm");
    let green = slot_pid(&status, Slot::Green).expect("green has a pid");
    only_these_slot_processes_run(&h, &[blue, green]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_release_that_died_with_the_daemon_is_started_again_at_boot() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let blue_pid = deploy_v1(&h).await;

    // As after a reboot: the daemon and the release are both gone.
    h.crash().await;
    let pid = nix::unistd::Pid::from_raw(blue_pid as i32);
    nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL).expect("kill v1");
    wait_until(10, "v1's process to be gone", || async {
        (!h.slot_processes().contains(&blue_pid)).then_some(())
    })
    .await;
    h.restart().await;

    proxy_serves(&h, "v1").await;
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue));
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    let new_pid = slot_pid(&status, Slot::Blue).expect("blue has a pid");
    assert_ne!(new_pid, blue_pid, "{status:?}");
    only_these_slot_processes_run(&h, &[new_pid]).await;
}
