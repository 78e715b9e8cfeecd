//! The built-in migration runner: applies `files.rs` migrations and keeps the version
//! table `cutover_schema_migrations` in step.
//!
//! Why each rule:
//! - a file runs in one transaction with its version row, so a failure leaves neither
//!   half a migration nor a version that was not applied;
//! - `CONCURRENTLY` cannot run in a transaction, so such files (or ones marked
//!   `-- cutover:no-transaction`) run one statement at a time, the version row after
//!   the last one (write them so they can run again: `IF NOT EXISTS`);
//! - every statement runs with `lock_timeout`: an `ALTER TABLE` queued behind a long
//!   transaction would otherwise block every query on the table behind it, which is an
//!   outage. On a timeout the file is retried (up to `retries` more times), and the
//!   session that held the lock is named (watched from a second connection through
//!   `pg_blocking_pids` while the statement waits);
//! - each statement's locks (from `pg_locks`) and table rewrites (a changed
//!   `relfilenode`) are recorded, so the rehearsal on a scratch copy shows what the
//!   real run will do to the live tables.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::files::{self, Migration};
use super::{describe, invalid_index, Database, DatabaseError};

pub const VERSION_TABLE: &str = "cutover_schema_migrations";

/// How statements wait for locks.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub lock_timeout: Duration,
    pub retries: u32,
}

impl Options {
    pub fn of(db: &Database) -> Options {
        Options {
            lock_timeout: db.cfg.lock_timeout,
            retries: db.cfg.retries,
        }
    }
}

/// What one statement did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementRun {
    /// The statement's first 80 characters.
    pub statement: String,
    pub duration_ms: u64,
    /// The strongest lock it took per table: `AccessExclusiveLock on items`.
    pub locks: Vec<String>,
    /// Tables it rewrote.
    pub rewrote: Vec<String>,
    /// INVALID indexes a failed concurrent build left, dropped before this statement
    /// went through (`invalid_index.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_invalid: Vec<String>,
}

impl StatementRun {
    pub fn describe(&self) -> String {
        let locks = match self.locks.is_empty() {
            true => "no table lock".to_string(),
            false => self.locks.join(", "),
        };
        let rewrite = match self.rewrote.is_empty() {
            true => "no rewrite".to_string(),
            false => format!("REWROTE {}", self.rewrote.join(", ")),
        };
        let dropped = match self.dropped_invalid.is_empty() {
            true => String::new(),
            false => format!(
                "; dropped the invalid index {} a failed build left",
                self.dropped_invalid.join(", ")
            ),
        };
        format!(
            "{} — {locks}; {rewrite}{dropped}; {}ms",
            self.statement, self.duration_ms
        )
    }
}

/// What one migration did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationRun {
    pub version: i64,
    pub name: String,
    pub duration_ms: u64,
    pub attempts: u32,
    pub statements: Vec<StatementRun>,
}

impl MigrationRun {
    /// One line per statement under a heading.
    pub fn detail(&self) -> String {
        let mut s = format!(
            "{:03}_{} in {}ms ({} attempt{})",
            self.version,
            self.name,
            self.duration_ms,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        );
        for st in &self.statements {
            s.push_str("\n  ");
            s.push_str(&st.describe());
        }
        s
    }
}

/// A row of the version table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    pub version: i64,
    pub name: String,
    pub applied_at: String,
    pub duration_ms: i64,
}

/// Creates the version table if it is missing.
pub async fn ensure_table(client: &Client) -> Result<(), DatabaseError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                duration_ms bigint NOT NULL DEFAULT 0
            )"
        ))
        .await
        .map_err(DatabaseError::sql("creating the version table"))
}

/// The applied migrations, oldest first (none when the table does not exist).
pub async fn applied(client: &Client) -> Result<Vec<Applied>, DatabaseError> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&VERSION_TABLE])
        .await
        .map_err(DatabaseError::sql("looking for the version table"))?;
    if !exists.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!("SELECT version, name, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), duration_ms FROM {VERSION_TABLE} ORDER BY version"),
            &[],
        )
        .await
        .map_err(DatabaseError::sql("reading the version table"))?;
    Ok(rows
        .iter()
        .map(|r| Applied {
            version: r.get(0),
            name: r.get(1),
            applied_at: r.get(2),
            duration_ms: r.get(3),
        })
        .collect())
}

