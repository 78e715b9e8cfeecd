//! The Kubernetes runtime and router through the real `kubectl`, against the stand-in
//! API server of `tests/kube/standin.py` (no Kubernetes API server can run on this
//! machine; `tests/support/kube.rs` says what the stand-in does and does not do).
//!
//! A deployment applies a Deployment per slot whose pods really run (the demo app as a
//! local process) behind per-slot NodePort Services; the Service selector switch moves
//! new connections to the new slot with zero failed requests under live load, and a
//! rollback moves it back; a release that fails its checks never reaches the Service
//! and its Deployment is scaled to zero; a missing Service fails the deployment with a
//! message naming it; a canary through a Gateway API HTTPRoute sets the weights step by
//! step, with traffic through the gateway split between both releases.

#[path = "support/kube.rs"]
mod kube;
#[path = "support/routers.rs"]
mod routers;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cutover::domain::Slot;
use cutover::store::DeploymentOutcome;
use kube::StandIn;
use serde_json::json;
use support::{free_addr, wait_until, Harness};

struct Cluster {
    k: StandIn,
    /// The public Service `web` (what users reach).
    public: SocketAddr,
    /// The Gateway's listener, when the route is an HTTPRoute.
    gateway: Option<SocketAddr>,
}

/// The daemon with the Kubernetes runtime and router against a fresh stand-in: the
/// per-slot NodePort Services `web-blue` and `web-green`, and either the public Service
/// `web` (selector switch) or a Gateway with the HTTPRoute `web` (weights).
async fn daemon(builder: support::Builder, httproute: bool) -> (Harness, Cluster) {
    daemon_with(builder, httproute, |t| t).await
}

/// [`daemon`] with the runtime table changed by `runtime`.
async fn daemon_with(
    builder: support::Builder,
    httproute: bool,
    runtime: impl FnOnce(String) -> String,
) -> (Harness, Cluster) {
    let mut h = builder.watch("1s").without_latency_trigger().build().await;
    let k = kube::start_standin(h.dir()).await;
    let (blue, green, public) = (free_addr(), free_addr(), free_addr());
    k.node_port_service("web-blue", blue.port(), Some("blue"));
    k.node_port_service("web-green", green.port(), Some("green"));
    let gateway = if httproute {
        let gw = free_addr();
        k.apply(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": { "name": "edge", "namespace": "default" },
            "spec": { "gatewayClassName": "standin", "listeners": [{ "name": "http", "protocol": "HTTP", "port": gw.port() }] },
        }));
        k.apply(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "web", "namespace": "default" },
            "spec": {
                "parentRefs": [{ "name": "edge" }],
                "rules": [{ "backendRefs": [
                    { "name": "web-blue", "port": 80, "weight": 100 },
                    { "name": "web-green", "port": 80, "weight": 0 },
                ] }],
            },
        }));
        Some(gw)
    } else {
        k.node_port_service("web", public.port(), Some("blue"));
        None
    };
    kube::use_runtime(
        &h,
        &runtime(kube::runtime_toml(
            &k,
            &h.dir().join("behaviour.toml"),
            blue,
            green,
        )),
    );
    let route = if httproute {
        "httproute = \"web\"\n"
    } else {
        ""
    };
    routers::use_router(
        &h,
        &format!(
            "[services.web.router]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\n{route}settle = \"0s\"\ntimeout = \"10s\"\n\n",
            k.kubeconfig.display()
        ),
    );
    h.start().await;
    (h, Cluster { k, public, gateway })
}

