//! In-process tests of the controller, the runner and boot recovery (issue #11 item 8):
//! a fake runtime whose releases are in-process demo apps, the real built-in router
//! and per-slot statistics, an in-memory store. No daemon, no child process.
//!
//! The races of issue #11's bugs 1 and 2 are reproduced deterministically: the test
//! holds a request "in flight" on a slot (the router's own in-flight counter) and sees
//! every drain the router is asked for, so it knows exactly where the reaper and the
//! deployment are, without sleeping on a guess.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cutover::config::Config;
use cutover::demo::app::{app, Behaviour};
use cutover::domain::routing::{default_identity, MirrorReport, MirrorSpec, Target};
use cutover::domain::stats::StatsSnapshot;
use cutover::domain::Slot;
use cutover::orchestrator::Controller;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::router::builtin::BuiltinRouter;
use cutover::router::{Router, RouterError};
use cutover::runtime::{RunningSlot, Runtime, RuntimeError, SlotSpec, SlotStatus};
use cutover::store::{DeploymentOutcome, SlotState, Store};
use tokio::sync::mpsc;

const SERVICE: &str = "web";

/// Bounds every wait of these tests (they never sleep to create an order).
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A release: the demo app serving `version` on a loopback port.
struct Release {
    version: String,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// A runtime that runs releases as in-process servers and logs what it was asked.
#[derive(Default)]
struct FakeRuntime {
    releases: Mutex<HashMap<Slot, Release>>,
    log: Mutex<Vec<String>>,
}

impl FakeRuntime {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    fn version_in(&self, slot: Slot) -> Option<String> {
        self.releases
            .lock()
            .unwrap()
            .get(&slot)
            .map(|r| r.version.clone())
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, spec: &SlotSpec) -> Result<RunningSlot, RuntimeError> {
        self.stop(&spec.service, spec.slot).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(Behaviour::healthy(spec.version.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        self.note(format!("start {} {}", spec.slot, spec.version));
        self.releases.lock().unwrap().insert(
            spec.slot,
            Release {
                version: spec.version.clone(),
                addr,
                task,
            },
        );
        Ok(RunningSlot {
            endpoint: addr.into(),
            handle: format!("fake:{}:{}", spec.slot, spec.version),
            identity: default_identity(&spec.service, spec.slot),
        })
    }

    async fn stop(&self, _service: &str, slot: Slot) -> Result<(), RuntimeError> {
        if let Some(r) = self.releases.lock().unwrap().remove(&slot) {
            r.task.abort();
            self.note(format!("stop {slot} {}", r.version));
        }
        Ok(())
    }

    async fn status(&self, _service: &str, slot: Slot) -> SlotStatus {
        match self.releases.lock().unwrap().contains_key(&slot) {
            true => SlotStatus::Running { restarts: 0 },
            false => SlotStatus::NotRunning,
        }
    }

    async fn adopt(&self, service: &str, slot: Slot, running: &RunningSlot) -> Option<RunningSlot> {
        let releases = self.releases.lock().unwrap();
        let r = releases.get(&slot)?;
        (running.handle == format!("fake:{slot}:{}", r.version)).then(|| RunningSlot {
            endpoint: r.addr.into(),
            handle: running.handle.clone(),
            identity: default_identity(service, slot),
        })
    }

    async fn log_tail(&self, _service: &str, _slot: Slot, _lines: usize) -> Vec<String> {
        Vec::new()
    }
}

/// The built-in router, reporting every drain it is asked for.
struct SpyRouter {
    inner: BuiltinRouter,
    drains: mpsc::UnboundedSender<Slot>,
}

#[async_trait]
impl Router for SpyRouter {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn apply(
        &self,
        service: &str,
        live: Option<Target>,
        preview: Option<Target>,
    ) -> Result<(), RouterError> {
        self.inner.apply(service, live, preview).await
    }
    fn supports_weights(&self) -> bool {
        self.inner.supports_weights()
    }
    async fn apply_weighted(
        &self,
        service: &str,
        stable: Target,
        canary: Target,
        percent: u8,
    ) -> Result<(), RouterError> {
        self.inner
            .apply_weighted(service, stable, canary, percent)
            .await
    }
    async fn mirror(&self, service: &str, spec: Option<MirrorSpec>) -> Result<(), RouterError> {
        self.inner.mirror(service, spec).await
    }
    async fn mirror_report(&self, service: &str) -> Option<MirrorReport> {
        self.inner.mirror_report(service).await
    }
    async fn observed_live(&self, service: &str) -> Result<Option<Slot>, RouterError> {
        self.inner.observed_live(service).await
    }
    async fn drain(
        &self,
        service: &str,
        slot: Slot,
        timeout: Duration,
    ) -> Result<u64, RouterError> {
        let _ = self.drains.send(slot);
        self.inner.drain(service, slot, timeout).await
    }
    async fn stats(&self, service: &str, slot: Slot) -> Option<StatsSnapshot> {
        self.inner.stats(service, slot).await
    }
}

/// One service on the fake runtime and the spied built-in router.
struct World {
    controller: Arc<Controller>,
    runtime: Arc<FakeRuntime>,
    stats: Arc<StatsRegistry>,
    routes: Arc<Routes>,
    drains: mpsc::UnboundedReceiver<Slot>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, warm_for: &str) -> Config {
    let text = format!(
        r#"
[daemon]
state_dir = "{state}"

[services.web]
listen = "127.0.0.1:1"
warm_for = "{warm_for}"

[services.web.runtime]
kind = "process"
command = ["unused", "{{port}}"]

[services.web.health]
interval = "20ms"
healthy_threshold = 1
deadline = "10s"

[[services.web.health.checks]]
name = "live"
http = {{ path = "/health" }}

[services.web.watch]
duration = "0s"

[services.web.supervise]
enabled = false
"#,
        state = dir.display()
    );
    cutover::config::parse(&text, None).expect("test config")
}

async fn world(
    warm_for: &str,
    store: Option<Arc<Store>>,
    runtime: Option<Arc<FakeRuntime>>,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config(dir.path(), warm_for));
    let store = store.unwrap_or_else(|| Arc::new(Store::open_in_memory().unwrap()));
    let stats = Arc::new(StatsRegistry::new([SERVICE]));
    let routes = Arc::new(Routes::new());
    let (tx, drains) = mpsc::unbounded_channel();
    let router: Arc<dyn Router> = Arc::new(SpyRouter {
        inner: BuiltinRouter::new(routes.clone(), stats.clone()),
        drains: tx,
    });
    let runtime = runtime.unwrap_or_default();
    let controller = Controller::new(
        config,
        store.clone(),
        HashMap::from([(SERVICE.to_string(), router)]),
        HashMap::from([(SERVICE.to_string(), runtime.clone() as Arc<dyn Runtime>)]),
    );
    controller.boot().await.expect("boot");
    World {
        controller,
        runtime,
        stats,
        routes,
        drains,
        store,
        _dir: dir,
    }
}

impl World {
    async fn deploy(&self, version: &str) -> i64 {
        self.controller
            .deploy(SERVICE, version, "test")
            .await
            .expect("deploy")
    }

