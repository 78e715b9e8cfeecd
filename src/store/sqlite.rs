//! The SQLite-backed [`Store`].
//!
//! Why one `Mutex<Connection>` and plain synchronous methods: every call is a handful of
//! indexed statements on a local file (well under a millisecond), so async callers call
//! straight in; a connection pool or `spawn_blocking` would cost more than it saves.
//!
//! Why every write opens `BEGIN IMMEDIATE`: it takes the write lock up front, so a second
//! process (or a second handle) waits on `busy_timeout` instead of failing with
//! `SQLITE_BUSY` when a read lock would have to be upgraded mid-transaction. A racing
//! `begin_deployment` therefore waits, then meets the unique index on unfinished
//! deployments and reports `DeploymentInProgress`, never a spurious "database is locked".
//!
//! Enums are stored as their snake_case names; a name this binary does not know is a
//! read error (`StoreError::Sqlite` wrapping a conversion failure), never a panic.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::feed::{events_where, last_event_id, EventFilter, Feed};
use super::rows::*;
use super::*;
use crate::domain::{now_ms, Slot, UnixMillis};

/// The phase every deployment starts in: it holds the per-service lock.
const FIRST_PHASE: &str = "lock";

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Store {
    conn: Mutex<rusqlite::Connection>,
    feed: Feed,
}