/// The migrations not applied yet, in order.
pub fn pending<'a>(all: &'a [Migration], applied: &[Applied]) -> Vec<&'a Migration> {
    all.iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect()
}

/// The highest applied version, as text (`"7"`; `"0"` with none).
pub fn current_version(applied: &[Applied]) -> String {
    applied
        .iter()
        .map(|a| a.version)
        .max()
        .unwrap_or(0)
        .to_string()
}

/// Applies `m` to database `dbname` (`None`: the configured one).
pub async fn up(
    db: &Database,
    dbname: Option<&str>,
    m: &Migration,
    opts: Options,
) -> Result<MigrationRun, DatabaseError> {
    let client = db.connect(dbname).await?;
    ensure_table(&client).await?;
    let watch = db.connect(dbname).await?;
    let record = format!(
        "INSERT INTO {VERSION_TABLE} (version, name, duration_ms) VALUES ({}, {}, $DURATION)",
        m.version,
        literal(&m.name)
    );
    run_file(&client, &watch, m, &m.up, !m.no_transaction, &record, opts).await
}

/// Runs `m`'s down file and removes its version row.
pub async fn down(
    db: &Database,
    dbname: Option<&str>,
    m: &Migration,
    opts: Options,
) -> Result<MigrationRun, DatabaseError> {
    let Some(sql) = &m.down else {
        return Err(DatabaseError::Migration {
            version: m.version,
            name: m.name.clone(),
            reason: format!("it has no down file ({:03}_{}.down.sql)", m.version, m.name),
        });
    };
    let client = db.connect(dbname).await?;
    ensure_table(&client).await?;
    let watch = db.connect(dbname).await?;
    let record = format!("DELETE FROM {VERSION_TABLE} WHERE version = {}", m.version);
    let tx = !files::needs_no_transaction(sql);
    run_file(&client, &watch, m, sql, tx, &record, opts).await
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn run_file(
    client: &Client,
    watch: &Client,
    m: &Migration,
    sql: &str,
    transaction: bool,
    record: &str,
    opts: Options,
) -> Result<MigrationRun, DatabaseError> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(DatabaseError::sql("reading the session id"))?
        .get(0);
    let fail = |reason: String| DatabaseError::Migration {
        version: m.version,
        name: m.name.clone(),
        reason,
    };
    let statements = files::statements(sql);
    let started = Instant::now();
    let timeout_ms = opts.lock_timeout.as_millis().max(1);
    let mut attempts = 0;
    if transaction {
        loop {
            attempts += 1;
            let mut runs = Vec::new();
            let result: Result<(), StatementError> = async {
                exec(
                    client,
                    &format!("BEGIN; SET LOCAL lock_timeout = '{timeout_ms}ms'"),
                )
                .await?;
                for stmt in &statements {
                    runs.push(observed(client, watch, pid, stmt).await?);
                }
                let ms = started.elapsed().as_millis().to_string();
                exec(client, &record.replace("$DURATION", &ms)).await?;
                exec(client, "COMMIT").await
            }
            .await;
            match result {
                Ok(()) => {
                    return Ok(MigrationRun {
                        version: m.version,
                        name: m.name.clone(),
                        duration_ms: started.elapsed().as_millis() as u64,
                        attempts,
                        statements: runs,
                    })
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    if e.lock_timeout() && attempts <= opts.retries {
                        tracing::warn!(version = m.version, attempt = attempts, why = %e.explain(opts.lock_timeout), "migration waited too long for a lock; retrying");
                        tokio::time::sleep(backoff(attempts)).await;
                        continue;
                    }
                    return Err(fail(e.explain_attempts(opts.lock_timeout, attempts)));
                }
            }
        }
    }
    // One statement at a time, each retried on its own.
    exec(client, &format!("SET lock_timeout = '{timeout_ms}ms'"))
        .await
        .map_err(|e| fail(e.explain(opts.lock_timeout)))?;
    let mut runs = Vec::new();
    // Invalid indexes dropped since the last statement that went through.
    let mut dropped = Vec::new();
    for stmt in &statements {
        let mut tries = 0;
        loop {
            tries += 1;
            attempts = attempts.max(tries);
            let concurrent = files::needs_no_transaction(stmt);
            let result = if concurrent {
                // A failed concurrent build leaves an INVALID index behind
                // (`invalid_index.rs`): drop one this statement would build again
                // before it runs, and any that appear if it fails.
                let before = invalid_index::list(client).await;
                let (gone, stuck) =
                    invalid_index::drop_all(client, &invalid_index::leftovers_of(&before, stmt))
                        .await;
                dropped.extend(gone);
                if let Some(why) = stuck.first() {
                    return Err(fail(format!(
                        "cannot drop the invalid index an earlier build left: {why}"
                    )));
                }
                let before = invalid_index::list(client).await;
                let t = Instant::now();
                match watched(client, watch, pid, stmt).await {
                    Ok(()) => Ok(StatementRun {
                        statement: files::head(stmt),
                        duration_ms: t.elapsed().as_millis() as u64,
                        locks: vec![
                            "ShareUpdateExclusiveLock (concurrent: reads and writes go on)".into(),
                        ],
                        rewrote: Vec::new(),
                        dropped_invalid: std::mem::take(&mut dropped),
                    }),
                    Err(mut e) => {
                        let after = invalid_index::list(client).await;
                        let left: Vec<String> = after.difference(&before).cloned().collect();
                        let (gone, stuck) = invalid_index::drop_all(client, &left).await;
                        e.cleanup = cleanup_note(&gone, &stuck);
                        dropped.extend(gone);
                        Err(e)
                    }
                }
            } else {
                async {
                    exec(client, "BEGIN").await?;
                    let run = observed(client, watch, pid, stmt).await?;
                    exec(client, "COMMIT").await?;
                    Ok(run)
                }
                .await
            };
            match result {
                Ok(run) => {
                    runs.push(run);
                    break;
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    if e.lock_timeout() && tries <= opts.retries {
                        tokio::time::sleep(backoff(tries)).await;
                        continue;
                    }
                    return Err(fail(e.explain_attempts(opts.lock_timeout, tries)));
                }
            }
        }
    }
    let ms = started.elapsed().as_millis().to_string();
    exec(client, &record.replace("$DURATION", &ms))
        .await
        .map_err(|e| fail(e.explain(opts.lock_timeout)))?;
    Ok(MigrationRun {
        version: m.version,
        name: m.name.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
        attempts,
        statements: runs,
    })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * u64::from(attempt.min(10)))
}

