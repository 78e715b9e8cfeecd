//! The database phase end to end, with the real binary and a real PostgreSQL server
//! (started by the test, see `support/postgres.rs`), and the demo app in its database
//! mode (`DATABASE_URL`): an additive migration under live load, a column drop refused
//! by the lint, a migration the lint accepts but the live release cannot work with
//! caught by the compatibility proof, and the `separate` strategy.

mod support;

use std::path::Path;
use std::time::Duration;

use cutover::demo::load::Load;
use serde_json::Value;
use support::postgres::{pg_bin, PgServer};
use support::Harness;

const ITEMS: &str = "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);\n";

/// A harness whose service has a database (`strategy`) with migrations in `<dir>/db`.
async fn harness(pg: &PgServer, db: &str, strategy: &str) -> Harness {
    let h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let migrations = h.dir().join("db");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("001_items.up.sql"), ITEMS).unwrap();
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str(&format!(
        "\n[services.web.database]\nurl = \"{}\"\nstrategy = \"{strategy}\"\nmigrations = \"db\"\npg_bin = \"{}\"\nlock_timeout = \"2s\"\n",
        pg.url(db),
        pg_bin().display()
    ));
    std::fs::write(&h.config_path, config).unwrap();
    h
}

fn add_migration(h: &Harness, file: &str, sql: &str) {
    std::fs::write(h.dir().join("db").join(file), sql).unwrap();
}