impl Store {
    /// Opens (creating if needed, readable by its owner only) the store file and
    /// migrates it to this binary's schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let conn = open_private(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::init(conn, shown)
    }

    /// Writes the whole store to a new file at `path` and carries on there: for a store
    /// whose file was removed while the daemon ran (the open connection still reads and
    /// writes the unlinked file, which a restart would not find). `path` must not exist
    /// or be empty.
    pub fn relocate(&self, path: &Path) -> Result<(), StoreError> {
        let shown = path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: shown.clone(),
            source,
        };
        let mut conn = self.lock();
        // An empty file of ours first, so the copy is private too.
        drop(open_private(path).map_err(open_err)?);
        conn.execute("VACUUM INTO ?1", [&shown])?;
        let fresh = open_private(path).map_err(open_err)?;
        configure(&fresh, &shown).map_err(open_err)?;
        *conn = fresh;
        Ok(())
    }

    /// A private in-memory store (tests, `--ephemeral` runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let shown = ":memory:".to_string();
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::init(conn, shown)
    }

    fn init(mut conn: Connection, path: String) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        configure(&conn, &path).map_err(open_err)?;
        match schema::migrate(&mut conn) {
            Ok(()) => {}
            Err(StoreError::Sqlite(source)) => return Err(open_err(source)),
            Err(other) => return Err(other),
        }
        let feed = Feed::new(last_event_id(&conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })?);
        Ok(Store {
            conn: Mutex::new(conn),
            feed,
        })
    }

    /// Creates service rows (both slots `empty`) for names not yet stored.
    pub fn ensure_services(&self, names: &[&str]) -> Result<(), StoreError> {
        let at = now_ms();
        self.write(|tx| {
            for name in names {
                ensure_service_rows(tx, name, at)?;
            }
            Ok(())
        })
    }

    /// One service with both slots; `NotFound` if it was never stored.
    pub fn service(&self, name: &str) -> Result<ServiceRecord, StoreError> {
        self.read(|c| {
            load_service(c, name)?.ok_or_else(|| StoreError::NotFound(format!("service `{name}`")))
        })
    }

    /// Every stored service, by name.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.read(|c| {
            let names = c
                .prepare_cached("SELECT name FROM services ORDER BY name")?
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                out.extend(load_service(c, &name)?);
            }
            Ok(out)
        })
    }

    /// Writes one slot row and, optionally, the live slot, outside a deployment
    /// (boot reconciliation, standby expiry), with an event.
    ///
    /// Creates the service's rows if they are missing. `slot.updated_at` is ignored:
    /// the row gets `at`.
    pub fn update_slot(
        &self,
        service: &str,
        slot: &SlotRecord,
        live: Option<Option<Slot>>,
        event: Option<(&str, &str)>,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            ensure_service_rows(tx, service, at)?;
            upsert_slot(tx, service, slot, at)?;
            if let Some(live) = live {
                set_live(tx, service, live, at)?;
            }
            if let Some((kind, message)) = event {
                insert_event(tx, service, None, kind, message, None, at)?;
            }
            Ok(())
        })
    }

    /// Fails with `DeploymentInProgress` if the service has an unfinished deployment.
    ///
    /// Otherwise stores the deployment (creating the service's rows if needed) in phase
    /// `lock`, opens that phase, appends a `deploy_started` / `rollback_started` event and
    /// returns the new id. The refusal comes from the database's unique index, so it
    /// holds across processes and restarts.
    pub fn begin_deployment(&self, new: &NewDeployment) -> Result<i64, StoreError> {
        self.write(|tx| {
            ensure_service_rows(tx, &new.service, new.at)?;
            let inserted = tx.execute(
                "INSERT INTO deployments (service, kind, version, target_slot, from_slot,
                     from_version, phase, triggered_by, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.service,
                    new.kind,
                    new.version,
                    new.target_slot,
                    new.from_slot,
                    new.from_version,
                    FIRST_PHASE,
                    new.triggered_by,
                    new.at,
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let id = tx.query_row(
                        "SELECT id FROM deployments WHERE service = ?1 AND outcome IS NULL",
                        [&new.service],
                        |row| row.get(0),
                    )?;
                    return Err(StoreError::DeploymentInProgress {
                        service: new.service.clone(),
                        id,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            let id = tx.last_insert_rowid();
            open_phase(tx, id, FIRST_PHASE, new.at)?;
            let kind = match new.kind {
                DeploymentKind::Deploy => "deploy_started",
                DeploymentKind::Rollback => "rollback_started",
            };
            let data = serde_json::json!({
                "kind": new.kind,
                "version": new.version,
                "target_slot": new.target_slot,
                "from_slot": new.from_slot,
                "from_version": new.from_version,
                "triggered_by": new.triggered_by,
            });
            insert_event(
                tx,
                &new.service,
                Some(id),
                kind,
                &started_message(new),
                Some(&data),
                new.at,
            )?;
            Ok(id)
        })
    }

    /// Writes one state-machine step in one transaction (see [`Transition`]).
    ///
    /// Order inside the transaction: event, phase change (with its `phase` event),
    /// slots, live slot, `switched_at`, finish. When both `enter_phase` and `finish` are set, `phase_result` closes
    /// the phase being left and the entered phase is closed with the outcome's name.
    /// `NotFound` for an unknown deployment; `AlreadyFinished` for a phase change or a
    /// finish on a deployment that has an outcome. Any error leaves nothing written.
    pub fn apply(&self, t: &Transition) -> Result<(), StoreError> {
        self.write(|tx| {
            let id = t.deployment_id;
            let (service, outcome): (String, Option<DeploymentOutcome>) = tx
                .query_row(
                    "SELECT service, outcome FROM deployments WHERE id = ?1",
                    [id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| deployment_not_found(id))?;
            if let Some(outcome) = outcome {
                if t.enter_phase.is_some() || t.finish.is_some() {
                    return Err(StoreError::AlreadyFinished { id, outcome });
                }
            }
            // The step's log line first: it says what led to the phase entered (traffic
            // switched → watch; a trigger → switch_back), and followers print in id order.
            if let Some((kind, message)) = &t.event {
                insert_event(tx, &service, Some(id), kind, message, None, t.at)?;
            }
            if let Some(phase) = &t.enter_phase {
                let left = t.phase_result.as_deref().unwrap_or("ok");
                close_open_phase(tx, id, t.at, left)?;
                open_phase(tx, id, phase, t.at)?;
                tx.execute(
                    "UPDATE deployments SET phase = ?2 WHERE id = ?1",
                    params![id, phase],
                )?;
                let data = serde_json::json!({ "phase": phase, "previous_result": left });
                insert_event(tx, &service, Some(id), "phase", phase, Some(&data), t.at)?;
            }
            for slot in &t.slots {
                upsert_slot(tx, &service, slot, t.at)?;
            }
            if let Some(live) = t.live {
                set_live(tx, &service, live, t.at)?;
            }
            if let Some(switched_at) = t.switched_at {
                tx.execute(
                    "UPDATE deployments SET switched_at = ?2 WHERE id = ?1",
                    params![id, switched_at],
                )?;
            }
            if let Some((outcome, reason)) = &t.finish {
                let result = match (&t.enter_phase, &t.phase_result) {
                    (None, Some(result)) => result.as_str(),
                    _ => outcome.as_str(),
                };
                close_open_phase(tx, id, t.at, result)?;
                tx.execute(
                    "UPDATE deployments SET outcome = ?2, reason = ?3, finished_at = ?4
                     WHERE id = ?1",
                    params![id, outcome, reason, t.at],
                )?;
            }
            Ok(())
        })
    }

    /// Appends one check result to a deployment, and a `check` event carrying it;
    /// `NotFound` for an unknown id.
    pub fn record_check(&self, deployment_id: i64, check: &CheckRecord) -> Result<(), StoreError> {
        self.write(|tx| {
            let service = deployment_service(tx, deployment_id)?;
            let mark = if check.ok { "ok" } else { "failed" };
            let message = format!(
                "{} {} {mark}: {} ({} ms)",
                check.phase, check.name, check.detail, check.duration_ms
            );
            let data = serde_json::to_value(check).ok();
            insert_event(
                tx,
                &service,
                Some(deployment_id),
                "check",
                &message,
                data.as_ref(),
                check.at,
            )?;
            tx.execute(
                "INSERT INTO checks (deployment_id, phase, name, ok, detail, duration_ms, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    deployment_id,
                    check.phase,
                    check.name,
                    check.ok,
                    check.detail,
                    i64::try_from(check.duration_ms).unwrap_or(i64::MAX),
                    check.at,
                ],
            )?;
            Ok(())
        })
    }

    /// Appends one analysis measurement to a deployment; `NotFound` for an unknown id.
    /// A NaN or infinite value is stored as no value (SQLite has no NaN).
    pub fn record_measurement(
        &self,
        deployment_id: i64,
        m: &MeasurementRecord,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let service = deployment_service(tx, deployment_id)?;
            let message = format!("{} {}: {} ({})", m.phase, m.metric, m.detail, m.verdict);
            // serde_json turns a NaN or infinite value into `null`.
            let data = serde_json::to_value(m).ok();
            insert_event(
                tx,
                &service,
                Some(deployment_id),
                "measurement",
                &message,
                data.as_ref(),
                m.at,
            )?;
            tx.execute(
                "INSERT INTO measurements (deployment_id, phase, metric, value, verdict, detail, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    deployment_id,
                    m.phase,
                    m.metric,
                    m.value.filter(|v| v.is_finite()),
                    m.verdict,
                    m.detail,
                    m.at,
                ],
            )?;
            Ok(())
        })
    }

    /// One deployment with its phases, checks and measurements; `NotFound` for an
    /// unknown id.
    pub fn deployment(&self, id: i64) -> Result<DeploymentRecord, StoreError> {
        self.read(|c| {
            query_deployments(c, "WHERE id = ?1", params![id])?
                .pop()
                .ok_or_else(|| deployment_not_found(id))
        })
    }

    /// The service's unfinished deployment, if any.
    pub fn active_deployment(&self, service: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        self.read(|c| {
            let mut found = query_deployments(
                c,
                "WHERE service = ?1 AND outcome IS NULL",
                params![service],
            )?;
            Ok(found.pop())
        })
    }

    /// Every unfinished deployment, oldest first (what a restarted daemon must resolve).
    pub fn active_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.read(|c| query_deployments(c, "WHERE outcome IS NULL ORDER BY id", params![]))
    }

    /// The release that was live before `live_version` became live in `live_slot`: the
    /// `from_version` of the newest succeeded deployment that put it there. `None`
    /// when there is no such deployment (or it came from nothing).
    ///
    /// One indexed query: the rollback API asks this on every call, and loading the
    /// history (with every deployment's phases, checks and measurements) grew with it.
    pub fn previous_release(
        &self,
        service: &str,
        live_slot: Slot,
        live_version: &str,
    ) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            let found = c
                .prepare_cached(
                    "SELECT from_version FROM deployments
                     WHERE service = ?1 AND outcome = ?2 AND target_slot = ?3 AND version = ?4
                     ORDER BY id DESC LIMIT 1",
                )?
                .query_row(
                    params![
                        service,
                        DeploymentOutcome::Succeeded,
                        live_slot,
                        live_version
                    ],
                    |row| row.get::<_, Option<String>>(0),
                )
                .optional()?;
            Ok(found.flatten())
        })
    }

    /// Newest first.
    pub fn history(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.read(|c| {
            query_deployments(
                c,
                "WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
                params![service, sql_limit(limit)],
            )
        })
    }

    /// Appends an event (with an optional structured payload); `NotFound` if
    /// `deployment_id` names no deployment.
    pub fn append_event(
        &self,
        service: &str,
        deployment_id: Option<i64>,
        kind: &str,
        message: &str,
        data: Option<&serde_json::Value>,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if let Some(id) = deployment_id {
                deployment_service(tx, id)?;
            }
            insert_event(tx, service, deployment_id, kind, message, data, at)
        })
    }

    /// Newest first.
    pub fn events(&self, service: &str, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.read(|c| {
            events_where(
                c,
                "WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
                params![service, sql_limit(limit)],
            )
        })
    }

    /// Up to `limit` events with an id above `after` that `filter` keeps, oldest first:
    /// what a follower that saw `after` has not seen yet.
    pub fn events_after(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.read(|c| {
            events_where(
                c,
                "WHERE id > ?1 AND (?2 IS NULL OR service = ?2)
                   AND (?3 IS NULL OR deployment_id = ?3)
                 ORDER BY id LIMIT ?4",
                params![
                    after,
                    filter.service,
                    filter.deployment_id,
                    sql_limit(limit)
                ],
            )
        })
    }

    /// The newest event's id (0 when there is none): where a follower that wants only
    /// what happens from now on starts.
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read(last_event_id)
    }

    /// Events as they are committed, in id order, each once (see `store/feed.rs`).
    /// Subscribe *before* reading the backlog with [`Store::events_after`], then skip
    /// ids already seen: nothing falls between the two.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<EventRecord>> {
        self.feed.subscribe()
    }

    /// Finished deployments per (service, outcome), ordered by service then outcome name.
    pub fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        self.read(|c| {
            let counts = c
                .prepare_cached(
                    "SELECT service, outcome, count(*) FROM deployments
                     WHERE outcome IS NOT NULL
                     GROUP BY service, outcome ORDER BY service, outcome",
                )?
                .query_map([], |row| {
                    Ok(OutcomeCount {
                        service: row.get(0)?,
                        outcome: row.get(1)?,
                        count: row.get::<_, i64>(2)?.max(0) as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(counts)
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call dropped (rolled back) its transaction; the connection is fine.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed only if `f` succeeds.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        // Still under the lock, so the feed sends events in id order. The write itself
        // succeeded: a failure to read it back for the feed is logged, not returned
        // (followers catch up from the store).
        if let Err(e) = self.feed.publish_committed(&conn) {
            tracing::warn!(error = %e, "cannot publish new events to the live feed");
        }
        Ok(out)
    }

    /// Runs `f` in a read transaction, so multi-statement reads see one snapshot.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Opens (creating) a database file with mode 0600 when it is new. SQLite gives its
/// `-wal` and `-shm` files the database file's permissions.
fn open_private(path: &Path) -> rusqlite::Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(e.to_string()),
                )
            })?;
    }
    Connection::open(path)
}