    async fn finished(&self, id: i64) -> DeploymentOutcome {
        within("the deployment to finish", async {
            loop {
                if let Some(o) = self.store.deployment(id).unwrap().outcome {
                    return o;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    /// Deploys `version` and expects it to succeed.
    async fn deployed(&self, version: &str) {
        let id = self.deploy(version).await;
        let outcome = self.finished(id).await;
        let d = self.store.deployment(id).unwrap();
        assert_eq!(
            outcome,
            DeploymentOutcome::Succeeded,
            "{version}: {:?}",
            d.reason
        );
    }

    /// A request in flight on `slot` until the returned guard is dropped.
    fn hold_request(&self, slot: Slot) -> cutover::proxy::stats::OwnedInFlight {
        self.stats.get(SERVICE, slot).unwrap().begin_owned()
    }

    /// Waits for the router to be asked to drain `slot`.
    async fn drain_asked(&mut self, slot: Slot) {
        within("a drain of the slot", async {
            while let Some(s) = self.drains.recv().await {
                if s == slot {
                    return;
                }
            }
        })
        .await
    }

    fn live_endpoint(&self) -> Option<String> {
        self.routes
            .get(SERVICE)
            .live
            .map(|u| u.endpoint.to_string())
    }
}

#[tokio::test]
async fn a_release_in_a_warm_standby_is_replaced_only_after_its_requests_finished() {
    let mut w = world("1h", None, None).await;
    w.deployed("v1").await;
    w.deployed("v2").await; // blue keeps v1 warm
    assert_eq!(w.runtime.version_in(Slot::Blue).as_deref(), Some("v1"));

    let request = w.hold_request(Slot::Blue);
    let id = w.deploy("v3").await; // into blue
    w.drain_asked(Slot::Blue).await;
    // The drain is waiting on the request: v1 is still there, v3 not started.
    tokio::task::yield_now().await;
    assert_eq!(w.runtime.version_in(Slot::Blue).as_deref(), Some("v1"));
    assert!(!w.runtime.log().contains(&"start blue v3".to_string()));

    drop(request);
    assert_eq!(w.finished(id).await, DeploymentOutcome::Succeeded);
    let log = w.runtime.log();
    let stop_v1 = log.iter().position(|l| l == "stop blue v1").unwrap();
    let start_v3 = log.iter().position(|l| l == "start blue v3").unwrap();
    assert!(stop_v1 < start_v3, "{log:?}");
}

#[tokio::test]
async fn the_reaper_never_stops_a_release_a_deployment_started_during_its_drain() {
    let mut w = world("1h", None, None).await;
    w.deployed("v1").await;
    w.deployed("v2").await; // blue keeps v1 warm...
                            // ...and its warm period is over, as the store would show it an hour later.
    let mut rec = w.store.service(SERVICE).unwrap().slots[Slot::Blue.index()].clone();
    assert_eq!(rec.state, SlotState::Standby);
    rec.standby_until = Some(1);
    w.store.update_slot(SERVICE, &rec, None, None, 2).unwrap();

    // The reaper drains blue (a request holds it)...
    let request = w.hold_request(Slot::Blue);
    let reaper = tokio::spawn({
        let c = w.controller.clone();
        async move { c.reap_once().await }
    });
    w.drain_asked(Slot::Blue).await;
    // ...while a deployment into blue begins; its start drains blue too.
    let id = w.deploy("v3").await;
    w.drain_asked(Slot::Blue).await;
    drop(request);

    within("the reaper", reaper).await.unwrap().unwrap();
    assert_eq!(w.finished(id).await, DeploymentOutcome::Succeeded);
    assert_eq!(w.runtime.version_in(Slot::Blue).as_deref(), Some("v3"));
    let log = w.runtime.log();
    assert!(
        !log.iter().any(|l| l == "stop blue v3"),
        "the reaper stopped the new release: {log:?}"
    );
    let rec = w.store.service(SERVICE).unwrap();
    assert_eq!(rec.live, Some(Slot::Blue));
    assert_eq!(w.live_endpoint(), rec.slots[Slot::Blue.index()].addr);
    // A later pass finds nothing to reap: v3 is live, not a standby.
    w.controller.reap_once().await.unwrap();
    assert_eq!(w.runtime.version_in(Slot::Blue).as_deref(), Some("v3"));
}

#[tokio::test]
async fn boot_adopts_what_runs_and_routes_to_the_stored_live_slot() {
    let first = world("1h", None, None).await;
    first.deployed("v1").await;
    first.deployed("v2").await;
    let (store, runtime) = (first.store.clone(), first.runtime.clone());
    let starts = runtime.log().len();
    drop(first);

    // A new controller on the same store and runtime: nothing is started again.
    let again = world("1h", Some(store.clone()), Some(runtime.clone())).await;
    assert_eq!(runtime.log().len(), starts, "{:?}", runtime.log());
    let rec = store.service(SERVICE).unwrap();
    assert_eq!(rec.live, Some(Slot::Green));
    assert_eq!(again.live_endpoint(), rec.slots[Slot::Green.index()].addr);
}

#[tokio::test]
async fn boot_settles_a_deployment_interrupted_after_its_switch_by_going_back() {
    let first = world("1h", None, None).await;
    first.deployed("v1").await;
    // A deployment whose switch was recorded but which never finished (the daemon
    // died in its watch): recorded by hand as the runner would have left it.
    let id = first.deploy("v2").await;
    assert_eq!(first.finished(id).await, DeploymentOutcome::Succeeded);
    let (store, runtime) = (first.store.clone(), first.runtime.clone());
    drop(first);
    let new = cutover::store::NewDeployment {
        service: SERVICE.into(),
        kind: cutover::store::DeploymentKind::Deploy,
        version: "v3".into(),
        target_slot: Slot::Blue,
        from_slot: Some(Slot::Green),
        from_version: Some("v2".into()),
        triggered_by: "test".into(),
        at: 10,
    };
    let id = store.begin_deployment(&new).unwrap();
    store
        .apply(&cutover::store::Transition {
            deployment_id: id,
            at: 11,
            enter_phase: Some("watch".into()),
            live: Some(Some(Slot::Blue)),
            switched_at: Some(11),
            ..Default::default()
        })
        .unwrap();

    let again = world("1h", Some(store.clone()), Some(runtime)).await;
    let d = store.deployment(id).unwrap();
    assert_eq!(
        d.outcome,
        Some(DeploymentOutcome::RolledBack),
        "{:?}",
        d.reason
    );
    let rec = store.service(SERVICE).unwrap();
    assert_eq!(rec.live, Some(Slot::Green));
    assert_eq!(again.live_endpoint(), rec.slots[Slot::Green.index()].addr);
}
