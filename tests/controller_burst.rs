//! The burst trigger and the shield end to end in process: the controller and runner
//! deploy a release that fails every request (the demo app with `error_rate = 1`) on
//! a fake runtime, behind the real built-in router and proxy; real clients send
//! requests through the proxy during the watch. The trigger switches traffic back
//! after exactly N failures, the deployment ends `rolled_back` naming the trigger and
//! its counts, and with the shield on no client sees a failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cutover::config::Config;
use cutover::demo::app::{app, Behaviour};
use cutover::domain::routing::default_identity;
use cutover::domain::Slot;
use cutover::orchestrator::Controller;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::proxy::{serve_with_grace, ListenerRoutes, Proxy, ProxySettings};
use cutover::router::builtin::BuiltinRouter;
use cutover::router::Router;
use cutover::runtime::{RunningSlot, Runtime, RuntimeError, SlotSpec, SlotStatus};
use cutover::store::{DeploymentOutcome, Store};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SERVICE: &str = "web";

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Releases are in-process demo apps; a version starting with `bad` fails every
/// request to `/` with a 500 (its health check passes).
#[derive(Default)]
struct FakeRuntime {
    releases: Mutex<HashMap<Slot, tokio::task::JoinHandle<()>>>,
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
        let mut behaviour = Behaviour::healthy(spec.version.clone());
        if spec.version.starts_with("bad") {
            behaviour.error_rate = 1.0;
        }
        let router = app(behaviour);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        self.releases.lock().unwrap().insert(spec.slot, task);
        Ok(RunningSlot {
            endpoint: addr.into(),
            handle: format!("fake:{}:{}", spec.slot, spec.version),
            identity: default_identity(&spec.service, spec.slot),
        })
    }

    async fn stop(&self, _service: &str, slot: Slot) -> Result<(), RuntimeError> {
        if let Some(task) = self.releases.lock().unwrap().remove(&slot) {
            task.abort();
        }
        Ok(())
    }

    async fn status(&self, _service: &str, slot: Slot) -> SlotStatus {
        match self.releases.lock().unwrap().contains_key(&slot) {
            true => SlotStatus::Running { restarts: 0 },
            false => SlotStatus::NotRunning,
        }
    }

    async fn adopt(&self, _: &str, _: Slot, _: &RunningSlot) -> Option<RunningSlot> {
        None
    }

    async fn log_tail(&self, _service: &str, _slot: Slot, _lines: usize) -> Vec<String> {
        Vec::new()
    }
}

fn config(dir: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        r#"
[daemon]
state_dir = "{state}"

[services.web]
listen = "127.0.0.1:1"
warm_for = "1h"

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

# Long enough for the test's requests; the trigger is armed until it ends.
[services.web.watch]
duration = "3s"

[services.web.supervise]
enabled = false

[services.web.burst]
consecutive_failures = 4
{extra}
"#,
        state = dir.display()
    );
    cutover::config::parse(&text, None).expect("test config")
}

struct World {
    controller: Arc<Controller>,
    store: Arc<Store>,
    routes: Arc<Routes>,
    stats: Arc<StatsRegistry>,
    proxy: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config(dir.path(), extra));
    let store = Arc::new(Store::open_in_memory().unwrap());
    let stats = Arc::new(StatsRegistry::new([SERVICE]));
    let routes = Arc::new(Routes::new());
    let router: Arc<dyn Router> = Arc::new(BuiltinRouter::new(routes.clone(), stats.clone()));
    let runtime: Arc<dyn Runtime> = Arc::new(FakeRuntime::default());
    let controller = Controller::new(
        config,
        store.clone(),
        HashMap::from([(SERVICE.to_string(), router)]),
        HashMap::from([(SERVICE.to_string(), runtime)]),
    );
    controller.boot().await.expect("boot");
    let proxy = Proxy::new(routes.clone(), ProxySettings::default());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = ListenerRoutes {
        by_host: HashMap::new(),
        default: Some(SERVICE.to_string()),
        preview_only: false,
    };
    tokio::spawn(serve_with_grace(
        proxy,
        tcp,
        listener,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    World {
        controller,
        store,
        routes,
        stats,
        proxy: addr,
        _stop: stop,
        _dir: dir,
    }
}

impl World {
    fn live(&self) -> Option<Slot> {
        self.routes.get(SERVICE).live.map(|u| u.slot)
    }

    /// `v1` live on blue (no previous release: nothing guarded), its watch passed.
    async fn first_release(&self) {
        let id = self
            .controller
            .deploy(SERVICE, "v1", "test")
            .await
            .expect("deploy v1");
        assert_eq!(self.finished(id).await, DeploymentOutcome::Succeeded);
        assert_eq!(self.live(), Some(Slot::Blue));
    }

    async fn finished(&self, id: i64) -> DeploymentOutcome {
        within("the deployment to finish", async {
            loop {
                if let Some(o) = self.store.deployment(id).unwrap().outcome {
                    return o;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// Sends `n` GETs one after another; their statuses.
    async fn get(&self, n: usize) -> Vec<u16> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut out = Vec::new();
        for _ in 0..n {
            let uri = format!("http://{}/", self.proxy);
            let resp = client.get(uri.parse().unwrap()).await.expect("a response");
            out.push(resp.status().as_u16());
            let _ = resp.into_body().collect().await;
        }
        out
    }
}

async fn the_trigger_rolls_back(extra: &str) -> (World, Vec<u16>, String) {
    let w = world(extra).await;
    w.first_release().await;
    let id = w
        .controller
        .deploy(SERVICE, "bad-v2", "test")
        .await
        .unwrap();
    within("bad-v2 to take traffic", async {
        while w.live() != Some(Slot::Green) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let statuses = w.get(20).await;
    assert_eq!(w.finished(id).await, DeploymentOutcome::RolledBack);
    let reason = w.store.deployment(id).unwrap().reason.unwrap_or_default();
    assert_eq!(w.live(), Some(Slot::Blue));
    (w, statuses, reason)
}

#[tokio::test]
async fn the_burst_trigger_switches_back_after_exactly_n_failures_and_the_deployment_ends_rolled_back(
) {
    let (w, statuses, reason) = the_trigger_rolls_back("").await;
    // The shield retries only connection failures by default: the 500s reach clients.
    assert_eq!(&statuses[..4], &[500; 4], "{statuses:?}");
    assert!(statuses[4..].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        reason.contains("burst trigger: 4 consecutive failures on green"),
        "{reason}"
    );
    // In the event log too: the switch back and the outcome, each naming the trigger.
    let events = w.store.events(SERVICE, 100).unwrap();
    let lines: Vec<_> = events
        .iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("switching traffic back to blue: burst trigger")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("deployment_rolled_back: burst trigger")),
        "{lines:#?}"
    );
    let green = w.stats.get(SERVICE, Slot::Green).unwrap().snapshot();
    assert_eq!(green.status_class[4], 4);
}

#[tokio::test]
async fn with_the_shield_on_statuses_no_client_sees_the_failing_release() {
    let shield = "[services.web.shield]\nretry_on = [\"connect\", \"status\"]\nstatuses = [500, 502, 503, 504]\n";
    let (w, statuses, reason) = the_trigger_rolls_back(shield).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(reason.contains("4 consecutive failures"), "{reason}");
    // The failures still count against the release that failed.
    let green = w.stats.get(SERVICE, Slot::Green).unwrap();
    assert_eq!(green.snapshot().status_class[4], 4);
    assert_eq!(green.shield_retries().iter().sum::<u64>(), 4);
}