/// A statement that failed, with the session that blocked it if it waited on a lock.
struct StatementError {
    statement: String,
    error: tokio_postgres::Error,
    blocker: Option<String>,
    /// What was done about the invalid index a failed concurrent build left.
    cleanup: Option<String>,
}

/// Says which invalid indexes a failed build left were dropped (or could not be).
fn cleanup_note(dropped: &[String], stuck: &[String]) -> Option<String> {
    let mut parts = Vec::new();
    if !dropped.is_empty() {
        parts.push(format!(
            "dropped the invalid index {} it left (DROP INDEX CONCURRENTLY)",
            dropped.join(", ")
        ));
    }
    if !stuck.is_empty() {
        parts.push(format!(
            "could NOT drop the invalid index it left: {}",
            stuck.join("; ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

impl StatementError {
    fn lock_timeout(&self) -> bool {
        self.error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
    }

    fn explain(&self, lock_timeout: Duration) -> String {
        let mut s = if self.lock_timeout() {
            format!(
                "`{}` waited longer than lock_timeout ({}) for a lock",
                self.statement,
                crate::checks::human_duration(lock_timeout)
            )
        } else {
            format!("`{}` failed: {}", self.statement, describe(&self.error))
        };
        if let Some(b) = &self.blocker {
            s.push_str(&format!("; blocked by {b}"));
        }
        if let Some(c) = &self.cleanup {
            s.push_str(&format!("; {c}"));
        }
        s
    }

    fn explain_attempts(&self, lock_timeout: Duration, attempts: u32) -> String {
        match self.lock_timeout() {
            true => format!("{} ({attempts} attempts)", self.explain(lock_timeout)),
            false => self.explain(lock_timeout),
        }
    }
}

async fn exec(client: &Client, sql: &str) -> Result<(), StatementError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|error| StatementError {
            statement: files::head(sql),
            error,
            blocker: None,
            cleanup: None,
        })
}

/// Runs `stmt` (inside the caller's transaction) and records its locks and rewrites.
async fn observed(
    client: &Client,
    watch: &Client,
    pid: i32,
    stmt: &str,
) -> Result<StatementRun, StatementError> {
    let before_nodes = relfilenodes(client).await;
    let before_locks = locks(client).await;
    let t = Instant::now();
    watched(client, watch, pid, stmt).await?;
    let duration_ms = t.elapsed().as_millis() as u64;
    let after_locks = locks(client).await;
    let after_nodes = relfilenodes(client).await;
    let locks = after_locks
        .iter()
        .filter(|(table, mode)| before_locks.get(*table).is_none_or(|m| m < *mode))
        .filter(|(table, _)| table.as_str() != VERSION_TABLE)
        .map(|(table, mode)| format!("{} on {table}", LOCKS[*mode]))
        .collect();
    let rewrote = after_nodes
        .iter()
        .filter(|(table, node)| before_nodes.get(*table).is_some_and(|b| b != *node))
        .map(|(table, _)| table.clone())
        .collect();
    Ok(StatementRun {
        statement: files::head(stmt),
        duration_ms,
        locks,
        rewrote,
        dropped_invalid: Vec::new(),
    })
}

/// Runs `stmt`, watching from `watch` which sessions block it while it waits.
async fn watched(
    client: &Client,
    watch: &Client,
    pid: i32,
    stmt: &str,
) -> Result<(), StatementError> {
    let run = client.batch_execute(stmt);
    tokio::pin!(run);
    let mut blocker = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.tick().await;
    loop {
        tokio::select! {
            result = &mut run => {
                return result.map_err(|error| StatementError {
                    statement: files::head(stmt),
                    error,
                    blocker,
                    cleanup: None,
                });
            }
            _ = tick.tick() => {
                if let Some(b) = blockers(watch, pid).await {
                    blocker = Some(b);
                }
            }
        }
    }
}

/// The sessions blocking `pid`, described for a person.
async fn blockers(watch: &Client, pid: i32) -> Option<String> {
    let rows = watch
        .query(
            "SELECT a.pid, coalesce(a.usename::text, ''), coalesce(a.application_name, ''), coalesce(a.state, ''), \
                    left(coalesce(a.query, ''), 120), coalesce(extract(epoch FROM now() - a.xact_start)::float8, 0) \
             FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids($1))",
            &[&pid],
        )
        .await
        .ok()?;
    let described: Vec<String> = rows
        .iter()
        .map(|r| {
            let (bpid, user, app, state, query, secs): (i32, String, String, String, String, f64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            let app = match app.is_empty() {
                true => String::new(),
                false => format!(", application {app}"),
            };
            format!(
                "session {bpid} (user {user}{app}, {state}, transaction open {secs:.1}s, last query: {})",
                query.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    (!described.is_empty()).then(|| described.join("; "))
}

/// Lock modes, weakest first.
const LOCKS: [&str; 8] = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

/// The strongest relation lock this session holds, per user table.
async fn locks(client: &Client) -> BTreeMap<String, usize> {
    let rows = client
        .query(
            "SELECT c.oid::regclass::text, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND c.relkind IN ('r', 'p', 'm') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap_or_default();
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let (table, mode): (String, String) = (r.get(0), r.get(1));
        if let Some(rank) = LOCKS.iter().position(|m| *m == mode) {
            let e = out.entry(table).or_insert(rank);
            *e = (*e).max(rank);
        }
    }
    out
}

/// Each user table's storage file: a new one means the table was rewritten.
async fn relfilenodes(client: &Client) -> BTreeMap<String, u32> {
    let rows = client
        .query(
            "SELECT c.oid::regclass::text, c.relfilenode FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, u32>(1)))
        .collect()
}
