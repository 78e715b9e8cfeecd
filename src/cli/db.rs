//! `cutover db ...`: the service's database outside a deployment: status (applied and
//! pending migrations, what the gate would say), lint (for CI), backup, backups,
//! restore, down.
//!
//! These run here, against PostgreSQL directly, with the config's connection; the
//! daemon is only asked whether a slot still runs, because undoing a migration or
//! restoring a backup under a release that still writes loses its writes: `restore`
//! and `down` are refused while a slot runs unless `--force`, and ask for
//! confirmation unless `--yes` (for a production service: the service's name typed on
//! a terminal, refused without one). Every subcommand answers `--json` too.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::output::{fail, json_out, mode, say};
use crate::api::ServiceStatus;
use crate::config::{Config, MigrationSource};
use crate::database::{backup, files, lint, migrate, Database};

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Applied and pending migrations, and what the gate would say about the pending.
    Status { service: String },
    /// Lint the pending migrations (or, with --all, every file) like the gate; exit 1
    /// when it would refuse. Reads only the files with --all (no database needed).
    Lint {
        service: String,
        #[arg(long)]
        all: bool,
    },
    /// Take a backup now (pg_dump -Fc).
    Backup { service: String },
    /// List the backups, newest first.
    Backups { service: String },
    /// Restore a backup (`latest` or a file name) into the service's database.
    Restore {
        service: String,
        #[arg(default_value = "latest")]
        backup: String,
        /// Even while a slot still runs (its writes since the backup are lost).
        #[arg(long)]
        force: bool,
    },
    /// Run down-migrations, newest first, until VERSION is the latest applied.
    Down {
        service: String,
        #[arg(long)]
        to: i64,
        #[arg(long)]
        force: bool,
    },
}

fn service_of(cmd: &DbCommand) -> &str {
    match cmd {
        DbCommand::Status { service }
        | DbCommand::Lint { service, .. }
        | DbCommand::Backup { service }
        | DbCommand::Backups { service }
        | DbCommand::Restore { service, .. }
        | DbCommand::Down { service, .. } => service,
    }
}

