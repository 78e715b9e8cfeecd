//! The down-migrations after a rollback (`Effect::RunDatabaseDown`, answered with
//! `Event::Database`), for a service with `down_on_rollback`.
//!
//! What is undone: the migrations applied since the version recorded before the
//! deployment being rolled back (its `db:version` / `before` record): the
//! deployment itself when a deploy switches back, the deploy that brought the release
//! being left when a rollback deployment runs. Each down file runs newest first in its
//! own transaction with its version row (`database::migrate::down`), recorded as a
//! check (phase `db:down`) with its duration and locks. The deploy's gate already
//! refused migrations without a down file; one found here anyway (a file removed since)
//! stops the undo before anything runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::database::{VERSION_BEFORE, VERSION_PHASE};
use super::{Input, Runner};
use crate::config::MigrationSource;
use crate::database::{files, migrate, Database};
use crate::domain::now_ms;
use crate::orchestrator::machine::{Event, Machine};
use crate::store::{CheckRecord, DeploymentKind, DeploymentOutcome, Store};

impl Runner {
    pub(super) fn spawn_database_down(&mut self, machine: &Machine, tx: &mpsc::Sender<Input>) {
        let task = Down {
            id: self.id,
            kind: machine.plan().kind,
            service: self.service.name.clone(),
            db: self
                .service
                .database
                .clone()
                .map(|cfg| Database::new(&self.service.name, cfg, &self.state_dir)),
            store: self.store.clone(),
        };
        let tx = tx.clone();
        self.database_task = Some(tokio::spawn(async move {
            let failure = task.run().await.err();
            if let Some(why) = &failure {
                tracing::warn!(service = %task.service, id = task.id, %why, "down-migrations failed");
            }
            let _ = tx.send(Input::Event(Event::Database { failure })).await;
        }));
    }
}

struct Down {
    /// The deployment running the undo (its records get the `db:down` steps).
    id: i64,
    kind: DeploymentKind,
    service: String,
    db: Option<Database>,
    store: Arc<Store>,
}

impl Down {
    fn record(&self, name: &str, ok: bool, detail: String, took: Duration) {
        let rec = CheckRecord {
            phase: "db:down".into(),
            name: name.into(),
            ok,
            detail,
            duration_ms: took.as_millis() as u64,
            at: now_ms(),
        };
        if let Err(e) = self.store.record_check(self.id, &rec) {
            tracing::error!(error = %e, "cannot record a down-migration");
        }
    }

    fn failed(&self, name: &str, why: String, took: Duration) -> String {
        self.record(name, false, why.clone(), took);
        why
    }

    /// The deployment whose migrations are undone.
    fn undone(&self) -> Result<i64, String> {
        if self.kind == DeploymentKind::Deploy {
            return Ok(self.id);
        }
        let me = self.store.deployment(self.id).map_err(|e| e.to_string())?;
        let leaving = me.from_version.unwrap_or_default();
        let history = self
            .store
            .history(&self.service, 1000)
            .map_err(|e| e.to_string())?;
        history
            .iter()
            .find(|d| {
                d.kind == DeploymentKind::Deploy
                    && d.outcome == Some(DeploymentOutcome::Succeeded)
                    && d.version == leaving
            })
            .map(|d| d.id)
            .ok_or_else(|| format!("no successful deployment of {leaving} found to undo"))
    }

    async fn run(&self) -> Result<(), String> {
        let t = Instant::now();
        let Some(db) = &self.db else {
            return Ok(());
        };
        let undone = self
            .undone()
            .map_err(|e| self.failed("down-migrations", e, t.elapsed()))?;
        let record = self
            .store
            .deployment(undone)
            .map_err(|e| self.failed("down-migrations", e.to_string(), t.elapsed()))?;
        let before = record
            .checks
            .iter()
            .find(|c| c.phase == VERSION_PHASE && c.name == VERSION_BEFORE)
            .and_then(|c| c.detail.trim().parse::<i64>().ok());
        let Some(before) = before else {
            self.record(
                "down-migrations",
                true,
                format!("nothing to undo: deployment {undone} applied no migration"),
                t.elapsed(),
            );
            return Ok(());
        };
        let MigrationSource::Files(dir) = &db.cfg.migrations else {
            return Err(self.failed(
                "down-migrations",
                "the migrations come from a command, which has no down command".into(),
                t.elapsed(),
            ));
        };
        let all = files::load(dir)
            .map_err(|e| self.failed("down-migrations", e.to_string(), t.elapsed()))?;
        let client = db
            .connect(None)
            .await
            .map_err(|e| self.failed("down-migrations", e.to_string(), t.elapsed()))?;
        let applied = migrate::applied(&client)
            .await
            .map_err(|e| self.failed("down-migrations", e.to_string(), t.elapsed()))?;
        drop(client);
        let above: Vec<i64> = applied
            .iter()
            .map(|a| a.version)
            .filter(|v| *v > before)
            .collect();
        let mut undo = Vec::new();
        for v in above.iter().rev() {
            match all.iter().find(|m| m.version == *v) {
                Some(m) if m.down.is_some() => undo.push(m),
                Some(m) => {
                    let why = format!("{} has no down file; nothing was undone", m.label());
                    return Err(self.failed("down-migrations", why, t.elapsed()));
                }
                None => {
                    let why = format!(
                        "applied version {v} has no file in {}; nothing was undone",
                        dir.display()
                    );
                    return Err(self.failed("down-migrations", why, t.elapsed()));
                }
            }
        }
        for m in undo {
            let t = Instant::now();
            match migrate::down(db, None, m, migrate::Options::of(db)).await {
                Ok(run) => self.record(&m.label(), true, run.detail(), t.elapsed()),
                Err(e) => return Err(self.failed(&m.label(), e.to_string(), t.elapsed())),
            }
        }
        self.record(
            "down-migrations",
            true,
            format!(
                "database back to version {before} (the version before deployment {undone}); {} migration(s) undone",
                above.len()
            ),
            t.elapsed(),
        );
        Ok(())
    }
}
