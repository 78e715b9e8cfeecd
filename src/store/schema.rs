//! Schema migrations, applied in order at open; `PRAGMA user_version` holds the version.
//!
//! Why a list of SQL strings and not "CREATE TABLE IF NOT EXISTS": a daemon upgraded in
//! place must carry the old file forward, and an old binary must refuse a file written
//! by a newer one instead of misreading it. Version `n` means `MIGRATIONS[..n]` have been
//! applied. Never edit a released migration; append a new one.
//!
//! Each migration runs in its own `BEGIN IMMEDIATE` transaction that re-reads the version
//! first, so two processes opening the same fresh file cannot both apply it.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Ordered migrations; index `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
CREATE TABLE services (
    name        TEXT PRIMARY KEY NOT NULL,
    live_slot   TEXT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE slots (
    service        TEXT NOT NULL REFERENCES services(name),
    slot           TEXT NOT NULL,
    state          TEXT NOT NULL,
    version        TEXT NULL,
    addr           TEXT NULL,
    handle         TEXT NULL,
    standby_until  INTEGER NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (service, slot)
);

CREATE TABLE deployments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    service       TEXT NOT NULL REFERENCES services(name),
    kind          TEXT NOT NULL,
    version       TEXT NOT NULL,
    target_slot   TEXT NOT NULL,
    from_slot     TEXT NULL,
    from_version  TEXT NULL,
    phase         TEXT NOT NULL,
    outcome       TEXT NULL,
    reason        TEXT NULL,
    triggered_by  TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER NULL,
    switched_at   INTEGER NULL
);

-- The one-deployment-per-service invariant lives here, not in memory.
CREATE UNIQUE INDEX deployments_one_unfinished_per_service
    ON deployments(service) WHERE outcome IS NULL;
CREATE INDEX deployments_by_service ON deployments(service, id);

CREATE TABLE phases (
    deployment_id  INTEGER NOT NULL REFERENCES deployments(id),
    seq            INTEGER NOT NULL,
    phase          TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER NULL,
    result         TEXT NULL,
    PRIMARY KEY (deployment_id, seq)
);

CREATE TABLE checks (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id  INTEGER NOT NULL REFERENCES deployments(id),
    phase          TEXT NOT NULL,
    name           TEXT NOT NULL,
    ok             INTEGER NOT NULL,
    detail         TEXT NOT NULL,
    duration_ms    INTEGER NOT NULL,
    at             INTEGER NOT NULL
);
CREATE INDEX checks_by_deployment ON checks(deployment_id, id);

CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    service        TEXT NOT NULL,
    deployment_id  INTEGER NULL REFERENCES deployments(id),
    kind           TEXT NOT NULL,
    message        TEXT NOT NULL
);
CREATE INDEX events_by_service ON events(service, id);
"#,
    // 2: analysis measurements (canary steps, watch).
    r#"
CREATE TABLE measurements (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id  INTEGER NOT NULL REFERENCES deployments(id),
    phase          TEXT NOT NULL,
    metric         TEXT NOT NULL,
    value          REAL NULL,
    verdict        TEXT NOT NULL,
    detail         TEXT NOT NULL,
    at             INTEGER NOT NULL
);
CREATE INDEX measurements_by_deployment ON measurements(deployment_id, id);
"#,
    // 3: the live event feed: a structured payload beside each event's message (check
    // results, measurements, watch samples), and a lookup by deployment for followers.
    r#"
ALTER TABLE events ADD COLUMN data TEXT NULL;
CREATE INDEX events_by_deployment ON events(deployment_id, id);
"#,
    // 4: slot targets: the router-specific identity of a running slot beside its
    // endpoint (`addr`, now `ip:port` or `host:port`). NULL in older rows: read back as
    // `<service>-<slot>`.
    r#"
ALTER TABLE slots ADD COLUMN identity TEXT NULL;
"#,
];

/// The schema version this binary writes.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the schema up to [`latest_version`], one transaction per migration.
///
/// Refuses (`SchemaTooNew`) a file written by a newer binary before touching it.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = latest_version();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = user_version(&tx)?;
        if found > supported {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
        if found == supported {
            tx.commit()?;
            return Ok(());
        }
        // `found` is in 0..supported, so the index is in bounds.
        tx.execute_batch(MIGRATIONS[found as usize])?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_a_fresh_database_reaches_the_latest_version_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), latest_version());
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), latest_version());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN
                 ('services', 'slots', 'deployments', 'phases', 'checks', 'events', 'measurements')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 7);
    }

    #[test]
    fn migrating_a_database_from_the_future_is_refused_without_changes() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, supported }
                if found == latest_version() + 1 && supported == latest_version()),
            "{err:?}"
        );
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }
}
