//! The database compatibility proof with the Kubernetes runtime, through the real
//! `kubectl` against the stand-in API server (`tests/kube/standin.py`; no Kubernetes
//! API server can run here) and a real PostgreSQL server: the live release is applied
//! once more as the Deployment `web-extra` (pods labelled `cutover.dev/slot: extra`),
//! with the migrated scratch copy's URL, reached through its own Service at
//! `endpoints.extra`; its smoke tests run there, and it is scaled to zero afterwards.
//! A migration the live release cannot live with fails the deployment before the real
//! database is touched.

#[allow(dead_code)]
#[path = "support/kube.rs"]
mod kube;
#[path = "support/routers.rs"]
mod routers;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cutover::config::{KubeAccess, KubernetesRuntimeConfig};
use cutover::domain::Slot;
use cutover::runtime::kubernetes::KubernetesRuntime;
use cutover::runtime::{Runtime, SlotSpec};
use serde_json::Value;
use support::postgres::PgServer;
use support::{free_addr, wait_until, Harness};

/// (name, ok, detail) of the deployment's `db:prove` records.
fn proof_records(d: &Value) -> Vec<(String, bool, String)> {
    d["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["phase"] == "db:prove")
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["ok"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Adds the migration `file` and deploys `version`: the proof must refuse it, saying
/// every one of `expect`, with the real database still at migration `kept`.
#[allow(clippy::too_many_arguments)]
async fn refused_by_the_proof(
    h: &Harness,
    pg: &PgServer,
    db: &str,
    file: &std::path::Path,
    sql: &str,
    version: &str,
    expect: &[&str],
    kept: &str,
) {
    std::fs::write(file, sql).unwrap();
    let out = h.cli(&["deploy", "web", version]).await;
    assert_eq!(out.code, 1, "{out}\n{}", h.daemon_logs());
    let said = format!("{out}");
    for words in expect {
        assert!(
            said.contains(words),
            "{words:?} not in:\n{said}\n{}",
            h.daemon_logs()
        );
    }
    assert_eq!(
        pg.psql(db, "SELECT max(version) FROM cutover_schema_migrations"),
        kept,
        "the real database was not touched"
    );
}

fn replicas(k: &kube::StandIn, name: &str) -> Option<u64> {
    k.get("deployment", name)
        .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1))
}

/// A daemon with the Kubernetes runtime (its table changed by `runtime`) against a fresh
/// stand-in with NodePort Services for both slots and for `extra`, and a database on
/// the shared PostgreSQL server whose migrations hold `001_items`.
async fn proof_daemon(
    builder: support::Builder,
    runtime: impl FnOnce(String) -> String,
) -> (
    Harness,
    kube::StandIn,
    std::sync::Arc<PgServer>,
    String,
    std::path::PathBuf,
) {
    let pg = PgServer::shared();
    let db = pg.fresh_db("kube_proof");
    let mut h = builder.watch("2s").without_latency_trigger().build().await;
    let k = kube::start_standin(h.dir()).await;
    let (blue, green, extra) = (free_addr(), free_addr(), free_addr());
    k.node_port_service("web-blue", blue.port(), Some("blue"));
    k.node_port_service("web-green", green.port(), Some("green"));
    k.node_port_service("web-extra", extra.port(), Some("extra"));
    let table = kube::runtime_toml(&k, &h.dir().join("behaviour.toml"), blue, green);
    let with_extra = table.replace(
        &format!("green = \"{green}\" }}"),
        &format!("green = \"{green}\", extra = \"{extra}\" }}"),
    );
    assert_ne!(table, with_extra, "the endpoints line changed");
    kube::use_runtime(&h, &runtime(with_extra));
    let migrations = support::postgres::add_database(&h, "web", &pg.url(&db));
    h.start().await;
    (h, k, pg, db, migrations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_runs_the_live_release_as_its_own_deployment_against_the_migrated_copy() {
    let (h, k, pg, db, migrations) = proof_daemon(Harness::builder(), |t| t).await;

    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}\n{}", h.daemon_logs(), k.server.logs());
    assert_eq!(
        k.get("deployment", "web-extra"),
        None,
        "no proof without a live release"
    );

    // An additive migration: v1 proves itself, as `web-extra`, against the migrated copy.
    std::fs::write(
        migrations.join("002_note.up.sql"),
        "ALTER TABLE items ADD COLUMN note text;\n",
    )
    .unwrap();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 0, "{v2}\n{}\n{}", h.daemon_logs(), k.server.logs());
    let proof = proof_records(&h.history_entry("v2").await);
    let summary = proof
        .iter()
        .find(|(name, _, _)| name.starts_with("v1 on the migrated copy"))
        .unwrap_or_else(|| panic!("no proof of v1: {proof:#?}"));
    assert!(
        summary.1 && summary.2.contains("passed its smoke tests"),
        "{summary:?}"
    );
    assert!(
        proof.iter().any(|(name, ok, _)| name == "create" && *ok),
        "the smoke tests ran against the extra instance: {proof:#?}"
    );
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );
    // The extra instance was v1's pod with the scratch copy's URL, and is scaled to zero.
    let d = k
        .get("deployment", "web-extra")
        .expect("web-extra was applied");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["cutover.dev/slot"],
        "extra"
    );
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.test/demo:v1");
    let url = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "DATABASE_URL")
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(url.contains("_cutover_scratch"), "{url}");
    wait_until(20, "the extra instance scaled to zero", || async {
        (replicas(&k, "web-extra") == Some(0)).then_some(())
    })
    .await;
    wait_until(20, "the extra instance's pods gone", || async {
        k.pods("extra").is_empty().then_some(())
    })
    .await;

    // A constraint v2's inserts violate: the proof, in its own pod, catches it.
    refused_by_the_proof(
        &h,
        &pg,
        &db,
        &migrations.join("003_upper.up.sql"),
        "ALTER TABLE items ADD CONSTRAINT items_name_upper CHECK (name = upper(name)) NOT VALID;\n",
        "v3",
        &[
            "the live release v2 fails against the migrated schema",
            "create",
        ],
        "2",
    )
    .await;
    wait_until(20, "the second extra instance scaled to zero", || async {
        (replicas(&k, "web-extra") == Some(0)).then_some(())
    })
    .await;
    h.wait_serving("v2").await;
    assert_eq!(h.status().await.live_version.as_deref(), Some("v2"));
    assert_eq!(replicas(&k, "web-blue"), Some(1), "v1 stays warm");
}

