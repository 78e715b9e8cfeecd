//! The database outside the happy path, end to end with the real binary and a real
//! PostgreSQL server (started by the test, `support/postgres.rs`): `cutover db ...`
//! through the daemon's API (JSON errors with nothing changed, refused while a slot
//! writes, down and restore round trips), `down_on_rollback`, and the team's own
//! migration command.

mod support;

use serde_json::{json, Value};
use support::postgres::{pg_bin, PgServer};
use support::Harness;

use cutover::api::client::ClientError;

const ITEMS: &str = "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);\n";

/// A harness whose service has a database with `keys` (and `pg_bin`, `lock_timeout`).
async fn harness(pg: &PgServer, db: &str, keys: &str) -> Harness {
    let h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str(&format!(
        "\n[services.web.database]\nurl = \"{}\"\npg_bin = \"{}\"\nlock_timeout = \"2s\"\n{keys}",
        pg.url(db),
        pg_bin().display()
    ));
    std::fs::write(&h.config_path, config).unwrap();
    h
}

/// A harness with a migrations directory `<dir>/db` holding `001_items`.
async fn with_files(pg: &PgServer, db: &str, keys: &str) -> Harness {
    let h = harness(pg, db, &format!("migrations = \"db\"\n{keys}")).await;
    std::fs::create_dir_all(h.dir().join("db")).unwrap();
    add(&h, "001_items.up.sql", ITEMS);
    add(&h, "001_items.down.sql", "DROP TABLE items;\n");
    h
}

fn add(h: &Harness, file: &str, sql: &str) {
    std::fs::write(h.dir().join("db").join(file), sql).unwrap();
}

fn version(pg: &PgServer, db: &str) -> String {
    pg.psql(db, "SELECT max(version) FROM cutover_schema_migrations")
}

