//! The database module against a real PostgreSQL server (started by the test in a
//! temporary directory, see `support/postgres.rs`): migrations with their version
//! table, lock waits that name the blocking session, down-migrations and restores.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use cutover::config::{DatabaseConfig, DbStrategy, MigrationSource};
use cutover::database::{backup, files, migrate, Database};
use support::postgres::{pg_bin, PgServer};

fn database(pg: &PgServer, db: &str, migrations: &Path, state: &Path) -> Database {
    let cfg = DatabaseConfig {
        url: pg.url(db),
        password: None,
        strategy: DbStrategy::Shared,
        url_env: "DATABASE_URL".into(),
        migrations: MigrationSource::Files(migrations.to_path_buf()),
        lock_timeout: Duration::from_millis(500),
        retries: 2,
        backup_dir: None,
        keep_backups: 3,
        prove: true,
        down_on_rollback: Default::default(),
        pg_bin: Some(pg_bin()),
    };
    Database::new("web", cfg, state)
}

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).expect("write migration");
}

async fn apply_pending(db: &Database, dir: &Path) -> Vec<migrate::MigrationRun> {
    let all = files::load(dir).expect("load");
    let client = db.connect(None).await.expect("connect");
    let applied = migrate::applied(&client).await.expect("applied");
    let mut runs = Vec::new();
    for m in migrate::pending(&all, &applied) {
        runs.push(
            migrate::up(db, None, m, migrate::Options::of(db))
                .await
                .expect("migrate"),
        );
    }
    runs
}

#[tokio::test]
async fn migrations_apply_in_order_record_their_version_and_show_locks_and_rewrites() {
    let pg = PgServer::shared();
    let name = pg.fresh_db("apply");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "001_items.up.sql", "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);\nINSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 100) g;");
    write(
        dir.path(),
        "002_note.up.sql",
        "ALTER TABLE items ADD COLUMN note text;\nALTER TABLE items ALTER COLUMN id TYPE int;",
    );
    write(
        dir.path(),
        "003_index.up.sql",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON items (name);",
    );
    let db = database(&pg, &name, dir.path(), dir.path());

    let runs = apply_pending(&db, dir.path()).await;
    assert_eq!(
        runs.iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let note = &runs[1].statements[0];
    assert_eq!(note.locks, ["AccessExclusiveLock on items"], "{note:?}");
    assert!(
        note.rewrote.is_empty(),
        "adding a nullable column rewrites nothing: {note:?}"
    );
    let retype = &runs[1].statements[1];
    assert_eq!(
        retype.rewrote,
        ["items"],
        "a type change rewrites the table: {retype:?}"
    );
    assert!(runs[2].statements[0].locks[0].starts_with("ShareUpdateExclusiveLock"));

    assert_eq!(
        pg.psql(&name, "SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM cutover_schema_migrations"),
        "1:items,2:note,3:index"
    );
    assert_eq!(
        pg.psql(
            &name,
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name'::regclass"
        ),
        "t"
    );
    // Nothing is pending any more.
    assert!(apply_pending(&db, dir.path()).await.is_empty());
}

#[tokio::test]
async fn a_failing_file_leaves_neither_its_changes_nor_its_version() {
    let pg = PgServer::shared();
    let name = pg.fresh_db("atomic");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_t.up.sql",
        "CREATE TABLE t (a int);\nINSERT INTO nowhere VALUES (1);",
    );
    let db = database(&pg, &name, dir.path(), dir.path());
    let all = files::load(dir.path()).unwrap();
    let err = migrate::up(&db, None, &all[0], migrate::Options::of(&db))
        .await
        .expect_err("fails")
        .to_string();
    assert!(err.contains("relation \"nowhere\" does not exist"), "{err}");
    assert_eq!(
        pg.psql(&name, "SELECT count(*) FROM cutover_schema_migrations"),
        "0"
    );
    assert_eq!(pg.psql(&name, "SELECT to_regclass('t') IS NULL"), "t");
}

