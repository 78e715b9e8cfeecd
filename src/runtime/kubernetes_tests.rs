use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::KubeAccess;

fn runtime() -> KubernetesRuntime {
    KubernetesRuntime::new(
        "web",
        KubernetesRuntimeConfig {
            access: KubeAccess {
                kubectl: "kubectl".into(),
                kubeconfig: None,
                context: None,
                namespace: "shop".into(),
                timeout: Duration::from_secs(5),
            },
            image: "registry.example.com/web:{version}".into(),
            port: 8080,
            replicas: 2,
            command: Some(vec!["/web".into(), "--port={port}".into()]),
            args: Some(vec!["--slot".into(), "{slot}".into()]),
            env: BTreeMap::from([("RELEASE".into(), "{version}".into())]),
            labels: BTreeMap::from([("tier".into(), "api".into())]),
            ready_path: Some("/ready".into()),
            endpoints: BTreeMap::from([
                (Slot::Blue, "web-blue.shop.svc:80".parse().unwrap()),
                (Slot::Green, "web-green.shop.svc:80".parse().unwrap()),
            ]),
            extra_endpoint: Some("web-extra.shop.svc:80".parse().unwrap()),
            stop_grace: Duration::from_secs(20),
        },
    )
}

fn spec() -> SlotSpec {
    SlotSpec {
        service: "web".into(),
        slot: Slot::Green,
        version: "v2".into(),
        deployment: Some(7),
        env: vec![("DATABASE_URL".into(), "postgres://db/web_green".into())],
    }
}

#[test]
fn the_proofs_extra_instance_is_its_own_deployment_that_no_slot_selector_picks() {
    let rt = runtime();
    let m = rt.extra_manifest(&spec(), 99);
    assert_eq!(m["metadata"]["name"], "web-extra");
    assert_eq!(m["metadata"]["labels"]["cutover.dev/slot"], "extra");
    assert_eq!(
        m["spec"]["replicas"], 1,
        "one instance, whatever `replicas` says"
    );
    assert_eq!(
        m["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/name": "web", "cutover.dev/slot": "extra" })
    );
    let tpl = &m["spec"]["template"];
    assert_eq!(tpl["metadata"]["labels"]["cutover.dev/slot"], "extra");
    assert_eq!(
        tpl["metadata"]["annotations"]["cutover.dev/started-at"],
        "99"
    );
    let c = &tpl["spec"]["containers"][0];
    // The live release's pod: its image, its `{slot}`, the scratch copy's URL.
    assert_eq!(c["image"], "registry.example.com/web:v2");
    assert_eq!(c["args"], json!(["--slot", "green"]));
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "DATABASE_URL", "value": "postgres://db/web_green" })),
        "{}",
        c["env"]
    );
}

#[test]
fn the_deployment_carries_the_release_the_slot_labels_and_a_fresh_start_stamp() {
    let rt = runtime();
    let m = rt.manifest(&spec(), 1234);
    assert_eq!(m["metadata"]["name"], "web-green");
    assert_eq!(m["metadata"]["namespace"], "shop");
    assert_eq!(m["spec"]["replicas"], 2);
    assert_eq!(
        m["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/name": "web", "cutover.dev/slot": "green" })
    );
    let tpl = &m["spec"]["template"];
    assert_eq!(
        tpl["metadata"]["labels"],
        json!({ "app.kubernetes.io/name": "web", "cutover.dev/slot": "green", "tier": "api" })
    );
    assert_eq!(
        tpl["metadata"]["annotations"]["cutover.dev/started-at"],
        "1234"
    );
    assert_eq!(tpl["spec"]["terminationGracePeriodSeconds"], 20);
    let c = &tpl["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.com/web:v2");
    assert_eq!(c["command"], json!(["/web", "--port=8080"]));
    assert_eq!(c["args"], json!(["--slot", "green"]));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({ "path": "/ready", "port": 8080 })
    );
    // Cutover's own variables join the configured ones, placeholders filled in.
    assert_eq!(
        c["env"],
        json!([
            { "name": "DATABASE_URL", "value": "postgres://db/web_green" },
            { "name": "RELEASE", "value": "v2" },
        ])
    );
    // Another start of the same release is another template: fresh pods.
    assert_ne!(rt.manifest(&spec(), 1235)["spec"]["template"], *tpl);
    assert_eq!(
        rt.running(Slot::Green).endpoint.to_string(),
        "web-green.shop.svc:80"
    );
}

