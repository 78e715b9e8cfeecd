//! PostgreSQL: backups, migrations and the compatibility gate, as one phase of a
//! deployment (the orchestrator's `database` phase) and as `cutover db` commands.
//!
//! Why it is shaped this way: in a blue-green setup the database is where instant
//! rollback stops being instant. A migration that breaks the still-live release makes
//! the old slot useless. So before anything touches the live database the phase takes a
//! backup, lints the pending migrations for changes that break the live release,
//! rehearses them on a scratch copy, and (the orchestrator's part) runs the live
//! release against that copy. Only then are they applied for real.
//!
//! # Layout
//! - `files.rs`: the migrations directory (`NNN_name.up.sql`, `NNN_name.down.sql`),
//!   markers (`-- cutover:contract`, `-- cutover:no-transaction`), statement splitting;
//! - `migrate.rs`: the built-in runner: the version table `cutover_schema_migrations`,
//!   a transaction per file (or one statement at a time for `CONCURRENTLY`),
//!   `lock_timeout` with retries, the blocking session named, locks and rewrites
//!   recorded per statement;
//! - `lint.rs`: the squawk rules that decide what breaks the live release;
//! - `backup.rs`: `pg_dump -Fc` with metadata beside it, retention, restore, clones;
//! - `invalid_index.rs`: the INVALID index a failed `CREATE INDEX CONCURRENTLY` leaves,
//!   found and dropped;
//! - `command.rs`: the team's own migrate and version commands;
//! - `conn.rs`: connecting, database names and the URL a release is given.
//!
//! Layer: at the level of `runtime`; uses `config` and `checks`; the orchestrator
//! uses it.

pub mod backup;
pub mod command;
mod conn;
pub mod files;
mod invalid_index;
pub mod lint;
pub mod migrate;

pub use conn::Database;

/// Everything that can go wrong with a service's database.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to the database {db}: {reason}")]
    Connect { db: String, reason: String },
    #[error("{context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migration {version} ({name}): {reason}")]
    Migration {
        version: i64,
        name: String,
        reason: String,
    },
    #[error("migrations directory {dir}: {reason}")]
    Files { dir: String, reason: String },
    #[error("pg_dump {client} is older than the server ({server}): it refuses to dump a newer server. Install the PostgreSQL {server} client tools (e.g. postgresql-client-{server}) and point `pg_bin` at them")]
    ClientTooOld { client: u32, server: u32 },
    #[error("{tool} failed: {reason}")]
    Tool { tool: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backup {0} not found")]
    NoBackup(String),
    #[error("{0}")]
    Refused(String),
}

impl DatabaseError {
    pub(crate) fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| DatabaseError::Sql { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| DatabaseError::Io { context, source }
    }
}

/// A PostgreSQL error with its detail, hint and SQLSTATE (tokio-postgres' `Display` is
/// only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// The variables a release of `cfg`'s service gets in `slot`: its database's URL in
/// `url_env` (none without a database).
pub fn release_env(
    cfg: Option<&crate::config::ServiceConfig>,
    slot: crate::domain::Slot,
) -> Vec<(String, String)> {
    let Some((name, db)) = cfg.and_then(|c| Some((&c.name, c.database.as_ref()?))) else {
        return Vec::new();
    };
    let d = Database::new(name, db.clone(), std::path::Path::new(""));
    vec![(db.url_env.clone(), d.url_for(&d.slot_db(slot)))]
}
