//! Backups: `pg_dump` in custom format (`-Fc`), with a JSON file of metadata beside
//! each dump, the last `keep_backups` kept; restore with `pg_restore`; and clones of a
//! live database made the same way (dump, then restore into a new database), since a
//! `CREATE DATABASE ... TEMPLATE` refuses a template anybody is connected to.
//!
//! `pg_dump` refuses a server newer than itself (Debian's 15 against a 16 server), so
//! the versions are compared first and the error says which client tools to install.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Database, DatabaseError};

/// What `<name>.json` says about `<name>.dump`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// The dump's file name (in the backup directory).
    pub file: String,
    pub service: String,
    /// The release live when it was taken (`-` for none).
    pub release: String,
    /// The migration version of the database when it was taken.
    pub migration_version: String,
    pub database: String,
    pub size_bytes: u64,
    pub duration_ms: u64,
    /// RFC 3339.
    pub created_at: String,
    /// Why: `deployment 12`, `manual`.
    pub reason: String,
}

/// The directory a program is in (`pg_bin`), else the name alone (found on `PATH`).
fn tool(db: &Database, name: &str) -> PathBuf {
    match &db.cfg.pg_bin {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The major version a PostgreSQL tool reports (`pg_dump (PostgreSQL) 15.8 ...` → 15).
pub fn tool_major(version_line: &str) -> Option<u32> {
    version_line
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
}

async fn run(db: &Database, name: &str, args: &[String]) -> Result<String, DatabaseError> {
    let mut cmd = tokio::process::Command::new(tool(db, name));
    cmd.args(args).kill_on_drop(true);
    if let Some(pw) = db.password()? {
        cmd.env("PGPASSWORD", pw);
    }
    let out = cmd.output().await.map_err(|e| DatabaseError::Tool {
        tool: name.into(),
        reason: format!("cannot run {}: {e}", tool(db, name).display()),
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(DatabaseError::Tool {
            tool: name.into(),
            reason: format!("{}: {stderr}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Refuses early, with the fix, when `pg_dump` is older than the server.
pub async fn check_client(db: &Database) -> Result<(), DatabaseError> {
    let line = run(db, "pg_dump", &["--version".into()]).await?;
    let client = tool_major(&line).unwrap_or(0);
    let server = db.server_major().await?;
    if client < server {
        return Err(DatabaseError::ClientTooOld { client, server });
    }
    Ok(())
}

/// Dumps database `dbname` to `file` (custom format).
pub async fn dump(db: &Database, dbname: &str, file: &Path) -> Result<(), DatabaseError> {
    let args = vec![
        "--format=custom".to_string(),
        "--no-owner".into(),
        format!("--file={}", file.display()),
        format!("--dbname={}", db.url_for(dbname)),
    ];
    run(db, "pg_dump", &args)
        .await
        .map(drop)
        .map_err(|e| match e {
            // The version check may have been skipped (a restore of another file).
            DatabaseError::Tool { reason, .. } if reason.contains("server version mismatch") => {
                DatabaseError::Tool {
                    tool: "pg_dump".into(),
                    reason: format!(
                        "{reason} (install the server's client tools and set `pg_bin`)"
                    ),
                }
            }
            other => other,
        })
}

/// Restores `file` into a fresh database `dbname` (dropped and created again; its
/// sessions are ended first).
pub async fn restore_into(db: &Database, file: &Path, dbname: &str) -> Result<(), DatabaseError> {
    db.recreate_db(dbname).await?;
    let args = vec![
        "--no-owner".to_string(),
        "--exit-on-error".into(),
        format!("--dbname={}", db.url_for(dbname)),
        file.display().to_string(),
    ];
    run(db, "pg_restore", &args).await.map(drop)
}

/// Takes a backup of the configured database (or `dbname`), writes its metadata, and
/// deletes the oldest ones beyond `keep_backups`.
pub async fn backup(
    db: &Database,
    dbname: Option<&str>,
    release: &str,
    migration_version: &str,
    reason: &str,
) -> Result<BackupMeta, DatabaseError> {
    check_client(db).await?;
    let dbname = dbname.map(str::to_string).unwrap_or_else(|| db.base_name());
    std::fs::create_dir_all(&db.backup_dir).map_err(DatabaseError::io(format!(
        "creating the backup directory {}",
        db.backup_dir.display()
    )))?;
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_millis(now)
        .to_string()
        .replace([':', '-', '.'], "");
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let name = format!("{}-{stamp}-{}", safe(&db.service), safe(release));
    let file = db.backup_dir.join(format!("{name}.dump"));
    let started = Instant::now();
    dump(db, &dbname, &file).await?;
    let size_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let meta = BackupMeta {
        file: format!("{name}.dump"),
        service: db.service.clone(),
        release: release.to_string(),
        migration_version: migration_version.to_string(),
        database: dbname,
        size_bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        created_at: humantime::format_rfc3339_seconds(now).to_string(),
        reason: reason.to_string(),
    };
    let json = serde_json::to_string_pretty(&meta).unwrap_or_default();
    std::fs::write(db.backup_dir.join(format!("{name}.json")), json)
        .map_err(DatabaseError::io("writing the backup metadata"))?;
    prune(&db.backup_dir, db.cfg.keep_backups as usize);
    Ok(meta)
}

/// The backups in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<BackupMeta> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<BackupMeta> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<BackupMeta>(&t).ok())
        .filter(|m| dir.join(&m.file).exists())
        .collect();
    out.sort_by(|a, b| b.file.cmp(&a.file));
    out
}

/// Deletes all but the newest `keep` backups (dump and metadata).
pub fn prune(dir: &Path, keep: usize) {
    for old in list(dir).into_iter().skip(keep) {
        let _ = std::fs::remove_file(dir.join(&old.file));
        let _ = std::fs::remove_file(dir.join(old.file.replace(".dump", ".json")));
    }
}

/// A backup by file name (`latest` for the newest).
pub fn find(dir: &Path, name: &str) -> Result<BackupMeta, DatabaseError> {
    let all = list(dir);
    let found = match name {
        "latest" => all.into_iter().next(),
        _ => all
            .into_iter()
            .find(|m| m.file == name || m.file.trim_end_matches(".dump") == name),
    };
    found.ok_or_else(|| DatabaseError::NoBackup(name.to_string()))
}

/// How long ago, for people.
pub fn age(meta: &BackupMeta) -> Option<Duration> {
    let at = humantime::parse_rfc3339(&meta.created_at).ok()?;
    SystemTime::now().duration_since(at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions_are_read_from_their_version_line() {
        assert_eq!(
            tool_major("pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(tool_major("pg_restore (PostgreSQL) 16.1"), Some(16));
    }

    #[test]
    fn retention_keeps_the_newest_backups() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..4 {
            let name = format!("web-2026010{i}T000000000Z-v{i}");
            std::fs::write(dir.path().join(format!("{name}.dump")), "x").unwrap();
            let meta = BackupMeta {
                file: format!("{name}.dump"),
                service: "web".into(),
                release: format!("v{i}"),
                migration_version: "1".into(),
                database: "app".into(),
                size_bytes: 1,
                duration_ms: 1,
                created_at: "2026-01-01T00:00:00Z".into(),
                reason: "manual".into(),
            };
            std::fs::write(
                dir.path().join(format!("{name}.json")),
                serde_json::to_string(&meta).unwrap(),
            )
            .unwrap();
        }
        prune(dir.path(), 2);
        let left: Vec<String> = list(dir.path()).into_iter().map(|m| m.release).collect();
        assert_eq!(left, ["v3", "v2"]);
        assert_eq!(find(dir.path(), "latest").unwrap().release, "v3");
        assert!(find(dir.path(), "nope").is_err());
    }
}