fn deployment(replicas: u64, stamp: &str) -> Value {
    json!({
        "metadata": { "generation": 2 },
        "spec": { "replicas": replicas, "template": { "metadata": { "annotations": { START_ANNOTATION: stamp } } } },
        "status": { "observedGeneration": 2 },
    })
}

fn pod(name: &str, stamp: &str, ready: bool, waiting: Option<&str>) -> Value {
    let state = match waiting {
        Some(r) => json!({ "waiting": { "reason": r, "message": "back-off 10s" } }),
        None => json!({ "running": {} }),
    };
    json!({
        "metadata": { "name": name, "annotations": { START_ANNOTATION: stamp } },
        "status": {
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            "containerStatuses": [{ "name": "app", "restartCount": 1, "state": state }],
        },
    })
}

#[test]
fn the_deployments_verdict_counts_only_this_releases_pods() {
    let d = deployment(2, "2");
    let old_ready = pod("web-green-old", "1", true, None);
    // Old pods being ready does not make the new release healthy.
    let h = deployment_health(&d, &[old_ready.clone(), pod("a", "2", true, None)]);
    assert_eq!(
        h,
        RuntimeHealth::Starting("1 of 2 pods of this release ready".into())
    );
    let h = deployment_health(&d, &[pod("a", "2", true, None), pod("b", "2", true, None)]);
    assert_eq!(
        h,
        RuntimeHealth::Healthy("2 of 2 pods of this release ready".into())
    );
    // A crash loop is a failure now, not a wait until the deadline; an old pod's is not.
    let h = deployment_health(
        &d,
        &[
            pod("a", "2", true, None),
            pod("b", "2", false, Some("CrashLoopBackOff")),
        ],
    );
    assert_eq!(
        h,
        RuntimeHealth::Unhealthy("pod b: CrashLoopBackOff (back-off 10s)".into())
    );
    let h = deployment_health(
        &d,
        &[
            pod("x", "1", false, Some("CrashLoopBackOff")),
            pod("a", "2", true, None),
            pod("b", "2", true, None),
        ],
    );
    assert!(matches!(h, RuntimeHealth::Healthy(_)), "{h:?}");
    // A change the controller has not seen yet is not judged by the old status.
    let mut unseen = d.clone();
    unseen["metadata"]["generation"] = json!(3);
    let h = deployment_health(
        &unseen,
        &[pod("a", "2", true, None), pod("b", "2", true, None)],
    );
    assert!(matches!(h, RuntimeHealth::Starting(_)), "{h:?}");
    let mut late = d.clone();
    late["status"]["conditions"] = json!([{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-green-1\" has timed out progressing." }]);
    let h = deployment_health(&late, &[]);
    assert!(
        matches!(&h, RuntimeHealth::Unhealthy(m) if m.contains("timed out progressing")),
        "{h:?}"
    );
    assert_eq!(
        restarts(&[pod("a", "2", true, None), pod("b", "2", true, None)]),
        2
    );
}

#[test]
fn an_older_or_pre_start_read_never_replaces_a_newer_snapshot() {
    let t0 = Instant::now();
    let snap = |ms: u64| {
        Arc::new(Snapshot {
            asked: t0 + Duration::from_millis(ms),
            deployment: None,
            pods: vec![],
        })
    };
    let mut c = Cached::default();
    c.offer(0, snap(10));
    assert_eq!(
        c.last.as_ref().map(|s| s.asked),
        Some(t0 + Duration::from_millis(10))
    );
    // A read asked earlier that answers later (a slow status request) is not kept.
    c.offer(0, snap(5));
    assert_eq!(
        c.last.as_ref().map(|s| s.asked),
        Some(t0 + Duration::from_millis(10))
    );
    c.offer(0, snap(20));
    assert_eq!(
        c.last.as_ref().map(|s| s.asked),
        Some(t0 + Duration::from_millis(20))
    );
    // A read asked before the slot was started again (`forget` moved the epoch on).
    c.forget();
    c.offer(0, snap(30));
    assert!(c.last.is_none(), "a read from before the start was kept");
    c.offer(1, snap(40));
    assert_eq!(
        c.last.as_ref().map(|s| s.asked),
        Some(t0 + Duration::from_millis(40))
    );
}
