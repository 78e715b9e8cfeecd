//! The Docker runtime against the real engine: the real `cutover` daemon deploys the
//! `FROM scratch` demo images (`tests/images/README.md`) through the built-in proxy.
//! These tests need a running Docker engine and fail, never skip, without one.

#[path = "support/docker.rs"]
mod docker_support;
mod support;

use std::time::Duration;

use cutover::demo::load::Load;
use cutover::domain::Slot;
use cutover::store::DeploymentOutcome;
use docker_support::{deploy, deploy_and_wait, status, use_runtime, Scope};
use support::Harness;

/// The demo image's runtime table; `extra` adds keys.
fn runtime(image: &str, extra: &str) -> String {
    format!(
        "kind = \"docker\"\nimage = \"{image}\"\nport = 8080\nstop_grace = \"5s\"\n\
         command = [\"--version\", \"{{version}}\"]\n{extra}"
    )
}

async fn harness(scope: &Scope, watch: &str, runtime_toml: &str) -> Harness {
    let mut h = Harness::builder()
        .watch(watch)
        .without_latency_trigger()
        .build()
        .await;
    use_runtime(&h, &scope.service, runtime_toml);
    h.start().await;
    h
}

fn live_version(s: &cutover::api::ServiceStatus) -> Option<String> {
    s.live_version.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_to_v2_under_live_load_switches_containers_with_zero_failed_requests() {
    let scope = Scope::new();
    let h = harness(&scope, "5s", &runtime("cutover-demo:{version}", "")).await;
    let svc = &scope.service;

    let v1 = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(v1.outcome, Some(DeploymentOutcome::Succeeded), "{v1:?}");

    let load = Load::start(h.proxy, "/", 40, 8, Duration::from_secs(300));
    support::wait_until(20, "the load to reach v1", || async {
        load.stats().by_version.contains_key("v1").then_some(())
    })
    .await;
    let before = load.stats();
    let v2 = deploy_and_wait(&h, svc, "v2").await;
    let during = load.stats().since(&before);
    let total = load.stop().await;
    assert_eq!(v2.outcome, Some(DeploymentOutcome::Succeeded), "{v2:?}");
    assert_eq!(
        during.failed(),
        0,
        "failed requests during v1 → v2: {during:?}"
    );
    assert!(
        during.by_version.contains_key("v2"),
        "no request reached v2: {during:?}"
    );
    assert_eq!(total.failed(), 0, "{total:?}");
    eprintln!("v1 → v2 under load: {during:?}");

    // Docker's own HEALTHCHECK took part in the health rounds.
    assert!(
        v2.checks.iter().any(|c| c.name == "docker health" && c.ok),
        "no passing docker health check recorded: {:?}",
        v2.checks
    );
    // One container per slot, named and labelled; v1 stays up as the standby.
    let s = status(&h, svc).await;
    assert_eq!(live_version(&s).as_deref(), Some("v2"));
    let green = scope.container("green");
    assert_eq!(scope.inspect(&green, "{{.State.Running}}"), "true");
    assert_eq!(
        scope.inspect(&green, "{{index .Config.Labels \"io.cutover.version\"}}"),
        "v2"
    );
    assert_eq!(
        scope.inspect(&green, "{{index .Config.Labels \"io.cutover.deployment\"}}"),
        v2.id.to_string()
    );
    assert_eq!(
        scope.inspect(&green, "{{.HostConfig.RestartPolicy.Name}}"),
        "on-failure"
    );
    assert_eq!(scope.running_containers().len(), 2);
    let green_record = &s
        .slots
        .iter()
        .find(|v| v.record.slot == Slot::Green)
        .unwrap()
        .record;
    assert_eq!(green_record.handle, Some(scope.inspect(&green, "{{.Id}}")));
    assert_eq!(
        green_record.identity.as_deref(),
        Some(green.as_str()),
        "a container slot is known to routers by its container name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_on_start_fails_before_the_switch_with_its_log_lines() {
    let scope = Scope::new();
    let h = harness(&scope, "3s", &runtime("cutover-demo:{version}", "")).await;
    let svc = &scope.service;
    let v1 = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(v1.outcome, Some(DeploymentOutcome::Succeeded), "{v1:?}");

    let load = Load::start(h.proxy, "/", 20, 4, Duration::from_secs(120));
    let broken = deploy_and_wait(&h, svc, "broken").await;
    let stats = load.stop().await;

    assert_eq!(
        broken.outcome,
        Some(DeploymentOutcome::Failed),
        "{broken:?}"
    );
    assert_eq!(broken.switched_at, None, "traffic moved: {broken:?}");
    let reason = broken.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("exited with code 3")
            && reason.contains("demo-app broken: exiting with code 3"),
        "the reason lacks the exit code or the container's last log line: {reason}"
    );
    assert_eq!(stats.failed(), 0, "{stats:?}");
    assert_eq!(
        stats.by_version.keys().collect::<Vec<_>>(),
        ["v1"],
        "{stats:?}"
    );
    assert_eq!(live_version(&status(&h, svc).await).as_deref(), Some("v1"));

    // `history` shows the reason with the log line.
    let history = h.cli(&["history", svc]).await;
    assert_eq!(history.code, 0, "{history}");
    assert!(
        history
            .stdout
            .contains("demo-app broken: exiting with code 3"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_crashes_after_the_switch_is_rolled_back_by_the_restart_trigger() {
    let scope = Scope::new();
    let h = harness(&scope, "30s", &runtime("cutover-demo:{version}", "")).await;
    let svc = &scope.service;
    let v1 = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(v1.outcome, Some(DeploymentOutcome::Succeeded), "{v1:?}");

    let id = deploy(&h, svc, "v2").await;
    h.wait_for_phase(id, "watch", 60).await;
    // A crash as Docker sees one: the container's process dies with SIGKILL, and the
    // on-failure policy starts it again.
    let green = scope.container("green");
    let pid: i32 = scope.inspect(&green, "{{.State.Pid}}").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container's process");

    let d = h.wait_finished(id, 60).await;
    assert_eq!(d.outcome, Some(DeploymentOutcome::RolledBack), "{d:?}");
    let reason = d.reason.clone().unwrap_or_default();
    assert!(reason.contains("restarted"), "{reason}");
    support::wait_until(10, "the restart count to show", || async {
        let n: u32 = scope.inspect(&green, "{{.RestartCount}}").parse().ok()?;
        (n >= 1).then_some(())
    })
    .await;
    let s = status(&h, svc).await;
    assert_eq!(s.live, Some(Slot::Blue));
    assert_eq!(live_version(&s).as_deref(), Some("v1"));
    assert_eq!(
        h.get_proxy("/").await.unwrap(),
        (200, "hello from v1\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_docker_calls_unhealthy_never_passes_the_health_phase() {
    let scope = Scope::new();
    let h = harness(&scope, "3s", &runtime("cutover-demo:{version}", "")).await;
    let svc = &scope.service;
    let v1 = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(v1.outcome, Some(DeploymentOutcome::Succeeded), "{v1:?}");

    // `sick` answers Cutover's HTTP checks, but its own HEALTHCHECK fails.
    let sick = deploy_and_wait(&h, svc, "sick").await;
    assert_eq!(sick.outcome, Some(DeploymentOutcome::Failed), "{sick:?}");
    assert_eq!(sick.switched_at, None);
    let reason = sick.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("docker health") && reason.contains("HEALTHCHECK unhealthy"),
        "{reason}"
    );
    assert!(
        sick.checks.iter().any(|c| c.name == "live" && c.ok),
        "the HTTP check should have passed: {:?}",
        sick.checks
    );
    assert_eq!(live_version(&status(&h, svc).await).as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_adopts_its_containers_and_starts_no_duplicates() {
    let scope = Scope::new();
    let mut h = harness(&scope, "2s", &runtime("cutover-demo:{version}", "")).await;
    let svc = &scope.service.clone();
    for v in ["v1", "v2"] {
        let d = deploy_and_wait(&h, svc, v).await;
        assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{d:?}");
    }
    let mut before = scope.running_containers();
    before.sort();
    assert_eq!(before.len(), 2, "live v2 and standby v1");

    h.crash().await;
    h.restart().await;
    let s = status(&h, svc).await;
    assert_eq!(live_version(&s).as_deref(), Some("v2"));
    assert!(s.slots.iter().all(|v| v.running), "{:?}", s.slots);
    let mut after = scope.running_containers();
    after.sort();
    assert_eq!(
        after, before,
        "the restarted daemon replaced or duplicated containers"
    );
    assert_eq!(scope.containers().len(), 2);
    assert_eq!(
        h.get_proxy("/").await.unwrap(),
        (200, "hello from v2\n".into())
    );

    // Interrupted before its switch: the new container is stopped at boot, not adopted.
    let id = deploy(&h, svc, "v3").await;
    h.wait_for_phase(id, "wait_healthy", 60).await;
    h.crash().await;
    h.restart().await;
    let d = h.deployment(id).await.deployment;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Interrupted), "{d:?}");
    assert_eq!(
        scope.running_containers().len(),
        1,
        "only the live container runs"
    );
    assert_eq!(
        scope.containers().len(),
        2,
        "one container per slot, never more"
    );
    // The adopted daemon still deploys into the slot.
    let v3 = deploy_and_wait(&h, svc, "v3").await;
    assert_eq!(v3.outcome, Some(DeploymentOutcome::Succeeded), "{v3:?}");
    assert_eq!(scope.containers().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_leaves_exactly_the_configured_number_of_old_releases() {
    let mut scope = Scope::new();
    let repo = format!("cutover-test-{}", scope.service);
    for v in ["v1", "v2", "v3", "v4"] {
        scope.tag(&format!("cutover-demo:{v}"), &format!("{repo}:{v}"));
    }
    let image = format!("{repo}:{{version}}");
    let h = harness(&scope, "1s", &runtime(&image, "keep_releases = 1\n")).await;
    let svc = &scope.service;
    for v in ["v1", "v2", "v3", "v4"] {
        let d = deploy_and_wait(&h, svc, v).await;
        assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{d:?}");
    }
    let present =
        |v: &str| docker_support::docker(&["image", "inspect", &format!("{repo}:{v}")]).is_ok();
    // v4 is live, v3 the standby; one older release (v2) is kept, v1 is gone.
    assert!(present("v4") && present("v3"), "images in use were removed");
    assert!(present("v2"), "the one old release to keep was removed");
    assert!(!present("v1"), "the release beyond keep_releases was kept");
}