/// The connection settings every store connection has.
fn configure(conn: &Connection, path: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode = enable_wal(conn)?;
    if !mode.eq_ignore_ascii_case("wal") && path != ":memory:" {
        tracing::warn!(%path, %mode, "the store could not switch to WAL journaling");
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
}

/// Switches to WAL and returns the resulting journal mode (`memory` for in-memory stores).
///
/// Retried by hand: while another connection is switching the same fresh file, SQLite
/// answers `SQLITE_BUSY` at once instead of calling the busy handler.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error(),
        Some(err) if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// "deploying v2 into green (replacing v1 in blue)" and the like, for the event log.
fn started_message(new: &NewDeployment) -> String {
    let from = match (new.from_slot, &new.from_version) {
        (Some(slot), Some(version)) => format!("{version} in {slot}"),
        (Some(slot), None) => format!("{slot}"),
        (None, _) => String::new(),
    };
    match (new.kind, from.is_empty()) {
        (DeploymentKind::Deploy, false) => format!(
            "deploying {} into {} (replacing {from})",
            new.version, new.target_slot
        ),
        (DeploymentKind::Deploy, true) => format!(
            "deploying {} into {} (nothing live)",
            new.version, new.target_slot
        ),
        (DeploymentKind::Rollback, false) => format!(
            "rolling back to {} in {} (from {from})",
            new.version, new.target_slot
        ),
        (DeploymentKind::Rollback, true) => {
            format!("rolling back to {} in {}", new.version, new.target_slot)
        }
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