fn api_status(r: Result<Value, ClientError>) -> (u16, String, String) {
    match r {
        Ok(v) => (200, String::new(), v.to_string()),
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_commands_go_through_the_api_refuse_bad_input_and_writing_slots_and_round_trip_with_row_counts(
) {
    let pg = PgServer::shared();
    let db = pg.fresh_db("ops");
    let mut h = with_files(&pg, &db, "").await;
    add(
        &h,
        "002_tags.up.sql",
        "CREATE TABLE tags (id bigserial PRIMARY KEY, tag text);\n",
    );
    add(&h, "002_tags.down.sql", "DROP TABLE tags;\n");
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}\n{}", h.daemon_logs());
    assert_eq!(version(&pg, &db), "2");
    pg.psql(
        &db,
        "INSERT INTO items (name) SELECT 'i' || g FROM generate_series(1, 120) g; INSERT INTO tags (tag) SELECT 't' FROM generate_series(1, 15) g",
    );
    let backup = h.cli(&["db", "backup", "web"]).await;
    assert_eq!(backup.code, 0, "{backup}");
    pg.psql(
        &db,
        "DELETE FROM items WHERE id NOT IN (SELECT id FROM items ORDER BY id LIMIT 20)",
    );

    // The API: writes need the token, bad input is a JSON 400, an unknown backup a 404,
    // a running slot a 409; none of them changes anything.
    let base = "/api/v1/services/web/db";
    let anon = h.client_with_token(None);
    let r = api_status(anon.post(&format!("{base}/restore"), json!({})).await);
    assert_eq!((r.0, r.1.as_str()), (401, "unauthorized"), "{r:?}");
    let c = h.client();
    for (path, body, status, code) in [
        (
            "restore",
            json!({ "backup": "../../etc/passwd" }),
            400,
            "bad_request",
        ),
        ("restore", json!({ "force": "yes" }), 400, "bad_request"),
        ("restore", json!({ "dry": true }), 400, "bad_request"),
        (
            "restore",
            json!({ "backup": "nope.dump" }),
            404,
            "backup_not_found",
        ),
        ("restore", json!({}), 409, "slot_still_writes"),
        ("down", json!({}), 400, "bad_request"),
        ("down", json!({ "to": -1 }), 400, "bad_request"),
        ("down", json!({ "to": 1 }), 409, "slot_still_writes"),
    ] {
        let r = api_status(c.post(&format!("{base}/{path}"), body.clone()).await);
        assert_eq!((r.0, r.1.as_str()), (status, code), "{path} {body}: {r:?}");
    }
    let r = api_status(c.get(&format!("{base}/status")).await);
    assert_eq!(r.0, 200, "{r:?}");
    let r = api_status(c.get("/api/v1/services/nope/db/status").await);
    assert_eq!((r.0, r.1.as_str()), (404, "unknown_service"), "{r:?}");
    assert_eq!(version(&pg, &db), "2");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM items"), "20");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM tags"), "15");

    // The CLI: refused while v1 runs (exit 1, nothing done); a dry run answers what.
    let refused = h.cli(&["db", "down", "web", "--to", "1", "--yes"]).await;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("still runs"), "{refused}");
    assert_eq!(version(&pg, &db), "2");
    let dry: Value = c
        .post(
            &format!("{base}/down"),
            json!({ "to": 1, "force": true, "dry_run": true }),
        )
        .await
        .expect("dry run");
    assert_eq!(dry["migrations"], json!(["002_tags"]), "{dry}");
    assert_eq!(version(&pg, &db), "2");

    // Down with --force: tags goes, items keeps its rows; the event log says who.
    let down = h
        .cli(&["db", "down", "web", "--to", "1", "--yes", "--force"])
        .await;
    assert_eq!(down.code, 0, "{down}\n{}", h.daemon_logs());
    assert!(down.stdout.contains("down 002_tags"), "{down}");
    assert_eq!(version(&pg, &db), "1");
    assert_eq!(pg.psql(&db, "SELECT to_regclass('tags') IS NULL"), "t");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM items"), "20");
    let nothing = h.cli(&["db", "down", "web", "--to", "1", "--yes"]).await;
    assert_eq!(nothing.code, 0, "{nothing}");
    assert!(nothing.stdout.contains("nothing to undo"), "{nothing}");

    // Restore the backup: the 120 items and the 15 tags of the backup, version 2.
    let restore = h
        .cli(&["db", "restore", "web", "latest", "--yes", "--force"])
        .await;
    assert_eq!(restore.code, 0, "{restore}\n{}", h.daemon_logs());
    assert_eq!(version(&pg, &db), "2");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM items"), "120");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM tags"), "15");
    let events: Value = c.get("/api/v1/services/web/events").await.unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in ["db_backup", "db_down", "db_restore"] {
        assert!(kinds.contains(&kind), "{kind} missing: {events}");
    }
    // (A forced restore ended v1's sessions: the demo app does not reconnect, which is
    // why a restore is refused while a slot runs.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_on_rollback_takes_the_database_back_to_its_version_before_the_deployment() {
    let pg = PgServer::shared();
    let db = pg.fresh_db("down_on_rollback");
    let mut h = with_files(&pg, &db, "down_on_rollback = \"manual\"\n").await;
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}\n{}", h.daemon_logs());
    pg.psql(
        &db,
        "INSERT INTO items (name) SELECT 'i' || g FROM generate_series(1, 40) g",
    );

    // A migration without a down file is refused up front with this setting.
    add(
        &h,
        "002_note.up.sql",
        "ALTER TABLE items ADD COLUMN note text;\n",
    );
    let refused = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(refused.code, 1, "{refused}");
    let hist = h.cli(&["history", "web", "--json"]).await.json();
    let reason = hist[0]["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("002_note.down.sql is missing"), "{reason}");
    assert_eq!(version(&pg, &db), "1");

    // With its down file: the additive migration deploys, then a rollback undoes it.
    add(
        &h,
        "002_note.down.sql",
        "ALTER TABLE items DROP COLUMN note;\n",
    );
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 0, "deploy v2:\n{v2}\n{}", h.daemon_logs());
    assert_eq!(version(&pg, &db), "2");
    pg.psql(&db, "UPDATE items SET note = 'n'");

    let rb = h.cli(&["rollback", "web"]).await;
    assert_eq!(rb.code, 0, "rollback:\n{rb}\n{}", h.daemon_logs());
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
    assert_eq!(version(&pg, &db), "1");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM items"), "40");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'"),
        "0"
    );
    // Recorded in the rollback: the down file with its duration, and where it ended.
    let hist = h.cli(&["history", "web", "--json"]).await.json();
    let rollback = &hist[0];
    assert_eq!(rollback["kind"], "rollback", "{rollback}");
    let down: Vec<&Value> = rollback["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["phase"] == "db:down")
        .collect();
    assert!(
        down.iter().any(|c| c["name"] == "002_note"
            && c["ok"] == true
            && c["detail"]
                .as_str()
                .unwrap_or("")
                .contains("AccessExclusiveLock on items")),
        "{down:#?}"
    );
    assert!(
        down.iter().any(|c| c["detail"]
            .as_str()
            .unwrap_or("")
            .contains("database back to version 1")),
        "{down:#?}"
    );
    let phases: Vec<&str> = rollback["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    let at = |n: &str| phases.iter().position(|p| *p == n);
    assert!(
        at("switch").is_some() && at("switch") < at("database_down"),
        "traffic first, then the database: {phases:?}"
    );
    let (status, body) = h.get_proxy("/").await.expect("v1 answers");
    assert_eq!((status, body.trim()), (200, "hello from v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_teams_own_migration_command_is_rehearsed_proven_and_applied_with_its_version_recorded()
{
    let pg = PgServer::shared();
    let db = pg.fresh_db("command");
    let mut h = harness(
        &pg,
        &db,
        "migrate_command = [\"sh\", \"tool/migrate.sh\"]\nversion_command = [\"sh\", \"tool/version.sh\"]\n",
    )
    .await;
    // A tiny migration tool: numbered SQL files, applied in order, version in a table.
    let tool = h.dir().join("tool");
    std::fs::create_dir_all(tool.join("sql")).unwrap();
    let psql = pg_bin().join("psql");
    let psql = psql.display();
    std::fs::write(
        tool.join("migrate.sh"),
        format!(
            r#"set -eu
q() {{ "{psql}" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"; }}
q -c "CREATE TABLE IF NOT EXISTS team_version (v int NOT NULL)"
current=$(q -c "SELECT coalesce(max(v), 0) FROM team_version")
for f in $(ls tool/sql | sort); do
  n=${{f%%_*}}; n=$(expr "$n" + 0)
  if [ "$n" -gt "$current" ]; then
    q -1 -f "tool/sql/$f" -c "DELETE FROM team_version; INSERT INTO team_version VALUES ($n)"
    echo "applied $f"
  fi
done
"#
        ),
    )
    .unwrap();
    std::fs::write(
        tool.join("version.sh"),
        format!(
            r#"set -eu
q() {{ "{psql}" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"; }}
if [ "$(q -c "SELECT to_regclass('team_version') IS NULL")" = t ]; then echo 0; else q -c "SELECT max(v) FROM team_version"; fi
"#
        ),
    )
    .unwrap();
    std::fs::write(tool.join("sql/001_items.sql"), ITEMS).unwrap();
    h.start().await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}\n{}", h.daemon_logs());
    assert_eq!(pg.psql(&db, "SELECT max(v) FROM team_version"), "1");

    std::fs::write(
        tool.join("sql/002_note.sql"),
        "ALTER TABLE items ADD COLUMN note text;\n",
    )
    .unwrap();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 0, "deploy v2:\n{v2}\n{}", h.daemon_logs());
    assert_eq!(pg.psql(&db, "SELECT max(v) FROM team_version"), "2");
    let hist = h.cli(&["history", "web", "--json"]).await.json();
    let d = &hist[0];
    assert_eq!(d["version"], "v2");
    let records: Vec<(String, String, bool, String)> = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["phase"].as_str().unwrap_or("").starts_with("db:"))
        .map(|c| {
            (
                c["phase"].as_str().unwrap_or("").into(),
                c["name"].as_str().unwrap_or("").into(),
                c["ok"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(records.iter().all(|r| r.2), "{records:#?}");
    let step = |phase: &str| {
        records
            .iter()
            .find(|r| r.0 == phase && r.1 == "migrate command")
            .unwrap_or_else(|| panic!("no {phase} run: {records:#?}"))
    };
    // Rehearsed on the scratch copy, then applied for real, each 1 → 2.
    for phase in ["db:rehearse", "db:migrate"] {
        let r = step(phase);
        assert!(r.3.contains("version 1 → 2"), "{r:?}");
        assert!(r.3.contains("applied 002_note.sql"), "{r:?}");
    }
    assert!(
        records
            .iter()
            .any(|r| r.0 == "db:prove" && r.1.starts_with("v1 on")),
        "{records:#?}"
    );
    assert!(records.iter().any(|r| r.0 == "db:backup"), "{records:#?}");
    // No lint: Cutover cannot see the tool's pending migrations.
    assert!(!records.iter().any(|r| r.0 == "db:lint"), "{records:#?}");
    let status = h.cli(&["db", "status", "web"]).await;
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.contains("version 2"), "{status}");
}
