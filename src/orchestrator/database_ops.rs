//! A service's database outside a deployment (`cutover db ...` through the API):
//! status, lint, backup, backups, restore, down.
//!
//! Why in the daemon: it is the one that knows whether a slot still runs (and writes),
//! whether a deployment is in progress, and it holds the service's guard, so a restore
//! or a down-migration never races a deployment's own database phase. The rules:
//! - `restore` and `down` are refused while a slot of the service still runs (its
//!   writes since the backup, or to what the down file drops, would be lost) unless
//!   `force`, and while a deployment is in progress (always);
//! - a `dry_run` says what would happen (and whether it would be refused) and changes
//!   nothing: the CLI shows it before asking for confirmation;
//! - every restore, down and manual backup is written to the service's event log.

use serde::Serialize;

use super::{ControlError, Controller};
use crate::config::MigrationSource;
use crate::database::backup::{self, BackupMeta};
use crate::database::{command, files, lint, migrate, Database, DatabaseError};
use crate::domain::{now_ms, Slot};
use crate::runtime::SlotStatus;

/// `cutover db status`.
#[derive(Debug, Clone, Serialize)]
pub struct DbStatus {
    pub service: String,
    pub database: String,
    pub strategy: &'static str,
    /// The highest applied version (or what `version_command` prints).
    pub version: String,
    pub applied: Vec<migrate::Applied>,
    /// Pending files (`NNN_name`); empty with a `migrate_command`, which cannot list them.
    pub pending: Vec<String>,
    /// The gate's lint of the pending files (`None` with a `migrate_command`).
    pub lint: Option<LintView>,
}

/// The lint and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct LintView {
    pub passed: bool,
    /// Why the gate refuses (the first refused rule), when it does.
    pub reason: Option<String>,
    pub files: usize,
    pub findings: Vec<lint::Finding>,
}

impl From<lint::Report> for LintView {
    fn from(r: lint::Report) -> Self {
        LintView {
            passed: r.passed(),
            reason: r.reason(),
            files: r.files,
            findings: r.findings,
        }
    }
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreView {
    pub backup: BackupMeta,
    pub database: String,
    pub dry_run: bool,
}

/// What a down did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct DownView {
    pub to: i64,
    /// The migrations undone (or to undo), newest first.
    pub migrations: Vec<String>,
    /// What each down file did (empty on a dry run).
    pub runs: Vec<migrate::MigrationRun>,
    pub dry_run: bool,
}

impl Controller {
    fn database_of(&self, service: &str) -> Result<Database, ControlError> {
        let cfg = self.service_cfg(service)?.0;
        let db = cfg
            .database
            .clone()
            .ok_or_else(|| ControlError::NoDatabase(service.into()))?;
        Ok(Database::new(service, db, &self.config().daemon.state_dir))
    }

    pub async fn db_status(&self, service: &str) -> Result<DbStatus, ControlError> {
        let db = self.database_of(service)?;
        let client = db.connect(None).await?;
        let applied = migrate::applied(&client).await?;
        let (version, pending, lint) = match &db.cfg.migrations {
            MigrationSource::Files(dir) => {
                let all = files::load(dir)?;
                let pending = migrate::pending(&all, &applied);
                let report = lint::lint(&pending, db.cfg.prove);
                (
                    migrate::current_version(&applied),
                    pending.iter().map(|m| m.label()).collect(),
                    Some(report.into()),
                )
            }
            MigrationSource::Command { .. } => (
                command::version(&db, &db.base_name()).await?,
                Vec::new(),
                None,
            ),
        };
        Ok(DbStatus {
            service: service.into(),
            database: db.base_name(),
            strategy: db.cfg.strategy.as_str(),
            version,
            applied,
            pending,
            lint,
        })
    }

    /// The gate's lint of the pending files, or (`all`) of every file without asking
    /// the database.
    pub async fn db_lint(&self, service: &str, all: bool) -> Result<LintView, ControlError> {
        let db = self.database_of(service)?;
        let MigrationSource::Files(dir) = &db.cfg.migrations else {
            return Err(refused(format!(
                "`{service}` migrates with its own command; there are no files to lint"
            )));
        };
        let every = files::load(dir)?;
        let chosen: Vec<&files::Migration> = if all {
            every.iter().collect()
        } else {
            let client = db.connect(None).await?;
            migrate::pending(&every, &migrate::applied(&client).await?)
        };
        Ok(lint::lint(&chosen, db.cfg.prove).into())
    }

    pub async fn db_backups(&self, service: &str) -> Result<Vec<BackupMeta>, ControlError> {
        let db = self.database_of(service)?;
        Ok(backup::list(&db.backup_dir))
    }

