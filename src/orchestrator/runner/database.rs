//! The database phase (`Effect::RunDatabase`, answered with `Event::Database`): one
//! task that does, in order, and records each step like a check (phase `db:<step>`):
//!
//! 1. `db:backup` — `pg_dump -Fc` of the live database (skipped in `shared` mode when
//!    nothing is pending);
//! 2. `db:lint` — squawk's rules on the pending files (`shared` mode): a change that
//!    breaks or locks out the live release is refused, naming the rule;
//! 3. `db:rehearse` — the backup restored into a scratch database and the pending
//!    migrations applied there, recording per statement the lock, any rewrite and the
//!    time;
//! 4. `db:prove` — the live release started once more (outside both slots) against
//!    the migrated scratch copy, its health checks and smoke tests run there: the proof
//!    that the release users are on keeps working after the real migration;
//! 5. `db:migrate` — the migrations applied for real (`shared`), or, in `separate`
//!    mode, the backup restored into the new slot's own database and migrated there.
//!
//! Steps 1–4 never write to the live database; a failure in them stops the deployment
//! before it is touched. The task records its results itself (as they happen, so the
//! event feed shows progress) and answers with the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::database_gate::{contract_gate, LIVE};
use super::{Input, Runner};
use crate::checks::{self, CheckResult, ProbeTarget};
use crate::config::{DbStrategy, DownOnRollback, MigrationSource, ServiceConfig};
use crate::database::{backup, command, files, lint, migrate, Database, DatabaseError};
use crate::domain::{now_ms, Slot};
use crate::orchestrator::machine::{Event, Machine, Phase};
use crate::runtime::{Runtime, RuntimeHealth, SlotSpec};
use crate::store::{CheckRecord, SlotState, Store};

/// What the task needs, taken from the runner.
struct Job {
    id: i64,
    service: Arc<ServiceConfig>,
    db: Database,
    store: Arc<Store>,
    runtime: Arc<dyn Runtime>,
    version: String,
    target: Slot,
    /// The live slot and its release, when there is one.
    live: Option<(Slot, String)>,
    /// The previous release kept warm (a standby) in the other slot, when there is
    /// one: until the new release replaces it, a failover may send traffic back to it.
    warm: Option<(Slot, String)>,
}

impl Runner {
    pub(super) fn spawn_database(&mut self, machine: &Machine, tx: &mpsc::Sender<Input>) {
        let plan = machine.plan();
        let Some(cfg) = self.service.database.clone() else {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(Input::Event(Event::Database { failure: None }))
                    .await;
            });
            return;
        };
        let live = plan.from.and_then(|slot| {
            let version = self.slots[slot.index()].version.clone()?;
            Some((slot, version))
        });
        let warm = Some(plan.target)
            .filter(|t| Some(*t) != plan.from)
            .and_then(|slot| {
                let rec = &self.slots[slot.index()];
                let version = rec.version.clone()?;
                (rec.state == SlotState::Standby).then_some((slot, version))
            });
        let job = Job {
            id: self.id,
            db: Database::new(&self.service.name, cfg, &self.state_dir),
            service: self.service.clone(),
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            version: self.version.clone(),
            target: plan.target,
            live,
            warm,
        };
        let tx = tx.clone();
        self.database_task = Some(tokio::spawn(async move {
            let failure = job.run().await.err();
            if let Some(why) = &failure {
                tracing::warn!(service = %job.service.name, id = job.id, %why, "database phase failed");
            }
            let _ = tx.send(Input::Event(Event::Database { failure })).await;
        }));
    }

    /// Stops the database task when the machine has left its phase (an abort).
    pub(super) fn cancel_stale_database(&mut self, machine: &Machine) {
        if !matches!(machine.phase(), Phase::Database | Phase::DatabaseDown) {
            if let Some(task) = self.database_task.take() {
                task.abort();
            }
        }
    }
}

/// What is pending: the files (built-in runner) or, for a command, nothing Cutover can
/// list (`None`).
struct Pending {
    files: Option<Vec<files::Migration>>,
    version: String,
}