/// (phase, name, ok, detail) of the deployment's `db:*` records.
fn db_records(d: &Value) -> Vec<(String, String, bool, String)> {
    d["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["phase"].as_str().unwrap_or("").starts_with("db:"))
        .map(|c| {
            (
                c["phase"].as_str().unwrap_or("").to_string(),
                c["name"].as_str().unwrap_or("").to_string(),
                c["ok"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn backups(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "dump"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_additive_migration_deploys_under_live_load_with_a_backup_and_no_failed_request() {
    let pg = PgServer::shared();
    let db = pg.fresh_db("additive");
    let mut h = harness(&pg, &db, "shared").await;
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}\n{}", h.daemon_logs());
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );

    let load = Load::start(h.proxy, "/", 30, 6, Duration::from_secs(300));
    support::wait_until(20, "the load to reach v1", || async {
        load.stats().by_version.contains_key("v1").then_some(())
    })
    .await;
    // The seed's expand step: a nullable column, then a backfill.
    add_migration(
        &h,
        "002_note.up.sql",
        "ALTER TABLE items ADD COLUMN note text;\nUPDATE items SET note = 'imported' WHERE note IS NULL;\n",
    );
    add_migration(
        &h,
        "002_note.down.sql",
        "ALTER TABLE items DROP COLUMN note;\n",
    );
    let before = load.stats();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    let during = load.stats().since(&before);
    let total = load.stop().await;
    assert_eq!(v2.code, 0, "deploy v2:\n{v2}\n{}", h.daemon_logs());
    eprintln!(
        "v1 → v2 with a migration: {} requests sent, {} failed",
        during.sent,
        during.failed()
    );
    assert_eq!(during.failed(), 0, "{during:?}");
    assert_eq!(total.failed(), 0, "{total:?}");
    assert!(during.by_version.contains_key("v2"), "{during:?}");
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );

    let d = h.history_entry("v2").await;
    let records = db_records(&d);
    let phases: Vec<&str> = records.iter().map(|r| r.0.as_str()).collect();
    for step in [
        "db:backup",
        "db:lint",
        "db:rehearse",
        "db:prove",
        "db:migrate",
    ] {
        assert!(phases.contains(&step), "{step} missing: {records:#?}");
    }
    assert!(records.iter().all(|r| r.2), "{records:#?}");
    let migrate = records.iter().find(|r| r.0 == "db:migrate").unwrap();
    assert!(
        migrate.3.contains("AccessExclusiveLock on items"),
        "{migrate:?}"
    );
    let proof = records
        .iter()
        .find(|r| r.0 == "db:prove" && r.1.starts_with("v1 on"))
        .unwrap();
    assert!(proof.3.contains("passed its smoke tests"), "{proof:?}");
    // The phase ran before the new release started.
    let phase_names: Vec<&str> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    let at = |n: &str| phase_names.iter().position(|p| *p == n);
    assert!(
        at("database").is_some() && at("database") < at("start"),
        "{phase_names:?}"
    );
    // One backup per migrating deployment.
    assert_eq!(backups(&h.state_dir().join("backups").join("web")), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_drop_is_refused_by_the_lint_and_a_migration_the_live_release_cannot_use_is_caught_by_the_proof(
) {
    let pg = PgServer::shared();
    let db = pg.fresh_db("gate");
    let mut h = harness(&pg, &db, "shared").await;
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}\n{}", h.daemon_logs());
    pg.psql(&db, "INSERT INTO items (name) VALUES ('kept')");

    // The lint: a dropped column breaks v1; nothing is applied.
    add_migration(
        &h,
        "002_drop.up.sql",
        "ALTER TABLE items DROP COLUMN name;\n",
    );
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "deploy v2 must fail:\n{v2}");
    let d = h.history_entry("v2").await;
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("ban-drop-column"), "{reason}");
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM items WHERE name = 'kept'"),
        "1"
    );
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
    // What CI runs: the same lint, exit 1, the rule named.
    let lint = h.cli(&["db", "lint", "web"]).await;
    assert_eq!(lint.code, 1, "{lint}");
    assert!(
        lint.stdout.contains("002_drop.up.sql:1: ban-drop-column"),
        "{lint}"
    );
    let status = h.cli(&["db", "status", "web"]).await;
    assert_eq!(status.code, 0, "{status}");
    assert!(
        status.stdout.contains("applied  001_items") && status.stdout.contains("pending  002_drop"),
        "{status}"
    );
    std::fs::remove_file(h.dir().join("db/002_drop.up.sql")).unwrap();

    // The proof: a constraint squawk accepts (NOT VALID) that v1's inserts violate.
    add_migration(
        &h,
        "002_upper.up.sql",
        "ALTER TABLE items ADD CONSTRAINT items_name_upper CHECK (name = upper(name)) NOT VALID;\n",
    );
    let v3 = h.cli(&["deploy", "web", "v3"]).await;
    assert_eq!(v3.code, 1, "deploy v3 must fail:\n{v3}");
    let d = h.history_entry("v3").await;
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("prove: the live release v1 fails against the migrated schema"),
        "{reason}"
    );
    assert!(
        reason.contains("create"),
        "the failing request is named: {reason}"
    );
    let records = db_records(&d);
    assert!(
        records.iter().any(|r| r.0 == "db:lint" && r.2),
        "{records:#?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.0 == "db:rehearse" && r.1 == "002_upper" && r.2),
        "{records:#?}"
    );
    assert!(!records.iter().any(|r| r.0 == "db:migrate"), "{records:#?}");
    // The live database was never touched.
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'items_name_upper'"
        ),
        "0"
    );
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
    let (status, body) = h.get_proxy("/").await.expect("v1 answers");
    assert_eq!((status, body.trim()), (200, "hello from v1"));

    // Manual backups, and a restore refused while v1 still runs.
    let b = h.cli(&["db", "backup", "web"]).await;
    assert_eq!(b.code, 0, "{b}");
    let list = h.cli(&["db", "backups", "web"]).await;
    assert!(
        list.stdout.contains("release v1") && list.stdout.contains("manual"),
        "{list}"
    );
    let restore = h.cli(&["db", "restore", "web", "--yes"]).await;
    assert_eq!(restore.code, 1, "{restore}");
    assert!(restore.stderr.contains("still runs"), "{restore}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_separate_strategy_clones_migrates_switches_and_rolls_back() {
    let pg = PgServer::shared();
    let db = pg.fresh_db("separate");
    let mut h = harness(&pg, &db, "separate").await;
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}\n{}", h.daemon_logs());
    let live1 = h.status().await.live.expect("a live slot");
    let db1 = format!("{db}_{}", live1.as_str());
    assert_eq!(
        pg.psql(&db1, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );
    pg.psql(
        &db1,
        "INSERT INTO items (name) SELECT 'row' || g FROM generate_series(1, 30) g",
    );

    add_migration(
        &h,
        "002_note.up.sql",
        "ALTER TABLE items ADD COLUMN note text;\n",
    );
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 0, "deploy v2:\n{v2}\n{}", h.daemon_logs());
    let live2 = h.status().await.live.expect("a live slot");
    assert_ne!(live1, live2);
    let db2 = format!("{db}_{}", live2.as_str());
    // The clone has the rows and the new column; the old database is as it was.
    assert_eq!(pg.psql(&db2, "SELECT count(*) FROM items"), "30");
    assert_eq!(
        pg.psql(&db2, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );
    assert_eq!(
        pg.psql(&db1, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );
    let records = db_records(&h.history_entry("v2").await);
    assert!(
        records
            .iter()
            .any(|r| r.0 == "db:migrate" && r.1 == "clone" && r.2),
        "{records:#?}"
    );

    // Rollback: traffic returns to v1, which still has its own database.
    let rb = h.cli(&["rollback", "web"]).await;
    assert_eq!(rb.code, 0, "rollback:\n{rb}");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
    let (status, body) = h.get_proxy("/").await.expect("v1 answers");
    assert_eq!((status, body.trim()), (200, "hello from v1"));
    assert_eq!(pg.psql(&db1, "SELECT count(*) FROM items"), "30");
}
