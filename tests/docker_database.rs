//! The database compatibility proof with the Docker runtime, against the real engine
//! and a real PostgreSQL server: the live release's image is started once more (its
//! own container, its own port) with the migrated scratch copy's URL, its smoke tests
//! run there, and the container is removed.
//!
//! How the containers reach PostgreSQL on the host: the server listens on the Docker
//! bridge's gateway address too (`172.17.0.1` by default) and trusts the bridge subnet
//! in `pg_hba.conf`; the service's URL names that address, which the daemon on the
//! host and every container both reach. Needs a running Docker engine; fails, never
//! skips, without one.

#[path = "support/docker.rs"]
mod docker_support;
mod support;

use std::time::Duration;

use cutover::store::DeploymentOutcome;
use docker_support::{deploy_and_wait, docker, use_runtime, Scope};
use support::postgres::PgServer;
use support::Harness;

/// The bridge network's subnet and its gateway (the subnet's first address, Docker's
/// convention, unless the network says otherwise).
fn bridge() -> (String, String) {
    let subnet = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let gateway = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ])
    .unwrap_or_default();
    let gateway = match gateway.is_empty() {
        false => gateway,
        true => {
            let base = subnet.split('/').next().unwrap_or_default();
            let mut octets: Vec<u8> = base.split('.').filter_map(|o| o.parse().ok()).collect();
            assert_eq!(octets.len(), 4, "bridge subnet {subnet:?}");
            octets[3] += 1;
            octets
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(".")
        }
    };
    (subnet, gateway)
}

/// A started harness whose service `svc` runs on `runtime_toml` with a database on
/// `pg` reached at the bridge gateway; its migrations directory holds `001_items`.
async fn harness(
    svc: &str,
    runtime_toml: &str,
    pg: &PgServer,
    gateway: &str,
) -> (Harness, String, std::path::PathBuf) {
    let db = pg.fresh_db("docker_proof");
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    use_runtime(&h, svc, runtime_toml);
    let url = format!("postgres://postgres@{gateway}:{}/{db}", pg.port);
    let migrations = support::postgres::add_database(&h, svc, &url);
    h.start().await;
    (h, db, migrations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_runs_the_live_image_in_its_own_container_against_the_migrated_copy() {
    let scope = Scope::new();
    let svc = scope.service.clone();
    let (subnet, gateway) = bridge();
    let pg = PgServer::listening_also_on(&gateway, &subnet);
    let (h, db, migrations) = harness(
        &svc,
        "kind = \"docker\"\nimage = \"cutover-demo:{version}\"\nport = 8080\nstop_grace = \"5s\"\ncommand = [\"--version\", \"{version}\"]\n",
        &pg,
        &gateway,
    )
    .await;

    let v1 = deploy_and_wait(&h, &svc, "v1").await;
    assert_eq!(
        v1.outcome,
        Some(DeploymentOutcome::Succeeded),
        "{v1:?}\n{}",
        h.daemon_logs()
    );

    // An additive migration: v1's image proves itself against the migrated copy.
    std::fs::write(
        migrations.join("002_note.up.sql"),
        "ALTER TABLE items ADD COLUMN note text;\n",
    )
    .unwrap();
    let v2 = deploy_and_wait(&h, &svc, "v2").await;
    assert_eq!(
        v2.outcome,
        Some(DeploymentOutcome::Succeeded),
        "{v2:?}\n{}",
        h.daemon_logs()
    );
    let proof = v2
        .checks
        .iter()
        .find(|c| c.phase == "db:prove" && c.name.starts_with("v1 on"))
        .unwrap_or_else(|| panic!("no proof: {:#?}", v2.checks));
    assert!(proof.ok, "{proof:?}");
    assert!(proof.detail.contains("passed its smoke tests"), "{proof:?}");
    assert!(
        v2.checks
            .iter()
            .any(|c| c.phase == "db:prove" && c.name == "create" && c.ok),
        "the smoke tests ran against the extra container: {:#?}",
        v2.checks
    );
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );

    // A constraint v2's inserts violate: the proof, in a container, catches it.
    std::fs::write(
        migrations.join("003_upper.up.sql"),
        "ALTER TABLE items ADD CONSTRAINT items_name_upper CHECK (name = upper(name)) NOT VALID;\n",
    )
    .unwrap();
    let v3 = deploy_and_wait(&h, &svc, "v3").await;
    assert_eq!(v3.outcome, Some(DeploymentOutcome::Failed), "{v3:?}");
    let reason = v3.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("prove: the live release v2 fails against the migrated schema")
            && reason.contains("create"),
        "{reason}"
    );
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );

    // The extra containers are gone; only the slots' remain.
    let extra = format!("name=cutover-{svc}-extra");
    support::wait_until(20, "the extra container to be removed", || async {
        docker(&["ps", "-aq", "--filter", &extra])
            .ok()
            .filter(|out| out.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = h.get_proxy("/").await.expect("v2 answers");
    assert_eq!((status, body.trim()), (200, "hello from v2"));
}

/// One component; the slot's database URL reaches it through the file. On the default
/// bridge (`network_mode: bridge`), whose subnet PostgreSQL trusts: a project's own
/// network would get another subnet.
const STACK: &str = r#"services:
  app:
    image: cutover-demo:${CUTOVER_VERSION}
    network_mode: bridge
    command: ["--version", "${CUTOVER_VERSION}"]
    ports:
      - "127.0.0.1:${CUTOVER_PORT}:8080"
    environment:
      DATABASE_URL: ${DATABASE_URL}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_compose_the_proof_runs_the_live_release_as_its_own_project() {
    let scope = Scope::new();
    let svc = scope.service.clone();
    let (subnet, gateway) = bridge();
    let pg = PgServer::listening_also_on(&gateway, &subnet);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.yaml");
    std::fs::write(&file, STACK).unwrap();
    let runtime = format!(
        "kind = \"compose\"\nfile = \"{}\"\nentry = \"app\"\npublic = [\"app\"]\nstop_grace = \"5s\"\n",
        file.display()
    );
    let (h, db, migrations) = harness(&svc, &runtime, &pg, &gateway).await;
    let v1 = deploy_and_wait(&h, &svc, "v1").await;
    assert_eq!(
        v1.outcome,
        Some(DeploymentOutcome::Succeeded),
        "{v1:?}\n{}",
        h.daemon_logs()
    );
    std::fs::write(
        migrations.join("002_note.up.sql"),
        "ALTER TABLE items ADD COLUMN note text;\n",
    )
    .unwrap();
    let v2 = deploy_and_wait(&h, &svc, "v2").await;
    assert_eq!(
        v2.outcome,
        Some(DeploymentOutcome::Succeeded),
        "{v2:?}\n{}",
        h.daemon_logs()
    );
    let proof = v2
        .checks
        .iter()
        .find(|c| c.phase == "db:prove" && c.name.starts_with("v1 on"))
        .unwrap_or_else(|| panic!("no proof: {:#?}", v2.checks));
    assert!(
        proof.ok && proof.detail.contains("passed its smoke tests"),
        "{proof:?}"
    );
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );
    let extra = format!("label=com.docker.compose.project={svc}-extra");
    support::wait_until(30, "the extra project to be brought down", || async {
        docker(&["ps", "-aq", "--filter", &extra])
            .ok()
            .filter(|out| out.is_empty())
    })
    .await;
    let _ = docker(&["network", "rm", &format!("{svc}-extra_default")]);
    let (status, body) = h.get_proxy("/").await.expect("v2 answers");
    assert_eq!((status, body.trim()), (200, "hello from v2"));
}
