//! `cutover db ...`: the service's database outside a deployment: status (applied and
//! pending migrations, what the gate would say), lint (for CI), backup, backups,
//! restore, down.
//!
//! Every command goes through the daemon's API (`/api/v1/services/{name}/db/...`,
//! `api/db.rs`), so it works with `--api`/`CUTOVER_API_URL` and no config file: the
//! daemon knows whether a slot still runs and writes, holds the service's guard so
//! nothing races a deployment, and records what was done. `restore` and `down` first
//! ask the daemon what they would do (a dry run, refused there while a slot runs unless
//! `--force`), show it, ask for confirmation unless `--yes` (a production service: its
//! name typed on a terminal, refused without one), then do it. The one direct mode is
//! `cutover db lint SERVICE --all`: it reads only the migration files of the config, so
//! CI can run it with neither a daemon nor a database. Every subcommand answers
//! `--json` (the API's JSON as it is).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{fail, json_out, mode, say};
use super::report;
use crate::api::client::{ApiClient, ClientError};
use crate::api::ServiceStatus;
use crate::config::{Config, MigrationSource};
use crate::database::{files, lint};

#[derive(Subcommand, Debug, Clone)]
pub enum DbCommand {
    /// Applied and pending migrations, and what the gate would say about the pending.
    Status { service: String },
    /// Lint the pending migrations (or, with --all, every file) like the gate; exit 1
    /// when it would refuse. With --all it reads only the files (no daemon, no
    /// database: for CI).
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
        /// Even while a slot still runs (what the down files drop, it loses).
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

/// `cutover db lint SERVICE --all`: every migration file of the config, linted here.
pub fn lint_all(cfg: &Config, name: &str) -> anyhow::Result<ExitCode> {
    let Some(svc) = cfg.services.get(name) else {
        return Ok(fail(
            2,
            "unknown_service",
            format!("no service `{name}` in the config"),
        ));
    };
    let Some(dbcfg) = svc.database.as_ref() else {
        return Ok(fail(
            2,
            "no_database",
            format!("service `{name}` has no [services.{name}.database]"),
        ));
    };
    let MigrationSource::Files(dir) = &dbcfg.migrations else {
        return Ok(fail(
            2,
            "usage",
            format!("`{name}` migrates with its own command; there are no files to lint"),
        ));
    };
    let every = files::load(dir)?;
    let report = lint::lint(&every.iter().collect::<Vec<_>>(), dbcfg.prove);
    let view = json!({
        "passed": report.passed(),
        "reason": report.reason(),
        "files": report.files,
        "findings": report.findings,
    });
    Ok(print_lint(&view))
}

/// Runs one `db` command through the daemon; `yes` skips the confirmations, `actor` is
/// recorded with what it does.
pub async fn run(client: &ApiClient, cmd: &DbCommand, yes: bool, actor: &str) -> ExitCode {
    let name = service_of(cmd).to_string();
    let base = format!("/api/v1/services/{name}/db");
    let result = match cmd {
        DbCommand::Lint { all, .. } => client
            .get::<Value>(&format!("{base}/lint?all={all}"))
            .await
            .map(|v| print_lint(&v)),
        DbCommand::Status { .. } => client
            .get::<Value>(&format!("{base}/status"))
            .await
            .map(|v| print_status(&v)),
        DbCommand::Backup { .. } => client
            .post::<Value>(&format!("{base}/backup"), json!({ "triggered_by": actor }))
            .await
            .map(|m| {
                if mode().json {
                    json_out(&m);
                } else {
                    say!(
                        "{} ({} bytes, version {}, {}ms)",
                        text(&m["file"]),
                        m["size_bytes"],
                        text(&m["migration_version"]),
                        m["duration_ms"]
                    );
                }
                ExitCode::SUCCESS
            }),
        DbCommand::Backups { .. } => {
            client
                .get::<Value>(&format!("{base}/backups"))
                .await
                .map(|list| {
                    if mode().json {
                        json_out(&list);
                        return ExitCode::SUCCESS;
                    }
                    for m in list.as_array().into_iter().flatten() {
                        say!(
                            "{}  {}  release {}  version {}  {} bytes  {}",
                            text(&m["file"]),
                            text(&m["created_at"]),
                            text(&m["release"]),
                            text(&m["migration_version"]),
                            m["size_bytes"],
                            text(&m["reason"])
                        );
                    }
                    ExitCode::SUCCESS
                })
        }
        DbCommand::Restore { backup, force, .. } => {
            let body = json!({ "backup": backup, "force": force, "triggered_by": actor });
            restore(client, &name, &format!("{base}/restore"), body, yes).await
        }
        DbCommand::Down { to, force, .. } => {
            let body = json!({ "to": to, "force": force, "triggered_by": actor });
            down(client, &name, &format!("{base}/down"), body, yes).await
        }
    };
    result.unwrap_or_else(report)
}

/// What a confirmed change came to.
enum Outcome {
    /// Nothing to do (the dry run found nothing).
    Nothing,
    /// Refused by the operator (or no terminal): the exit code, already reported.
    Refused(ExitCode),
    Done(Value),
}

/// Asks the daemon what `path` would do (refused there while a slot runs unless
/// forced), asks for confirmation unless `yes`, then does it.
async fn confirmed(
    client: &ApiClient,
    service: &str,
    path: &str,
    mut body: Value,
    yes: bool,
    describe: impl Fn(&Value) -> Option<String>,
) -> Result<Outcome, ClientError> {
    body["dry_run"] = json!(true);
    let plan: Value = client.post(path, body.clone()).await?;
    let Some(what) = describe(&plan) else {
        return Ok(Outcome::Nothing);
    };
    if !yes {
        let status: ServiceStatus = client.get(&format!("/api/v1/services/{service}")).await?;
        let go = if status.environment.as_deref() == Some("production") {
            super::confirm::production(status.environment.as_deref(), service, &what, false)
        } else if confirm(&what) {
            Ok(())
        } else {
            Err(fail(
                1,
                "not_confirmed",
                "not confirmed; nothing was changed",
            ))
        };
        if let Err(code) = go {
            return Ok(Outcome::Refused(code));
        }
    }
    body["dry_run"] = json!(false);
    client.post(path, body).await.map(Outcome::Done)
}

async fn restore(
    client: &ApiClient,
    service: &str,
    path: &str,
    body: Value,
    yes: bool,
) -> Result<ExitCode, ClientError> {
    let done = confirmed(client, service, path, body, yes, |p| {
        Some(format!(
            "restore {} (taken {}, version {}) into {}, replacing everything in it",
            text(&p["backup"]["file"]),
            text(&p["backup"]["created_at"]),
            text(&p["backup"]["migration_version"]),
            text(&p["database"])
        ))
    })
    .await?;
    Ok(match done {
        Outcome::Refused(code) => code,
        Outcome::Nothing => ExitCode::from(1),
        Outcome::Done(v) => {
            if mode().json {
                json_out(&v);
            } else {
                say!(
                    "restored {} into {}",
                    text(&v["backup"]["file"]),
                    text(&v["database"])
                );
            }
            ExitCode::SUCCESS
        }
    })
}

async fn down(
    client: &ApiClient,
    service: &str,
    path: &str,
    body: Value,
    yes: bool,
) -> Result<ExitCode, ClientError> {
    let to = body["to"].clone();
    let done = confirmed(client, service, path, body, yes, |p| {
        let list: Vec<&str> = p["migrations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        (!list.is_empty()).then(|| format!("run the down-migrations of {}", list.join(", ")))
    })
    .await?;
    Ok(match done {
        Outcome::Nothing => {
            if mode().json {
                json_out(&json!({ "to": to, "migrations": [], "runs": [], "dry_run": false }));
            } else {
                say!("nothing to undo: no applied migration above {to}");
            }
            ExitCode::SUCCESS
        }
        Outcome::Refused(code) => code,
        Outcome::Done(v) if mode().json => {
            json_out(&v);
            ExitCode::SUCCESS
        }
        Outcome::Done(v) => {
            for run in v["runs"].as_array().into_iter().flatten() {
                say!(
                    "down {:03}_{} in {}ms",
                    run["version"].as_i64().unwrap_or(0),
                    text(&run["name"]),
                    run["duration_ms"]
                );
            }
            ExitCode::SUCCESS
        }
    })
}

fn print_status(v: &Value) -> ExitCode {
    if mode().json {
        json_out(v);
        return ExitCode::SUCCESS;
    }
    say!(
        "database {} (strategy {}), version {}",
        text(&v["database"]),
        text(&v["strategy"]),
        text(&v["version"])
    );
    for a in v["applied"].as_array().into_iter().flatten() {
        say!(
            "  applied  {:03}_{}  {}  {}ms",
            a["version"].as_i64().unwrap_or(0),
            text(&a["name"]),
            text(&a["applied_at"]),
            a["duration_ms"]
        );
    }
    for p in v["pending"].as_array().into_iter().flatten() {
        say!("  pending  {}", text(p));
    }
    if !v["lint"].is_null() {
        print_lint(&v["lint"]);
    }
    ExitCode::SUCCESS
}

/// Prints the findings and the verdict; exit 1 when the gate would refuse.
fn print_lint(v: &Value) -> ExitCode {
    if mode().json {
        json_out(v);
        return if v["passed"].as_bool() == Some(true) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    for f in v["findings"].as_array().into_iter().flatten() {
        let allowed = match f["allowed"].as_bool() {
            Some(true) => " (allowed: contract step)",
            _ => "",
        };
        say!(
            "  {}:{}: {} — {}: `{}`{allowed}",
            text(&f["file"]),
            f["line"],
            text(&f["rule"]),
            text(&f["message"]),
            text(&f["statement"])
        );
    }
    match v["reason"].as_str() {
        None => {
            say!("gate: pass ({} file(s))", v["files"]);
            ExitCode::SUCCESS
        }
        Some(why) => {
            say!("gate: REFUSE: {why}");
            ExitCode::from(1)
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn confirm(what: &str) -> bool {
    eprint!("{what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}