    pub async fn db_backup(&self, service: &str, by: &str) -> Result<BackupMeta, ControlError> {
        let db = self.database_of(service)?;
        let guard = self.guard(service).unwrap_or_default();
        let _held = guard.lock().await;
        self.no_deployment(service)?;
        let client = db.connect(None).await?;
        let version = migrate::current_version(&migrate::applied(&client).await?);
        drop(client);
        let rec = self.store().service(service)?;
        let live = rec
            .live
            .and_then(|s| rec.slots[s.index()].version.clone())
            .unwrap_or_else(|| "-".into());
        let meta = backup::backup(&db, None, &live, &version, &format!("manual ({by})")).await?;
        self.log(
            service,
            "db_backup",
            &format!("backup {} taken by {by} (version {version})", meta.file),
        );
        Ok(meta)
    }

    pub async fn db_restore(
        &self,
        service: &str,
        which: &str,
        force: bool,
        dry_run: bool,
        by: &str,
    ) -> Result<RestoreView, ControlError> {
        let db = self.database_of(service)?;
        let meta = backup::find(&db.backup_dir, which)?;
        let guard = self.guard(service).unwrap_or_default();
        let _held = guard.lock().await;
        self.no_deployment(service)?;
        self.nothing_writes(service, force).await?;
        let view = RestoreView {
            database: db.base_name(),
            backup: meta,
            dry_run,
        };
        if dry_run {
            return Ok(view);
        }
        let file = db.backup_dir.join(&view.backup.file);
        backup::restore_into(&db, &file, &db.base_name()).await?;
        self.log(
            service,
            "db_restore",
            &format!(
                "backup {} (version {}) restored into {} by {by}{}",
                view.backup.file,
                view.backup.migration_version,
                view.database,
                if force {
                    " (forced while a slot ran)"
                } else {
                    ""
                }
            ),
        );
        Ok(view)
    }

    pub async fn db_down(
        &self,
        service: &str,
        to: i64,
        force: bool,
        dry_run: bool,
        by: &str,
    ) -> Result<DownView, ControlError> {
        let db = self.database_of(service)?;
        let MigrationSource::Files(dir) = &db.cfg.migrations else {
            return Err(refused(format!(
                "`{service}` migrates with its own command, which has no down command here; run your tool's own"
            )));
        };
        let all = files::load(dir)?;
        let guard = self.guard(service).unwrap_or_default();
        let _held = guard.lock().await;
        self.no_deployment(service)?;
        let client = db.connect(None).await?;
        let applied = migrate::applied(&client).await?;
        drop(client);
        let mut undo = Vec::new();
        for a in applied.iter().rev().filter(|a| a.version > to) {
            match all.iter().find(|m| m.version == a.version) {
                Some(m) if m.down.is_some() => undo.push(m),
                Some(m) => {
                    return Err(refused(format!(
                        "{} has no down file ({}.down.sql); nothing was undone",
                        m.label(),
                        m.label()
                    )))
                }
                None => {
                    return Err(refused(format!(
                        "applied version {} ({}) has no file in {}; nothing was undone",
                        a.version,
                        a.name,
                        dir.display()
                    )))
                }
            }
        }
        let mut view = DownView {
            to,
            migrations: undo.iter().map(|m| m.label()).collect(),
            runs: Vec::new(),
            dry_run,
        };
        if undo.is_empty() {
            return Ok(view);
        }
        self.nothing_writes(service, force).await?;
        if dry_run {
            return Ok(view);
        }
        for m in undo {
            let run = migrate::down(&db, None, m, migrate::Options::of(&db)).await;
            match run {
                Ok(run) => view.runs.push(run),
                Err(e) => {
                    self.log(
                        service,
                        "db_down",
                        &format!("down-migrations by {by} stopped: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        self.log(
            service,
            "db_down",
            &format!(
                "down-migrations {} run by {by}; no migration above version {to} is left",
                view.migrations.join(", ")
            ),
        );
        Ok(view)
    }

    fn no_deployment(&self, service: &str) -> Result<(), ControlError> {
        match self.store().active_deployment(service)? {
            Some(d) => Err(ControlError::InProgress {
                service: service.into(),
                id: d.id,
            }),
            None => Ok(()),
        }
    }

    /// Refuses while a slot of the service runs, unless `force`.
    async fn nothing_writes(&self, service: &str, force: bool) -> Result<(), ControlError> {
        if force {
            return Ok(());
        }
        let runtime = self.service_cfg(service)?.1;
        let rec = self.store().service(service)?;
        let mut running = Vec::new();
        for slot in Slot::ALL {
            if let SlotStatus::Running { .. } = runtime.status(service, slot).await {
                let version = rec.slots[slot.index()].version.clone().unwrap_or_default();
                running.push(format!("{slot} ({version})"));
            }
        }
        match running.is_empty() {
            true => Ok(()),
            false => Err(ControlError::StillWrites {
                service: service.into(),
                slots: running.join(", "),
            }),
        }
    }

    fn log(&self, service: &str, kind: &str, message: &str) {
        if let Err(e) = self
            .store()
            .append_event(service, None, kind, message, None, now_ms())
        {
            tracing::error!(error = %e, "cannot record a database operation");
        }
    }
}

fn refused(why: String) -> ControlError {
    ControlError::Database(DatabaseError::Refused(why))
}

impl From<DatabaseError> for ControlError {
    fn from(e: DatabaseError) -> Self {
        ControlError::Database(e)
    }
}
