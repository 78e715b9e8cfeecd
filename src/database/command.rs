//! The team's own migration tool (`npm run db:migrate:up`, `alembic upgrade head`):
//! Cutover runs `migrate_command` with `url_env` pointing at the database to migrate
//! (the scratch copy first, then the real one) and asks `version_command` for the
//! version before and after (its last line of output).
//!
//! Cutover cannot see the pending migrations of a tool it does not know, so there is
//! no lint in this mode; the rehearsal and the compatibility proof still run.

use std::time::{Duration, Instant};

use super::{Database, DatabaseError};
use crate::config::MigrationSource;

/// What a command printed and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRun {
    pub output: String,
    pub duration: Duration,
}

/// Runs `argv` in `dir` with the database URL of `dbname` in `url_env`.
async fn run(
    db: &Database,
    argv: &[String],
    dir: &std::path::Path,
    dbname: &str,
) -> Result<CommandRun, DatabaseError> {
    let started = Instant::now();
    let (program, args) = argv.split_first().ok_or_else(|| DatabaseError::Tool {
        tool: "migrate command".into(),
        reason: "empty command".into(),
    })?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env(&db.cfg.url_env, db.url_for(dbname))
        .kill_on_drop(true);
    if let Some(pw) = db.password()? {
        cmd.env("PGPASSWORD", pw);
    }
    let out = cmd.output().await.map_err(|e| DatabaseError::Tool {
        tool: program.clone(),
        reason: format!("cannot run: {e}"),
    })?;
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = tail(&text);
    if !out.status.success() {
        return Err(DatabaseError::Tool {
            tool: argv.join(" "),
            reason: format!("{}: {}", out.status, text),
        });
    }
    Ok(CommandRun {
        output: text,
        duration: started.elapsed(),
    })
}

/// The version `version_command` reports for `dbname` (its last non-empty line).
pub async fn version(db: &Database, dbname: &str) -> Result<String, DatabaseError> {
    let MigrationSource::Command { version, dir, .. } = &db.cfg.migrations else {
        return Err(DatabaseError::Refused(
            "not a command migrations source".into(),
        ));
    };
    let run = run(db, version, dir, dbname).await?;
    Ok(run
        .output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Runs `migrate_command` against `dbname`.
pub async fn migrate(db: &Database, dbname: &str) -> Result<CommandRun, DatabaseError> {
    let MigrationSource::Command { migrate, dir, .. } = &db.cfg.migrations else {
        return Err(DatabaseError::Refused(
            "not a command migrations source".into(),
        ));
    };
    run(db, migrate, dir, dbname).await
}

/// The last 4 KiB of `text`, without control characters other than newline and tab.
fn tail(text: &str) -> String {
    let cut = text.len().saturating_sub(4096);
    let start = (cut..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..]
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect::<String>()
        .trim()
        .to_string()
}