impl Job {
    fn record(&self, phase: &str, r: CheckResult) {
        let rec = CheckRecord {
            phase: phase.to_string(),
            name: r.name,
            ok: r.ok,
            detail: r.detail,
            duration_ms: r.duration.as_millis() as u64,
            at: now_ms(),
        };
        if let Err(e) = self.store.record_check(self.id, &rec) {
            tracing::error!(error = %e, "cannot record a database step");
        }
    }

    fn ok(&self, phase: &str, name: &str, detail: String, took: Duration) {
        self.record(
            phase,
            CheckResult {
                name: name.into(),
                ok: true,
                detail,
                duration: took,
            },
        );
    }

    /// Records a failed step and returns the reason the deployment stops.
    fn failed(&self, phase: &str, name: &str, why: String, took: Duration) -> String {
        self.record(
            phase,
            CheckResult {
                name: name.into(),
                ok: false,
                detail: why.clone(),
                duration: took,
            },
        );
        format!("{}: {why}", phase.trim_start_matches("db:"))
    }

    async fn pending(&self, dbname: &str) -> Result<Pending, DatabaseError> {
        match &self.db.cfg.migrations {
            MigrationSource::Files(dir) => {
                let all = files::load(dir)?;
                let client = self.db.connect(Some(dbname)).await?;
                let applied = migrate::applied(&client).await?;
                let version = migrate::current_version(&applied);
                let pending = migrate::pending(&all, &applied)
                    .into_iter()
                    .cloned()
                    .collect();
                Ok(Pending {
                    files: Some(pending),
                    version,
                })
            }
            MigrationSource::Command { .. } => Ok(Pending {
                files: None,
                version: command::version(&self.db, dbname).await?,
            }),
        }
    }

    async fn run(&self) -> Result<(), String> {
        let separate = self.db.cfg.strategy == DbStrategy::Separate;
        // The database the live release uses: the clone source in `separate` mode.
        let live_db = match (separate, &self.live) {
            (true, Some((slot, _)))
                if self
                    .db
                    .exists(&self.db.slot_db(*slot))
                    .await
                    .unwrap_or(false) =>
            {
                self.db.slot_db(*slot)
            }
            _ => self.db.base_name(),
        };
        let t = Instant::now();
        let pending = self.pending(&live_db).await.map_err(|e| {
            self.failed(
                "db:migrate",
                "pending migrations",
                e.to_string(),
                t.elapsed(),
            )
        })?;
        let nothing = pending.files.as_ref().is_some_and(|f| f.is_empty());
        if nothing && !separate {
            self.ok(
                "db:migrate",
                "migrations",
                format!("nothing pending (version {})", pending.version),
                t.elapsed(),
            );
            return Ok(());
        }

        // What a rollback with `down_on_rollback` takes the database back to.
        self.ok(
            VERSION_PHASE,
            VERSION_BEFORE,
            pending.version.clone(),
            Duration::ZERO,
        );
        if let (Some(files), false) = (
            &pending.files,
            self.db.cfg.down_on_rollback == DownOnRollback::Never,
        ) {
            let missing: Vec<String> = files
                .iter()
                .filter(|m| m.down.is_none())
                .map(|m| format!("{}.down.sql", m.label()))
                .collect();
            if !missing.is_empty() {
                let why = format!(
                    "`down_on_rollback = \"{}\"` needs a down file for every migration, and {} missing (add it, or roll back by hand with `cutover db restore`)",
                    self.db.cfg.down_on_rollback.as_str(),
                    match missing.len() {
                        1 => format!("{} is", missing[0]),
                        _ => format!("{} are", missing.join(", ")),
                    }
                );
                return Err(self.failed("db:lint", "down files", why, Duration::ZERO));
            }
        }

        // 1. Backup.
        let t = Instant::now();
        let release = self.live.as_ref().map(|(_, v)| v.as_str()).unwrap_or("-");
        let meta = backup::backup(
            &self.db,
            Some(&live_db),
            release,
            &pending.version,
            &format!("deployment {} of {}", self.id, self.version),
        )
        .await
        .map_err(|e| self.failed("db:backup", "pg_dump", e.to_string(), t.elapsed()))?;
        self.ok(
            "db:backup",
            "pg_dump",
            format!(
                "{} ({} bytes, database {}, version {}, {}ms)",
                self.db.backup_dir.join(&meta.file).display(),
                meta.size_bytes,
                meta.database,
                meta.migration_version,
                meta.duration_ms
            ),
            t.elapsed(),
        );
        let dump = self.db.backup_dir.join(&meta.file);

        if separate {
            return self.separate(&dump, &pending).await;
        }

        // 2. Lint.
        let contract = pending
            .files
            .as_ref()
            .is_some_and(|f| f.iter().any(|m| m.contract));
        let gate = contract_gate(
            self.live.as_ref(),
            self.warm.as_ref(),
            self.db.cfg.prove,
            contract,
        );
        if let Some(files) = &pending.files {
            let t = Instant::now();
            let report = lint::lint(&files.iter().collect::<Vec<_>>(), gate.is_ok());
            for f in &report.findings {
                self.record(
                    "db:lint",
                    CheckResult {
                        name: f.rule.clone(),
                        ok: f.allowed,
                        detail: f.describe(),
                        duration: Duration::ZERO,
                    },
                );
            }
            match report.reason() {
                Some(why) => {
                    let why = match &gate {
                        Err(blocked) if contract => format!("{why}; {blocked}"),
                        _ => why,
                    };
                    return Err(self.failed("db:lint", "lint", why, t.elapsed()));
                }
                None => self.ok(
                    "db:lint",
                    "lint",
                    format!("{} migration(s) keep the live release working", files.len()),
                    t.elapsed(),
                ),
            }
        }

        // 3. Rehearse on a scratch copy.
        let scratch = self.db.scratch_db();
        let rehearsal = self.rehearse(&dump, &scratch, &pending).await;
        // 4. Prove the live release (and, for a contract step, the one kept warm)
        // works on it.
        let mut proof = Ok(());
        if rehearsal.is_ok() && self.db.cfg.prove {
            for (slot, version, role) in gate.unwrap_or_default() {
                proof = self.prove(slot, &version, role, &scratch).await;
                if proof.is_err() {
                    break;
                }
            }
        }
        let _ = self.db.drop_db(&scratch).await;
        rehearsal?;
        proof?;

        // 5. The real thing.
        self.migrate(None, &pending).await
    }

