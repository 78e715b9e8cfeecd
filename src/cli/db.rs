//! `cutover db ...`: the service's database outside a deployment: status (applied and
//! pending migrations, what the gate would say), lint (for CI), backup, backups,
//! restore, down.
//!
//! Every command goes through the daemon's API (`/api/v1/services/{name}/db/...`,
//! `api/db.rs`): the daemon knows whether a slot still runs and writes, holds the
//! service's guard so nothing races a deployment, and records what was done. `restore`
//! and `down` first ask the daemon what they would do (a dry run, refused there while a
//! slot runs unless `--force`), show it, ask for confirmation unless `--yes`, then do
//! it. The one direct mode is `cutover db lint SERVICE --all`: it reads only the
//! migration files, so CI can run it with neither a daemon nor a database.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::report;
use crate::api::client::ApiClient;
use crate::config::{Config, MigrationSource};
use crate::database::{files, lint};

#[derive(Subcommand, Debug)]
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
        /// Do not ask for confirmation.
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
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
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
    let client = super::client_for(cfg);
    let base = format!("/api/v1/services/{name}/db");
    let result = match cmd {
        DbCommand::Lint { all: true, .. } => {
            let MigrationSource::Files(dir) = &dbcfg.migrations else {
                eprintln!(
                    "error: `{name}` migrates with its own command; there are no files to lint"
                );
                return Ok(ExitCode::from(2));
            };
            let every = files::load(dir)?;
            let report = lint::lint(&every.iter().collect::<Vec<_>>(), dbcfg.prove);
            let view = json!({
                "passed": report.passed(),
                "reason": report.reason(),
                "files": report.files,
                "findings": report.findings,
            });
            return Ok(print_lint(&view));
        }
        DbCommand::Lint { .. } => client
            .get::<Value>(&format!("{base}/lint"))
            .await
            .map(|v| print_lint(&v)),
        DbCommand::Status { .. } => client
            .get::<Value>(&format!("{base}/status"))
            .await
            .map(|v| print_status(&v)),
        DbCommand::Backup { .. } => client
            .post::<Value>(
                &format!("{base}/backup"),
                json!({ "triggered_by": super::deploy::actor() }),
            )
            .await
            .map(|m| {
                println!(
                    "{} ({} bytes, version {}, {}ms)",
                    m["file"].as_str().unwrap_or(""),
                    m["size_bytes"],
                    m["migration_version"].as_str().unwrap_or(""),
                    m["duration_ms"]
                );
                ExitCode::SUCCESS
            }),
        DbCommand::Backups { .. } => {
            client
                .get::<Value>(&format!("{base}/backups"))
                .await
                .map(|list| {
                    for m in list.as_array().into_iter().flatten() {
                        println!(
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
        DbCommand::Restore {
            backup, yes, force, ..
        } => {
            let body =
                json!({ "backup": backup, "force": force, "triggered_by": super::deploy::actor() });
            restore(&client, &format!("{base}/restore"), body, yes).await
        }
        DbCommand::Down { to, yes, force, .. } => {
            let body = json!({ "to": to, "force": force, "triggered_by": super::deploy::actor() });
            down(&client, &format!("{base}/down"), body, yes).await
        }
    };
    Ok(result.unwrap_or_else(report))
}

/// Asks the daemon what `path` would do (refused there while a slot runs unless
/// forced), asks for confirmation unless `yes`, then does it.
async fn confirmed(
    client: &ApiClient,
    path: &str,
    mut body: Value,
    yes: bool,
    describe: impl Fn(&Value) -> Option<String>,
) -> Result<Option<Value>, crate::api::client::ClientError> {
    body["dry_run"] = json!(true);
    let plan: Value = client.post(path, body.clone()).await?;
    let Some(what) = describe(&plan) else {
        return Ok(None);
    };
    if !yes && !confirm(&what) {
        eprintln!("not confirmed; nothing changed");
        return Ok(Some(Value::Null));
    }
    body["dry_run"] = json!(false);
    client.post(path, body).await.map(Some)
}

async fn restore(
    client: &ApiClient,
    path: &str,
    body: Value,
    yes: bool,
) -> Result<ExitCode, crate::api::client::ClientError> {
    let done = confirmed(client, path, body, yes, |p| {
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
        Some(Value::Null) | None => ExitCode::from(1),
        Some(v) => {
            println!(
                "restored {} into {}",
                text(&v["backup"]["file"]),
                text(&v["database"])
            );
            ExitCode::SUCCESS
        }
    })
}

async fn down(
    client: &ApiClient,
    path: &str,
    body: Value,
    yes: bool,
) -> Result<ExitCode, crate::api::client::ClientError> {
    let to = body["to"].clone();
    let done = confirmed(client, path, body, yes, |p| {
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
        None => {
            println!("nothing to undo: no applied migration above {to}");
            ExitCode::SUCCESS
        }
        Some(Value::Null) => ExitCode::from(1),
        Some(v) => {
            for run in v["runs"].as_array().into_iter().flatten() {
                println!(
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
    println!(
        "database {} (strategy {}), version {}",
        text(&v["database"]),
        text(&v["strategy"]),
        text(&v["version"])
    );
    for a in v["applied"].as_array().into_iter().flatten() {
        println!(
            "  applied  {:03}_{}  {}  {}ms",
            a["version"].as_i64().unwrap_or(0),
            text(&a["name"]),
            text(&a["applied_at"]),
            a["duration_ms"]
        );
    }
    for p in v["pending"].as_array().into_iter().flatten() {
        println!("  pending  {}", text(p));
    }
    if !v["lint"].is_null() {
        print_lint(&v["lint"]);
    }
    ExitCode::SUCCESS
}

/// Prints the findings and the verdict; exit 1 when the gate would refuse.
fn print_lint(v: &Value) -> ExitCode {
    for f in v["findings"].as_array().into_iter().flatten() {
        let allowed = match f["allowed"].as_bool() {
            Some(true) => " (allowed: contract step)",
            _ => "",
        };
        println!(
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
            println!("gate: pass ({} file(s))", v["files"]);
            ExitCode::SUCCESS
        }
        Some(why) => {
            println!("gate: REFUSE: {why}");
            ExitCode::from(1)
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn confirm(what: &str) -> bool {
    print!("{what}? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}