fn replicas(k: &StandIn, name: &str) -> Option<u64> {
    k.get("deployment", name)
        .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_under_live_load_moves_the_services_selector_and_a_rollback_moves_it_back() {
    let (h, c) = daemon(Harness::builder(), false).await;
    let k = &c.k;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}\n{}", h.daemon_logs(), k.server.logs());
    let d = k.get("deployment", "web-blue").expect("web-blue exists");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.test/demo:v1"
    );
    assert_eq!(
        d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "cutover"
    );
    assert_eq!(k.selected_slot("web").as_deref(), Some("blue"));
    assert_eq!(routers::answered_by(c.public).await, "v1");
    // `cutover logs` reads the slot's pods through kubectl.
    let logs = h.cli(&["logs", "web", "--slot", "blue"]).await;
    assert_eq!(logs.code, 0, "{logs}");
    assert!(logs.stdout.contains("demo-app v1 listening"), "{logs}");

    // Live load on keep-alive connections through the public Service.
    let load = cutover::demo::load::Load::start(c.public, "/", 500, 16, Duration::from_secs(120));
    wait_until(20, "the load to reach v1", || async {
        (load.stats().by_version.get("v1").copied().unwrap_or(0) > 50).then_some(())
    })
    .await;
    let before = load.stats();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = load.stats().since(&before);
    load.stop().await;
    assert_eq!(v2.code, 0, "{v2}\n{}", h.daemon_logs());
    println!("kubernetes selector switch under load: {during:?}");
    assert_eq!(during.failed(), 0, "{during:?}");
    assert!(during.sent > 100, "{during:?}");

    // New connections reach the new slot; the old one stays warm for a rollback.
    assert_eq!(k.selected_slot("web").as_deref(), Some("green"));
    assert_eq!(routers::answered_by(c.public).await, "v2");
    assert_eq!(replicas(k, "web-green"), Some(1));
    assert_eq!(
        replicas(k, "web-blue"),
        Some(1),
        "the previous release stays warm"
    );
    let status = h.status().await;
    assert_eq!(status.observed_live, Some(Slot::Green));
    assert!(!status.drift, "{status:?}");

    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}\n{}", h.daemon_logs());
    assert_eq!(k.selected_slot("web").as_deref(), Some("blue"));
    assert_eq!(routers::answered_by(c.public).await, "v1");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));

    // Drift shows when someone points the Service elsewhere by hand.
    k.patch_selector("web", "cutover.dev/slot", "green");
    let status = h.status().await;
    assert_eq!(status.observed_live, Some(Slot::Green));
    assert!(status.drift, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_checks_never_reaches_the_service_and_is_scaled_to_zero() {
    let (h, c) = daemon(
        Harness::builder().behaviour("[v2]\nunhealthy = true\n"),
        false,
    )
    .await;
    let k = &c.k;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}", h.daemon_logs());
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}\n{}", h.daemon_logs());
    assert_eq!(k.selected_slot("web").as_deref(), Some("blue"));
    assert_eq!(routers::answered_by(c.public).await, "v1");
    wait_until(20, "the failed slot scaled to zero", || async {
        (replicas(k, "web-green") == Some(0)).then_some(())
    })
    .await;
    wait_until(20, "the failed slot's pods gone", || async {
        k.pods("green").is_empty().then_some(())
    })
    .await;
    assert_eq!(replicas(k, "web-blue"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_service_fails_the_deployment_naming_it_and_leaves_the_cluster_as_it_was() {
    let (h, c) = daemon(Harness::builder(), false).await;
    let k = &c.k;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}", h.daemon_logs());
    let (code, _, err) = k.kubectl(&["delete", "service", "web"], None);
    assert_eq!(code, 0, "{err}");
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}\n{}", h.daemon_logs());
    let said = format!("{v2}\n{}", h.daemon_logs());
    assert!(
        said.contains("service web does not exist in namespace default"),
        "{said}"
    );
    // The live slot is untouched; the new one is stopped again.
    assert_eq!(replicas(k, "web-blue"), Some(1));
    wait_until(20, "the new slot scaled to zero", || async {
        (replicas(k, "web-green") == Some(0)).then_some(())
    })
    .await;
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_that_no_ready_pod_of_the_new_slot_matches_is_refused_before_the_switch() {
    let (h, c) = daemon(Harness::builder(), false).await;
    let k = &c.k;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}", h.daemon_logs());
    // Someone adds a label to the Service's selector that Cutover's pods do not carry.
    k.patch_selector("web", "tier", "frontend");
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}\n{}", h.daemon_logs());
    let said = format!("{v2}\n{}", h.daemon_logs());
    assert!(
        said.contains(
            "no ready pod matches app.kubernetes.io/name=web,cutover.dev/slot=green,tier=frontend"
        ),
        "{said}"
    );
    // Refused before the patch: the selector still names blue.
    assert_eq!(k.selected_slot("web").as_deref(), Some("blue"));
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_through_an_httproute_sets_the_weights_step_by_step() {
    let builder = Harness::builder().edit(
        "[services.web.watch]",
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [ { weight = 50, pause = \"until-promoted\", analyze = false } ]\n\n[services.web.watch]",
    );
    let (h, c) = daemon(builder, true).await;
    let k = &c.k;
    let gw = c.gateway.expect("a gateway");
    let weights = || {
        let r = k.get("httproute", "web").expect("the route");
        let refs = r["spec"]["rules"][0]["backendRefs"].clone();
        let w = |name: &str| {
            refs.as_array()
                .and_then(|a| a.iter().find(|b| b["name"] == name))
                .and_then(|b| b["weight"].as_u64())
        };
        (w("web-blue"), w("web-green"))
    };
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}\n{}", h.daemon_logs(), k.server.logs());
    assert_eq!(weights(), (Some(100), Some(0)));
    assert_eq!(routers::answered_by(gw).await, "v1");

    let id = h.deploy_no_wait("v2").await;
    wait_until(60, "the canary reaches its step", || async {
        let s = h.cli(&["status", "web", "--json"]).await.json();
        (s["progress"]["canary"]["step"] == 1).then_some(())
    })
    .await;
    // The step shows in `status` as it begins; the route follows once the patch is in.
    wait_until(30, "the route's weights at 50/50", || async {
        (weights() == (Some(50), Some(50))).then_some(())
    })
    .await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        *seen.entry(routers::answered_by(gw).await).or_insert(0) += 1;
    }
    assert!(
        seen.contains_key("v1") && seen.contains_key("v2") && seen.len() == 2,
        "both releases answer through the gateway: {seen:?}"
    );

    let out = h.cli(&["promote", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    let d = h.wait_finished(id, 60).await;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{d:?}");
    assert_eq!(weights(), (Some(0), Some(100)));
    assert_eq!(routers::answered_by(gw).await, "v2");
    assert_eq!(h.status().await.observed_live, Some(Slot::Green));

    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}\n{}", h.daemon_logs());
    assert_eq!(weights(), (Some(100), Some(0)));
    assert_eq!(routers::answered_by(gw).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_release_fails_before_the_switch_with_the_pods_reason() {
    // Release "crash" exits at once; every other one is the demo app.
    let (h, c) = daemon_with(Harness::builder().health_deadline("60s"), false, |t| {
        let exe = support::exe();
        let start = t.find("command = [").expect("a command");
        let end = start + t[start..].find('\n').expect("a line");
        let script = format!(
            "if [ \\\"{{version}}\\\" = crash ]; then echo \\\"boom: no config\\\" >&2; exit 3; fi; exec {exe} demo-app --port $PORT --version {{version}}"
        );
        let t = format!("{}command = [\"sh\", \"-c\", \"{script}\"]{}", &t[..start], &t[end..]);
        // Green is reached where nothing listens, as a Service without ready endpoints
        // refuses connections: only the runtime's verdict can answer for it.
        let g = t.find("green = \"").expect("green's endpoint") + "green = \"".len();
        let g_end = g + t[g..].find('"').expect("closing quote");
        format!("{}{}{}", &t[..g], free_addr(), &t[g_end..])
    })
    .await;
    let k = &c.k;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}\n{}", h.daemon_logs(), k.server.logs());
    let bad = h.cli(&["deploy", "web", "crash"]).await;
    assert_eq!(bad.code, 1, "{bad}\n{}", h.daemon_logs());
    let said = format!("{bad}\n{}", h.daemon_logs());
    // Failed on the pods' state by the unhealthy threshold, not at the health deadline.
    assert!(said.contains("CrashLoopBackOff"), "{said}");
    assert!(said.contains("unhealthy 3 times in a row"), "{said}");
    assert!(!said.contains("(deadline)"), "{said}");
    assert_eq!(k.selected_slot("web").as_deref(), Some("blue"));
    assert_eq!(routers::answered_by(c.public).await, "v1");
    let history = h.cli(&["history", "web"]).await;
    assert!(history.stdout.contains("CrashLoopBackOff"), "{history}");
}

/// The stand-in's own check (`tests/kube/check.sh`): every kubectl command Cutover and
/// these tests use, against the stand-in, with the kubectl on `PATH`: the stand-in
/// answers as the API server would (wording, status codes, rollouts, forwarding,
/// weights, a wrong token, its pods' processes gone when it is killed).
#[test]
fn the_standin_answers_kubectl_as_the_api_server_would() {
    let kubectl = routers::require("kubectl", "apt-get install kubernetes-client");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/check.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("KUBECTL", kubectl)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}

/// The Kubernetes runtime behind Cutover's own proxy (the default router): the proxy
/// routes to the slots' Services, so the watch sees every request. A release answering
/// half its requests with errors passes its checks (they do not touch `/`), goes live
/// and is rolled back by the error-rate trigger; a daemon killed with -9 and restarted
/// adopts the running Deployments without a new rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_built_in_proxy_the_watch_rolls_back_by_error_rate_and_a_restart_adopts() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nerror_rate = 0.5\n")
        .without_latency_trigger()
        .build()
        .await;
    let k = kube::start_standin(h.dir()).await;
    let (blue, green) = (free_addr(), free_addr());
    k.node_port_service("web-blue", blue.port(), Some("blue"));
    k.node_port_service("web-green", green.port(), Some("green"));
    kube::use_runtime(
        &h,
        &kube::runtime_toml(&k, &h.dir().join("behaviour.toml"), blue, green),
    );
    h.start().await;

    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}\n{}", h.daemon_logs(), k.server.logs());
    h.wait_serving("v1").await;
    let load = cutover::demo::load::Load::start(h.proxy, "/", 200, 8, Duration::from_secs(120));
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    load.stop().await;
    assert_eq!(v2.code, 1, "{v2}\n{}", h.daemon_logs());
    let said = format!("{v2}\n{}", h.daemon_logs());
    assert!(said.contains("rolled_back — error rate"), "{said}");
    h.wait_serving("v1").await;
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v1"));
    let green_errors = status
        .slots
        .iter()
        .find(|s| s.record.slot == Slot::Green)
        .map(|s| s.errors)
        .unwrap_or(0);
    assert!(
        green_errors > 0,
        "the proxy counted v2's errors: {status:?}"
    );

    // kill -9 and restart: the live Deployment is adopted, its pods left as they were.
    let pods_before = k.pods("blue");
    assert_eq!(pods_before.len(), 1, "{pods_before:?}");
    h.crash().await;
    h.restart().await;
    h.wait_serving("v1").await;
    assert_eq!(
        k.pods("blue"),
        pods_before,
        "no new rollout after the restart"
    );
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
}

