//! The validated database types (`[services.<name>.database]`), read by `database.rs`.
//!
//! Apart from the rules so that `model.rs` can re-export them without importing a
//! section file (config imports point one way; see `mod.rs`).

use std::path::PathBuf;
use std::time::Duration;

/// A service's PostgreSQL database: how to reach it, where its migrations come from,
/// and how a deployment treats it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/dbname` (a password in it is allowed but better
    /// given by `password_env` or `password_file`).
    pub url: String,
    pub password: Option<PasswordSource>,
    pub strategy: DbStrategy,
    /// The environment variable through which Cutover tells a release where its
    /// database is (the shared one, its slot's clone, the scratch copy of the
    /// compatibility proof). Default `DATABASE_URL`.
    pub url_env: String,
    pub migrations: MigrationSource,
    /// How long one statement may wait for a lock before it gives up (and is retried).
    /// Default 5s.
    pub lock_timeout: Duration,
    /// Attempts after the first when a statement gave up waiting for a lock. Default 3.
    pub retries: u32,
    /// Where backups go. Default `<state_dir>/backups/<service>`.
    pub backup_dir: Option<PathBuf>,
    /// Backups kept (older ones are deleted after a new one). Default 10.
    pub keep_backups: u32,
    /// Run the live release against a migrated scratch copy before migrating (shared
    /// strategy). Default true.
    pub prove: bool,
    /// Run the down-migrations of a deployment's migrations when traffic goes back to
    /// the previous release. Default `Never`: database rollback is a decision.
    pub down_on_rollback: DownOnRollback,
    /// Directory of `pg_dump`/`pg_restore`; default: found on `PATH`.
    pub pg_bin: Option<PathBuf>,
}

impl DatabaseConfig {
    pub const DEFAULT_URL_ENV: &'static str = "DATABASE_URL";
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_KEEP_BACKUPS: u32 = 10;
}

/// When traffic going back to the previous release also takes the database back to
/// the version it had before the deployment (its down-migrations, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownOnRollback {
    /// Never on its own (`cutover db down` is the decision). The default.
    #[default]
    Never,
    /// When a person rolls back (`cutover rollback`, during the watch or after), never
    /// for a watch-window trigger.
    Manual,
    /// Also when a watch-window trigger (error rate, latency, health, a failed
    /// `post_switch` hook, an exited release) sends traffic back.
    Always,
}

impl DownOnRollback {
    pub fn as_str(self) -> &'static str {
        match self {
            DownOnRollback::Never => "never",
            DownOnRollback::Manual => "manual",
            DownOnRollback::Always => "always",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// Read from this environment variable of the daemon.
    Env(String),
    /// Read from this file (trailing newline removed).
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbStrategy {
    /// One database for both slots: migrations must keep the live release working.
    #[default]
    Shared,
    /// Each slot its own database; a deployment clones the live one for the new slot.
    Separate,
}

impl DbStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            DbStrategy::Shared => "shared",
            DbStrategy::Separate => "separate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationSource {
    /// `NNN_name.up.sql` (and optional `NNN_name.down.sql`) files, applied by Cutover's
    /// runner and tracked in `cutover_schema_migrations`.
    Files(PathBuf),
    /// The team's own tool: `migrate` applies every pending migration, `version`
    /// prints the current version on its last line. Both run in `dir`.
    Command {
        migrate: Vec<String>,
        version: Vec<String>,
        dir: PathBuf,
    },
}