    async fn rehearse(
        &self,
        dump: &std::path::Path,
        scratch: &str,
        pending: &Pending,
    ) -> Result<(), String> {
        let t = Instant::now();
        backup::restore_into(&self.db, dump, scratch)
            .await
            .map_err(|e| self.failed("db:rehearse", "scratch copy", e.to_string(), t.elapsed()))?;
        self.ok(
            "db:rehearse",
            "scratch copy",
            format!("backup restored into {scratch}"),
            t.elapsed(),
        );
        self.apply("db:rehearse", Some(scratch), pending).await
    }

    /// Applies the pending migrations to `dbname` (`None`: the live database),
    /// recording each under `phase`.
    async fn apply(
        &self,
        phase: &str,
        dbname: Option<&str>,
        pending: &Pending,
    ) -> Result<(), String> {
        let target = dbname
            .map(str::to_string)
            .unwrap_or_else(|| self.db.base_name());
        match &pending.files {
            Some(files) => {
                let opts = migrate::Options::of(&self.db);
                for m in files {
                    let t = Instant::now();
                    match migrate::up(&self.db, Some(&target), m, opts).await {
                        Ok(run) => self.ok(phase, &m.label(), run.detail(), t.elapsed()),
                        Err(e) => {
                            return Err(self.failed(phase, &m.label(), e.to_string(), t.elapsed()))
                        }
                    }
                }
                Ok(())
            }
            None => {
                let t = Instant::now();
                let run = command::migrate(&self.db, &target).await.map_err(|e| {
                    self.failed(phase, "migrate command", e.to_string(), t.elapsed())
                })?;
                let after = command::version(&self.db, &target)
                    .await
                    .unwrap_or_default();
                self.ok(
                    phase,
                    "migrate command",
                    format!("version {} → {after}\n{}", pending.version, run.output),
                    t.elapsed(),
                );
                Ok(())
            }
        }
    }

