//! `cutover db ...`: the service's database outside a deployment: status (applied and
//! pending migrations, what the gate would say), lint (for CI), backup, backups,
//! restore, down.
//!
//! These run here, against PostgreSQL directly, with the config's connection; the
//! daemon is only asked whether a slot still runs, because undoing a migration or
//! restoring a backup under a release that still writes loses its writes: `restore`
//! and `down` are refused while a slot runs unless `--force`, and ask for
//! confirmation unless `--yes`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Subcommand;

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
        #[arg(long)]
        yes: bool,
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
        yes: bool,
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

pub async fn run(cfg: &Config, cmd: DbCommand) -> anyhow::Result<ExitCode> {
    let name = service_of(&cmd).to_string();
    let Some(svc) = cfg.services.get(&name) else {
        eprintln!("error: no service `{name}` in the config");
        return Ok(ExitCode::from(2));
    };
    let Some(dbcfg) = svc.database.clone() else {
        eprintln!("error: service `{name}` has no [services.{name}.database]");
        return Ok(ExitCode::from(2));
    };
    let db = Database::new(&name, dbcfg, &cfg.daemon.state_dir);
    let dir = match &db.cfg.migrations {
        MigrationSource::Files(dir) => Some(dir.clone()),
        MigrationSource::Command { .. } => None,
    };
    match cmd {
        DbCommand::Status { .. } => {
            let client = db.connect(None).await?;
            let applied = migrate::applied(&client).await?;
            println!(
                "database {} (strategy {})",
                db.base_name(),
                db.cfg.strategy.as_str()
            );
            for a in &applied {
                println!(
                    "  applied  {:03}_{}  {}  {}ms",
                    a.version, a.name, a.applied_at, a.duration_ms
                );
            }
            let Some(dir) = dir else {
                let v = crate::database::command::version(&db, &db.base_name()).await?;
                println!("  version (version_command): {v}");
                return Ok(ExitCode::SUCCESS);
            };
            let all = files::load(&dir)?;
            let pending = migrate::pending(&all, &applied);
            for m in &pending {
                println!("  pending  {}", m.label());
            }
            let report = lint::lint(&pending, db.cfg.prove);
            print_lint(&report);
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Lint { all, .. } => {
            let Some(dir) = dir else {
                eprintln!(
                    "error: `{name}` migrates with its own command; there are no files to lint"
                );
                return Ok(ExitCode::from(2));
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
            print_lint(&report);
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
                "manual",
            )
            .await?;
            println!(
                "{} ({} bytes, version {}, {}ms)",
                db.backup_dir.join(&meta.file).display(),
                meta.size_bytes,
                meta.migration_version,
                meta.duration_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Backups { .. } => {
            for m in backup::list(&db.backup_dir) {
                println!(
                    "{}  {}  release {}  version {}  {} bytes  {}",
                    m.file, m.created_at, m.release, m.migration_version, m.size_bytes, m.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Restore {
            backup: which,
            yes,
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
            if !yes && !confirm(&what) {
                return Ok(ExitCode::from(1));
            }
            backup::restore_into(&db, &db.backup_dir.join(&meta.file), &db.base_name()).await?;
            println!("restored {} into {}", meta.file, db.base_name());
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Down { to, yes, force, .. } => {
            let Some(dir) = dir else {
                eprintln!("error: `{name}` migrates with its own command; run its down command");
                return Ok(ExitCode::from(2));
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
                println!("nothing to undo: no applied migration above {to}");
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(code) = guard(cfg, &name, force).await {
                return Ok(code);
            }
            let labels: Vec<String> = undo.iter().map(|m| m.label()).collect();
            if !yes && !confirm(&format!("run the down-migrations of {}", labels.join(", "))) {
                return Ok(ExitCode::from(1));
            }
            for m in undo {
                let run = migrate::down(&db, None, m, migrate::Options::of(&db)).await?;
                println!("down {}", run.detail());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_lint(report: &lint::Report) {
    for f in &report.findings {
        println!("  {}", f.describe());
    }
    match report.reason() {
        None => println!("gate: pass ({} file(s))", report.files),
        Some(why) => println!("gate: REFUSE: {why}"),
    }
}

async fn status(cfg: &Config, service: &str) -> Option<ServiceStatus> {
    super::client_for(cfg)
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
        None => {
            eprintln!("error: cannot ask the daemon whether a slot of `{service}` still runs; use --force if none does");
            Some(ExitCode::from(1))
        }
        Some(s) if s.slots.iter().any(|v| v.running) => {
            eprintln!("error: a slot of `{service}` still runs and writes to the database; stop it first or use --force (its writes since then are lost)");
            Some(ExitCode::from(1))
        }
        Some(_) => None,
    }
}

fn confirm(what: &str) -> bool {
    print!("{what}? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}