/// Runs one `db` command; `yes` skips the confirmations, `actor` is recorded with a
/// manual backup.
pub async fn run(cfg: &Config, cmd: DbCommand, yes: bool, actor: &str) -> anyhow::Result<ExitCode> {
    let name = service_of(&cmd).to_string();
    let Some(svc) = cfg.services.get(&name) else {
        return Ok(fail(
            2,
            "unknown_service",
            format!("no service `{name}` in the config"),
        ));
    };
    let Some(dbcfg) = svc.database.clone() else {
        return Ok(fail(
            2,
            "no_database",
            format!("service `{name}` has no [services.{name}.database]"),
        ));
    };
    let env = svc.environment.clone();
    let db = Database::new(&name, dbcfg, &cfg.daemon.state_dir);
    let dir = match &db.cfg.migrations {
        MigrationSource::Files(dir) => Some(dir.clone()),
        MigrationSource::Command { .. } => None,
    };
    match cmd {
        DbCommand::Status { .. } => {
            let client = db.connect(None).await?;
            let applied = migrate::applied(&client).await?;
            let Some(dir) = dir else {
                let v = crate::database::command::version(&db, &db.base_name()).await?;
                if mode().json {
                    json_out(&json!({
                        "database": db.base_name(), "strategy": db.cfg.strategy.as_str(),
                        "applied": applied, "version": v,
                    }));
                    return Ok(ExitCode::SUCCESS);
                }
                say!(
                    "database {} (strategy {})",
                    db.base_name(),
                    db.cfg.strategy.as_str()
                );
                say!("  version (version_command): {v}");
                return Ok(ExitCode::SUCCESS);
            };
            let all = files::load(&dir)?;
            let pending = migrate::pending(&all, &applied);
            let report = lint::lint(&pending, db.cfg.prove);
            if mode().json {
                json_out(&json!({
                    "database": db.base_name(), "strategy": db.cfg.strategy.as_str(),
                    "applied": applied,
                    "pending": pending.iter().map(|m| m.label()).collect::<Vec<_>>(),
                    "gate": gate_json(&report),
                }));
                return Ok(ExitCode::SUCCESS);
            }
            say!(
                "database {} (strategy {})",
                db.base_name(),
                db.cfg.strategy.as_str()
            );
            for a in &applied {
                say!(
                    "  applied  {:03}_{}  {}  {}ms",
                    a.version,
                    a.name,
                    a.applied_at,
                    a.duration_ms
                );
            }
            for m in &pending {
                say!("  pending  {}", m.label());
            }
            print_lint(&report);
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Lint { all, .. } => {
            let Some(dir) = dir else {
                return Ok(fail(
                    2,
                    "usage",
                    format!("`{name}` migrates with its own command; there are no files to lint"),
                ));
            };
            let every = files::load(&dir)?;
            let chosen: Vec<&files::Migration> = if all {
                every.iter().collect()
            } else {
                let client = db.connect(None).await?;
                let applied = migrate::applied(&client).await?;
                migrate::pending(&every, &applied)
            };
            let report = lint::lint(&chosen, db.cfg.prove);
            if mode().json {
                json_out(&gate_json(&report));
            } else {
                print_lint(&report);
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        DbCommand::Backup { .. } => {
            let client = db.connect(None).await?;
            let version = migrate::current_version(&migrate::applied(&client).await?);
            let live = live_version(cfg, &name).await;
            let meta = backup::backup(
                &db,
                None,
                live.as_deref().unwrap_or("-"),
                &version,
                &format!("manual ({actor})"),
            )
            .await?;
            if mode().json {
                json_out(&json!({
                    "path": db.backup_dir.join(&meta.file),
                    "backup": meta,
                }));
                return Ok(ExitCode::SUCCESS);
            }
            say!(
                "{} ({} bytes, version {}, {}ms)",
                db.backup_dir.join(&meta.file).display(),
                meta.size_bytes,
                meta.migration_version,
                meta.duration_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Backups { .. } => {
            let list = backup::list(&db.backup_dir);
            if mode().json {
                json_out(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for m in list {
                say!(
                    "{}  {}  release {}  version {}  {} bytes  {}",
                    m.file,
                    m.created_at,
                    m.release,
                    m.migration_version,
                    m.size_bytes,
                    m.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Restore {
            backup: which,
            force,
            ..
        } => {
            let meta = backup::find(&db.backup_dir, &which)?;
            if let Some(code) = guard(cfg, &name, force).await {
                return Ok(code);
            }
            let what = format!(
                "restore {} (taken {}, version {}) into {}, replacing everything in it",
                meta.file,
                meta.created_at,
                meta.migration_version,
                db.base_name()
            );
            if let Err(code) = confirm_change(env.as_deref(), &name, &what, yes) {
                return Ok(code);
            }
            backup::restore_into(&db, &db.backup_dir.join(&meta.file), &db.base_name()).await?;
            if mode().json {
                json_out(&json!({ "restored": meta.file, "into": db.base_name() }));
            } else {
                say!("restored {} into {}", meta.file, db.base_name());
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Down { to, force, .. } => {
            let Some(dir) = dir else {
                return Ok(fail(
                    2,
                    "usage",
                    format!("`{name}` migrates with its own command; run its down command"),
                ));
            };
            let all = files::load(&dir)?;
            let client = db.connect(None).await?;
            let applied = migrate::applied(&client).await?;
            let undo: Vec<&files::Migration> = all
                .iter()
                .rev()
                .filter(|m| m.version > to && applied.iter().any(|a| a.version == m.version))
                .collect();
            if undo.is_empty() {
                if mode().json {
                    json_out(&json!({ "down": [] }));
                } else {
                    say!("nothing to undo: no applied migration above {to}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(code) = guard(cfg, &name, force).await {
                return Ok(code);
            }
            let labels: Vec<String> = undo.iter().map(|m| m.label()).collect();
            let what = format!("run the down-migrations of {}", labels.join(", "));
            if let Err(code) = confirm_change(env.as_deref(), &name, &what, yes) {
                return Ok(code);
            }
            let mut done = Vec::new();
            for m in undo {
                let run = migrate::down(&db, None, m, migrate::Options::of(&db)).await?;
                say!("down {}", run.detail());
                done.push(run.detail());
            }
            if mode().json {
                json_out(&json!({ "down": done }));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_lint(report: &lint::Report) {
    for f in &report.findings {
        say!("  {}", f.describe());
    }
    match report.reason() {
        None => say!("gate: pass ({} file(s))", report.files),
        Some(why) => say!("gate: REFUSE: {why}"),
    }
}

/// The gate's verdict as `--json` shows it.
fn gate_json(report: &lint::Report) -> serde_json::Value {
    json!({
        "passed": report.passed(),
        "reason": report.reason(),
        "files": report.files,
        "findings": report.findings.iter().map(|f| f.describe()).collect::<Vec<_>>(),
    })
}

/// A production service: its name typed on a terminal (or `--yes`); otherwise the
/// usual `[y/N]` unless `--yes`.
fn confirm_change(env: Option<&str>, service: &str, what: &str, yes: bool) -> Result<(), ExitCode> {
    if yes {
        return Ok(());
    }
    if env == Some("production") {
        return super::confirm::production(env, service, what, false);
    }
    if confirm(what) {
        Ok(())
    } else {
        Err(fail(
            1,
            "not_confirmed",
            "not confirmed; nothing was changed",
        ))
    }
}

async fn status(cfg: &Config, service: &str) -> Option<ServiceStatus> {
    crate::api::client::ApiClient::new(cfg.api.listen, crate::daemon::client_token(cfg))
        .get(&format!("/api/v1/services/{service}"))
        .await
        .ok()
}

async fn live_version(cfg: &Config, service: &str) -> Option<String> {
    status(cfg, service).await.and_then(|s| s.live_version)
}

/// Refuses (exit 1) while a slot of the service runs, unless `force`.
async fn guard(cfg: &Config, service: &str, force: bool) -> Option<ExitCode> {
    if force {
        return None;
    }
    match status(cfg, service).await {
        None => Some(fail(1, "daemon_unreachable", format!("cannot ask the daemon whether a slot of `{service}` still runs; use --force if none does"))),
        Some(s) if s.slots.iter().any(|v| v.running) => Some(fail(1, "slot_running", format!("a slot of `{service}` still runs and writes to the database; stop it first or use --force (its writes since then are lost)"))),
        Some(_) => None,
    }
}

fn confirm(what: &str) -> bool {
    eprint!("{what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}
