//! The Compose runtime against the real engine and the installed Compose command line:
//! a two-component stack (frontend + backend) deployed as one project per slot.
//! These tests need Docker and `docker compose` or `docker-compose`, and fail, never
//! skip, without them.

#[path = "support/docker.rs"]
mod docker_support;
mod support;

use std::time::Duration;

use cutover::demo::load::Load;
use cutover::domain::Slot;
use cutover::runtime::compose::ComposeCli;
use cutover::store::DeploymentOutcome;
use docker_support::{deploy_and_wait, status, use_runtime, Scope};
use support::Harness;

/// The frontend receives the traffic on the slot's port; the backend is internal.
/// The frontend image is fixed and reports the deployed version; the backend image is
/// the deployed version's.
const STACK: &str = r#"services:
  frontend:
    image: cutover-demo:v1
    command: ["--version", "${CUTOVER_VERSION}"]
    ports:
      - "127.0.0.1:${CUTOVER_PORT}:8080"
    restart: on-failure
  backend:
    image: cutover-demo:${CUTOVER_VERSION}
    restart: on-failure
"#;

async fn harness(scope: &Scope) -> Harness {
    let mut h = Harness::builder()
        .watch("3s")
        .without_latency_trigger()
        .build()
        .await;
    let file = h.write("stack.yaml", STACK);
    let runtime = format!(
        "kind = \"compose\"\nfile = \"{}\"\nentry = \"frontend\"\npublic = [\"frontend\", \"backend\"]\nstop_grace = \"5s\"\n",
        file.display()
    );
    use_runtime(&h, &scope.service, &runtime);
    h.start().await;
    h
}

fn require_compose() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = rt.block_on(ComposeCli::detect()) {
        panic!("these tests need Docker Compose: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_compose_command_line_is_detected() {
    let cli = ComposeCli::detect().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cli.display() == "docker compose" || cli.display() == "docker-compose",
        "{cli:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_service_stack_is_switched_as_one_under_load() {
    std::thread::spawn(require_compose).join().unwrap();
    let scope = Scope::new();
    let h = harness(&scope).await;
    let svc = &scope.service;

    let v1 = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(v1.outcome, Some(DeploymentOutcome::Succeeded), "{v1:?}");
    let load = Load::start(h.proxy, "/", 30, 6, Duration::from_secs(300));
    support::wait_until(20, "the load to reach v1", || async {
        load.stats().by_version.contains_key("v1").then_some(())
    })
    .await;
    let before = load.stats();
    let v2 = deploy_and_wait(&h, svc, "v2").await;
    let during = load.stats().since(&before);
    load.stop().await;
    assert_eq!(v2.outcome, Some(DeploymentOutcome::Succeeded), "{v2:?}");
    assert_eq!(
        during.failed(),
        0,
        "failed requests during v1 → v2: {during:?}"
    );
    assert!(during.by_version.contains_key("v2"), "{during:?}");
    eprintln!("compose v1 → v2 under load: {during:?}");

    // Both components of the new project run the new release; the old project is the
    // running standby.
    let s = status(&h, svc).await;
    assert_eq!(s.live, Some(Slot::Green));
    let green = scope.project_containers("green");
    assert_eq!(green.len(), 2, "frontend and backend");
    let mut images: Vec<String> = green
        .iter()
        .map(|id| scope.inspect(id, "{{.Config.Image}} {{.State.Running}}"))
        .collect();
    images.sort();
    assert_eq!(images, ["cutover-demo:v1 true", "cutover-demo:v2 true"]);
    let blue = scope.project_containers("blue");
    assert_eq!(blue.len(), 2);
    let green_record = s
        .slots
        .iter()
        .find(|v| v.record.slot == Slot::Green)
        .unwrap();
    assert_eq!(
        green_record.record.handle.as_deref(),
        Some(format!("{svc}-green").as_str())
    );
    assert_eq!(
        green_record.record.identity.as_deref(),
        Some(format!("{svc}-green").as_str()),
        "a Compose slot is known to routers by its project name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_whose_backend_dies_at_start_fails_before_the_switch() {
    std::thread::spawn(require_compose).join().unwrap();
    let scope = Scope::new();
    let h = harness(&scope).await;
    let svc = &scope.service;
    let v1 = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(v1.outcome, Some(DeploymentOutcome::Succeeded), "{v1:?}");

    let broken = deploy_and_wait(&h, svc, "broken").await;
    assert_eq!(
        broken.outcome,
        Some(DeploymentOutcome::Failed),
        "{broken:?}"
    );
    assert_eq!(broken.switched_at, None);
    let reason = broken.reason.clone().unwrap_or_default();
    assert!(reason.contains("backend"), "{reason}");
    assert!(
        reason.contains("demo-app broken: exiting with code 3"),
        "the backend's log line is missing: {reason}"
    );
    let s = status(&h, svc).await;
    assert_eq!(s.live, Some(Slot::Blue));
    assert_eq!(
        h.get_proxy("/").await.unwrap(),
        (200, "hello from v1\n".into())
    );
}