    async fn migrate(&self, dbname: Option<&str>, pending: &Pending) -> Result<(), String> {
        self.apply("db:migrate", dbname, pending).await
    }

    /// `separate`: the new slot gets a fresh clone of the live database, migrated.
    async fn separate(&self, dump: &std::path::Path, pending: &Pending) -> Result<(), String> {
        let t = Instant::now();
        let own = self.db.slot_db(self.target);
        backup::restore_into(&self.db, dump, &own)
            .await
            .map_err(|e| self.failed("db:migrate", "clone", e.to_string(), t.elapsed()))?;
        self.ok(
            "db:migrate",
            "clone",
            format!("{} cloned from the backup for {}", own, self.target),
            t.elapsed(),
        );
        self.migrate(Some(&own), pending).await
    }

    /// Starts the live release against `scratch` and runs its health checks and smoke
    /// tests there.
    async fn prove(
        &self,
        slot: Slot,
        version: &str,
        role: &str,
        scratch: &str,
    ) -> Result<(), String> {
        let t = Instant::now();
        let spec = SlotSpec {
            service: self.service.name.clone(),
            slot,
            version: version.to_string(),
            deployment: Some(self.id),
            env: vec![(self.db.cfg.url_env.clone(), self.db.url_for(scratch))],
        };
        let name = match role {
            LIVE => format!("{version} on the migrated copy"),
            _ => format!("{version} ({role}) on the migrated copy"),
        };
        let instance = self
            .runtime
            .start_extra(&spec)
            .await
            .map_err(|e| self.failed("db:prove", &name, e.to_string(), t.elapsed()))?;
        let target = ProbeTarget {
            endpoint: instance.endpoint.clone(),
            service: self.service.name.clone(),
            slot,
            version: version.to_string(),
            tls: self.service.upstream_tls.clone(),
        };
        // Healthy first (as a new slot would have to be), within the health deadline.
        let deadline = Instant::now() + self.service.health.deadline;
        let mut streak = 0;
        loop {
            let round = checks::health_round(&self.service.health, &target).await;
            if round.iter().all(|r| r.ok) {
                streak += 1;
                if streak >= self.service.health.healthy_threshold {
                    break;
                }
            } else {
                streak = 0;
                if let Some(RuntimeHealth::Unhealthy(why)) =
                    self.runtime.extra_health(&self.service.name).await
                {
                    let why = format!(
                        "the {role} {version} cannot run against the migrated schema: {why}"
                    );
                    return Err(self.failed("db:prove", &name, why, t.elapsed()));
                }
                if Instant::now() >= deadline {
                    let why = round
                        .iter()
                        .filter(|r| !r.ok)
                        .map(|r| format!("{}: {}", r.name, r.detail))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let why = format!(
                        "the {role} {version} is not healthy against the migrated schema: {why}"
                    );
                    return Err(self.failed("db:prove", &name, why, t.elapsed()));
                }
            }
            tokio::time::sleep(self.service.health.interval).await;
        }
        if self.service.smoke.steps.is_empty() {
            self.ok(
                "db:prove",
                &name,
                format!("the {role} {version} is healthy against the migrated schema (no smoke tests configured)"),
                t.elapsed(),
            );
            return Ok(());
        }
        let report = checks::smoke(&self.service.smoke, &target).await;
        for r in &report.results {
            self.record("db:prove", r.clone());
        }
        drop(instance);
        match report.passed {
            true => {
                self.ok(
                    "db:prove",
                    &name,
                    format!(
                        "the {role} {version} passed its smoke tests against the migrated schema"
                    ),
                    t.elapsed(),
                );
                Ok(())
            }
            false => {
                let why = format!(
                    "the {role} {version} fails against the migrated schema: {}",
                    report
                        .failure
                        .unwrap_or_else(|| "smoke tests failed".into())
                );
                Err(self.failed("db:prove", &name, why, t.elapsed()))
            }
        }
    }
}

/// The record (phase `db:version`, name `before`) holding the migration version before
/// a deployment: what its rollback takes the database back to with `down_on_rollback`.
pub(super) const VERSION_PHASE: &str = "db:version";
pub(super) const VERSION_BEFORE: &str = "before";