/// Every kubectl call is a process, and a health round used to make four (the slot's
/// status and the runtime's verdict each read the Deployment and its pods). Now a
/// round reads the slot once, the Deployment and its pods together, and the verdict
/// reuses it. A wrapper kubectl records every call the runtime makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_round_reads_the_slot_with_one_kubectl_call() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls.log");
    let wrapper = dir.path().join("kubectl");
    let real = routers::require("kubectl", "apt-get install kubernetes-client");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (h, c) = daemon_with(Harness::builder().healthy_threshold(8), false, |t| {
        t.replacen(
            "kind = \"kubernetes\"\n",
            &format!(
                "kind = \"kubernetes\"\nkubectl = \"{}\"\n",
                wrapper.display()
            ),
            1,
        )
    })
    .await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(
        v1.code,
        0,
        "{v1}\n{}\n{}",
        h.daemon_logs(),
        c.k.server.logs()
    );
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    // Every read of a slot is the one combined call.
    for read in log.lines().filter(|l| l.contains(" get ")) {
        assert!(
            read.contains("get deployments,pods -l app.kubernetes.io/name=web,cutover.dev/slot="),
            "{read}\n{log}"
        );
    }
    // From the start of v1's Deployment on.
    let applied = log
        .find(" apply ")
        .unwrap_or_else(|| panic!("no apply: {log}"));
    let reads: Vec<&str> = log[applied..]
        .lines()
        .filter(|l| l.contains(" get "))
        .collect();
    let history = h.cli(&["history", "web", "--json"]).await;
    let rounds = history.json()[0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["name"] == "kubernetes health")
        .count();
    assert!(rounds >= 8, "{history}");
    println!("{} kubectl reads for {rounds} health rounds", reads.len());
    // One read per round, plus the status reads around the start and the switch
    // (three): a verdict reads again only when its round's checks took over a second,
    // which the bound tolerates for a third of the rounds; two reads per round do not
    // pass.
    assert!(
        reads.len() <= rounds * 4 / 3 + 3,
        "{} reads for {rounds} health rounds:\n{log}",
        reads.len()
    );
}