/// Two proofs in one deployment (the live release, then the one kept warm) use the
/// same Deployment: dropping the first instance must not scale down the second, which
/// has already replaced its pod template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_extra_instance_leaves_a_newer_one_running() {
    let dir = tempfile::tempdir().unwrap();
    let k = kube::start_standin(dir.path()).await;
    let extra = free_addr();
    k.node_port_service("web-extra", extra.port(), Some("extra"));
    let rt = KubernetesRuntime::new(
        "web",
        KubernetesRuntimeConfig {
            access: KubeAccess {
                kubectl: "kubectl".into(),
                kubeconfig: Some(k.kubeconfig.clone()),
                context: None,
                namespace: "default".into(),
                timeout: Duration::from_secs(10),
            },
            image: "registry.example.test/demo:{version}".into(),
            port: 8080,
            replicas: 1,
            command: Some(
                [
                    support::exe(),
                    "demo-app",
                    "--port",
                    "$(PORT)",
                    "--version",
                    "{version}",
                ]
                .map(String::from)
                .to_vec(),
            ),
            args: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            ready_path: Some("/health".into()),
            endpoints: BTreeMap::from([
                (Slot::Blue, free_addr().into()),
                (Slot::Green, free_addr().into()),
            ]),
            extra_endpoint: Some(extra.into()),
            stop_grace: Duration::from_secs(2),
        },
    );
    let spec = |version: &str| SlotSpec {
        service: "web".into(),
        slot: Slot::Blue,
        version: version.into(),
        deployment: None,
        env: vec![],
    };
    let first = rt
        .start_extra(&spec("v1"))
        .await
        .expect("first extra instance");
    assert_eq!(first.endpoint.to_string(), extra.to_string());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = rt
        .start_extra(&spec("v2"))
        .await
        .expect("second extra instance");
    drop(first);
    wait_until(20, "v2 answering at the extra endpoint", || async {
        (routers::answered_by(extra).await == "v2").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicas(&k, "web-extra"), Some(1), "{}", k.server.logs());
    assert_eq!(routers::answered_by(extra).await, "v2");
    drop(second);
    wait_until(20, "the second instance scaled to zero", || async {
        (replicas(&k, "web-extra") == Some(0)).then_some(())
    })
    .await;
}

/// A live release whose pod cannot run against the migrated copy (here: it exits when
/// its database URL names the scratch copy) fails the proof with the pod's reason, not
/// after the health deadline with the connection errors of a Service without endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_whose_pod_crash_loops_fails_with_the_pods_reason() {
    let (h, k, pg, db, migrations) =
        proof_daemon(Harness::builder().health_deadline("120s"), |t| {
            let exe = support::exe();
            let start = t.find("command = [").expect("a command");
            let end = start + t[start..].find('\n').expect("a line");
            let script = format!(
                "case \\\"$DATABASE_URL\\\" in *_cutover_scratch*) echo \\\"boom: unknown schema\\\" >&2; exit 3;; esac; exec {exe} demo-app --port $PORT --version {{version}}"
            );
            format!("{}command = [\"sh\", \"-c\", \"{script}\"]{}", &t[..start], &t[end..])
        })
        .await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}\n{}", h.daemon_logs(), k.server.logs());
    refused_by_the_proof(
        &h,
        &pg,
        &db,
        &migrations.join("002_note.up.sql"),
        "ALTER TABLE items ADD COLUMN note text;\n",
        "v2",
        &[
            "the live release v1 cannot run against the migrated schema",
            "CrashLoopBackOff",
        ],
        "1",
    )
    .await;
    h.wait_serving("v1").await;
    wait_until(20, "the extra instance scaled to zero", || async {
        (replicas(&k, "web-extra") == Some(0)).then_some(())
    })
    .await;
}