#[tokio::test]
async fn a_lock_held_by_another_session_is_waited_for_no_longer_than_lock_timeout_named_retried_and_fails_cleanly(
) {
    let pg = PgServer::shared();
    let name = pg.fresh_db("locks");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(&name, "CREATE TABLE items (id int)");
    write(
        dir.path(),
        "001_note.up.sql",
        "ALTER TABLE items ADD COLUMN note text;",
    );
    let db = database(&pg, &name, dir.path(), dir.path());

    // Another session holds a lock on the table and keeps its transaction open.
    let holder = db.connect(None).await.unwrap();
    holder
        .batch_execute("SET application_name = 'report-job'; BEGIN; LOCK TABLE items IN ACCESS SHARE MODE; SELECT count(*) FROM items;")
        .await
        .unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    let all = files::load(dir.path()).unwrap();
    let started = Instant::now();
    let err = migrate::up(&db, None, &all[0], migrate::Options::of(&db))
        .await
        .expect_err("the lock is never released")
        .to_string();
    let took = started.elapsed();
    assert!(
        err.contains("waited longer than lock_timeout (500ms)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("blocked by session {holder_pid}")),
        "{err}"
    );
    assert!(err.contains("application report-job"), "{err}");
    assert!(
        err.contains("(3 attempts)"),
        "one try and two retries: {err}"
    );
    // Three waits of 500ms at least; nothing applied.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(
        pg.psql(&name, "SELECT count(*) FROM cutover_schema_migrations"),
        "0"
    );
    assert_eq!(pg.psql(&name, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'"), "0");
    // The other session was never disturbed.
    holder.batch_execute("COMMIT").await.unwrap();

    // Once the lock is gone the same migration goes through.
    let run = migrate::up(&db, None, &all[0], migrate::Options::of(&db))
        .await
        .unwrap();
    assert_eq!(run.attempts, 1);
}

#[tokio::test]
async fn down_migrations_and_a_restore_round_trip_with_row_counts_checked() {
    let pg = PgServer::shared();
    let name = pg.fresh_db("roundtrip");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_items.up.sql",
        "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);",
    );
    write(dir.path(), "001_items.down.sql", "DROP TABLE items;");
    write(
        dir.path(),
        "002_tags.up.sql",
        "CREATE TABLE tags (id bigserial PRIMARY KEY, item bigint, tag text);",
    );
    write(dir.path(), "002_tags.down.sql", "DROP TABLE tags;");
    let state = tempfile::tempdir().unwrap();
    let db = database(&pg, &name, dir.path(), state.path());
    apply_pending(&db, dir.path()).await;
    pg.psql(&name, "INSERT INTO items (name) SELECT 'i' || g FROM generate_series(1, 250) g; INSERT INTO tags (item, tag) SELECT g, 't' FROM generate_series(1, 40) g");

    // Backup, then more writes, then restore: the rows are those of the backup.
    let meta = backup::backup(&db, None, "v1", "2", "manual")
        .await
        .expect("backup");
    assert!(
        meta.size_bytes > 0 && meta.file.ends_with(".dump"),
        "{meta:?}"
    );
    assert_eq!(backup::list(&db.backup_dir).len(), 1);
    pg.psql(&name, "DELETE FROM items WHERE id > 100; DELETE FROM tags");
    backup::restore_into(&db, &db.backup_dir.join(&meta.file), &name)
        .await
        .expect("restore");
    assert_eq!(pg.psql(&name, "SELECT count(*) FROM items"), "250");
    assert_eq!(pg.psql(&name, "SELECT count(*) FROM tags"), "40");
    assert_eq!(
        pg.psql(&name, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );

    // Down to version 1: tags goes, items and its rows stay.
    let all = files::load(dir.path()).unwrap();
    let run = migrate::down(&db, None, &all[1], migrate::Options::of(&db))
        .await
        .expect("down");
    assert_eq!(run.version, 2);
    assert_eq!(pg.psql(&name, "SELECT to_regclass('tags') IS NULL"), "t");
    assert_eq!(pg.psql(&name, "SELECT count(*) FROM items"), "250");
    assert_eq!(
        pg.psql(&name, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );
    // And up again.
    apply_pending(&db, dir.path()).await;
    assert_eq!(
        pg.psql(&name, "SELECT max(version) FROM cutover_schema_migrations"),
        "2"
    );

    // Retention keeps the newest three.
    for i in 0..3 {
        backup::backup(&db, None, &format!("v{}", i + 2), "2", "manual")
            .await
            .unwrap();
    }
    let left = backup::list(&db.backup_dir);
    assert_eq!(left.len(), 3);
    assert_eq!(left[0].release, "v4");
}

#[tokio::test]
async fn a_failed_concurrent_index_build_leaves_no_invalid_index_and_a_leftover_one_is_dropped_before_a_retry(
) {
    let pg = PgServer::shared();
    let name = pg.fresh_db("invalid_index");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        &name,
        "CREATE TABLE items (id bigserial PRIMARY KEY, k int); INSERT INTO items (k) SELECT g % 50 FROM generate_series(1, 200) g",
    );
    write(
        dir.path(),
        "001_unique_k.up.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_k ON items (k);",
    );
    let db = database(&pg, &name, dir.path(), dir.path());
    let all = files::load(dir.path()).unwrap();
    let invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid";

    // The build fails on the duplicates; the INVALID index it left is dropped, named.
    let err = migrate::up(&db, None, &all[0], migrate::Options::of(&db))
        .await
        .expect_err("duplicate keys")
        .to_string();
    assert!(err.contains("could not create unique index"), "{err}");
    assert!(
        err.contains("dropped the invalid index items_k it left"),
        "{err}"
    );
    assert_eq!(pg.psql(&name, invalid), "0");
    assert_eq!(pg.psql(&name, "SELECT to_regclass('items_k') IS NULL"), "t");
    assert_eq!(
        pg.psql(&name, "SELECT count(*) FROM cutover_schema_migrations"),
        "0"
    );

    // A build that failed outside Cutover (psql) leaves one behind; `IF NOT EXISTS`
    // would skip over it. Once the data is fixed, the runner drops it first.
    let out = std::process::Command::new(pg_bin().join("psql"))
        .args(["-X", "-q", "-d"])
        .arg(pg.url(&name))
        .args([
            "-c",
            "CREATE UNIQUE INDEX CONCURRENTLY items_k ON items (k)",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(pg.psql(&name, invalid), "1");
    pg.psql(&name, "UPDATE items SET k = id");
    let run = migrate::up(&db, None, &all[0], migrate::Options::of(&db))
        .await
        .expect("the retry goes through");
    assert_eq!(run.statements[0].dropped_invalid, ["items_k"], "{run:?}");
    assert!(
        run.detail().contains("dropped the invalid index items_k"),
        "{}",
        run.detail()
    );
    assert_eq!(pg.psql(&name, invalid), "0");
    assert_eq!(
        pg.psql(
            &name,
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_k'::regclass"
        ),
        "t"
    );
    assert_eq!(
        pg.psql(&name, "SELECT max(version) FROM cutover_schema_migrations"),
        "1"
    );
}
