//! Rules for `[services.<name>.database]`: the PostgreSQL connection, where migrations
//! come from (a directory of SQL files or the team's own command), backups, and the
//! compatibility gate's switches.
//!
//! Why exactly one migrations source: Cutover must know which migrations are pending to
//! lint and rehearse them; with a command it can only run it (on a scratch copy first,
//! then for real) and ask the version before and after.

use std::path::{Path, PathBuf};

use super::database_types::{
    DatabaseConfig, DbStrategy, DownOnRollback, MigrationSource, PasswordSource,
};
use super::raw::{RawDatabase, RawFlagOrWord};
use super::read::{join, read, Problems, Sub};
use super::rules::{argv_ok, duration, int_range, is_env_name, positive};

/// Reads the database table of a service; `Some(None)` when there is none.
pub(super) fn database(
    service_at: &str,
    sub: Option<&Sub<RawDatabase>>,
    base: &Path,
    p: &mut Problems,
) -> Option<Option<DatabaseConfig>> {
    let Some(sub) = sub else {
        return Some(None);
    };
    let at = join(service_at, "database");
    let before = p.count();
    let r = read::<RawDatabase>(sub.value(), &at, p)?;
    let raw = &r.raw;
    let url = r
        .required(
            "url",
            raw.url.clone(),
            "a PostgreSQL URL like \"postgres://app@127.0.0.1:5432/app\"",
            p,
        )
        .and_then(|u| url(p, r.key("url"), u));
    let password = match (&raw.password_env, &raw.password_file) {
        (Some(_), Some(_)) => {
            p.add(
                r.key("password_file"),
                "set either `password_env` or `password_file`, not both",
            );
            None
        }
        (Some(name), None) if !is_env_name(name) => {
            p.add(
                r.key("password_env"),
                format!("expected an environment variable name, got {name:?}"),
            );
            None
        }
        (Some(name), None) => Some(Some(PasswordSource::Env(name.clone()))),
        (None, Some(file)) => Some(Some(PasswordSource::File(base.join(file)))),
        (None, None) => Some(None),
    };
    let strategy = r
        .or("strategy", raw.strategy.as_deref(), "shared")
        .and_then(|s| match s {
            "shared" => Some(DbStrategy::Shared),
            "separate" => Some(DbStrategy::Separate),
            other => {
                p.add(
                    r.key("strategy"),
                    format!("expected \"shared\" or \"separate\", got {other:?}"),
                );
                None
            }
        });
    let url_env = r
        .or(
            "url_env",
            raw.url_env.clone(),
            DatabaseConfig::DEFAULT_URL_ENV.to_string(),
        )
        .and_then(|n| match is_env_name(&n) {
            true => Some(n),
            false => {
                p.add(
                    r.key("url_env"),
                    format!("expected an environment variable name, got {n:?}"),
                );
                None
            }
        });
    let migrations = match (&raw.migrations, &raw.migrate_command, &raw.version_command) {
        (Some(dir), None, None) => Some(MigrationSource::Files(base.join(dir))),
        (None, Some(migrate), Some(version)) => {
            let ok = argv_ok(p, &r.key("migrate_command"), migrate)
                & argv_ok(p, &r.key("version_command"), version);
            ok.then(|| MigrationSource::Command {
                migrate: migrate.clone(),
                version: version.clone(),
                dir: base.to_path_buf(),
            })
        }
        (None, Some(_), None) => {
            p.add(
                r.key("version_command"),
                "`migrate_command` needs a `version_command` that prints the current migration version",
            );
            None
        }
        (None, None, Some(_)) => {
            p.add(
                r.key("migrate_command"),
                "`version_command` is only used with a `migrate_command`",
            );
            None
        }
        (None, None, None) => {
            p.add(
                r.key("migrations"),
                "missing required key `migrations`, expected a directory of NNN_name.up.sql files (or `migrate_command` and `version_command`)",
            );
            None
        }
        (Some(_), _, _) => {
            p.add(
                r.key("migrations"),
                "set either `migrations` (a directory) or `migrate_command`, not both",
            );
            None
        }
    };
    let lock_timeout = duration(
        &r,
        "lock_timeout",
        raw.lock_timeout,
        DatabaseConfig::DEFAULT_LOCK_TIMEOUT,
    )
    .and_then(|d| positive(p, r.key("lock_timeout"), d));
    let retries = r
        .or(
            "retries",
            raw.retries,
            DatabaseConfig::DEFAULT_RETRIES as i64,
        )
        .and_then(|n| int_range(p, r.key("retries"), n, 0, 100))
        .map(|n| n as u32);
    let keep_backups = r
        .or(
            "keep_backups",
            raw.keep_backups,
            DatabaseConfig::DEFAULT_KEEP_BACKUPS as i64,
        )
        .and_then(|n| int_range(p, r.key("keep_backups"), n, 1, 10_000))
        .map(|n| n as u32);
    let down_on_rollback = down_on_rollback(
        p,
        r.key("down_on_rollback"),
        raw.down_on_rollback.as_ref(),
        (&migrations, &strategy),
    );
    let backup_dir = raw.backup_dir.as_ref().map(|d| base.join(d));
    let pg_bin = raw.pg_bin.as_ref().map(PathBuf::from);
    if p.count() != before {
        return None;
    }
    Some(Some(DatabaseConfig {
        url: url?,
        password: password?,
        strategy: strategy?,
        url_env: url_env?,
        migrations: migrations?,
        lock_timeout: lock_timeout?,
        retries: retries?,
        backup_dir,
        keep_backups: keep_backups?,
        prove: raw.prove.unwrap_or(true),
        down_on_rollback: down_on_rollback?,
        pg_bin,
    }))
}

/// `down_on_rollback`: `false`/`"never"`, `"manual"` or `"always"`; only with migration
/// files (Cutover runs their down files) and the `shared` strategy (with `separate`,
/// rolling back already returns to the old database).
fn down_on_rollback(
    p: &mut Problems,
    key: String,
    raw: Option<&RawFlagOrWord>,
    (migrations, strategy): (&Option<MigrationSource>, &Option<DbStrategy>),
) -> Option<DownOnRollback> {
    let expected = "expected \"manual\" (when a person rolls back), \"always\" (a watch-window trigger too) or false";
    let value = match raw {
        None | Some(RawFlagOrWord::Flag(false)) => return Some(DownOnRollback::Never),
        Some(RawFlagOrWord::Word(w)) if w == "never" => return Some(DownOnRollback::Never),
        Some(RawFlagOrWord::Word(w)) if w == "manual" => DownOnRollback::Manual,
        Some(RawFlagOrWord::Word(w)) if w == "always" => DownOnRollback::Always,
        Some(RawFlagOrWord::Flag(true)) => {
            p.add(key, format!("{expected}, got true (say which rollbacks)"));
            return None;
        }
        Some(RawFlagOrWord::Word(w)) => {
            p.add(key, format!("{expected}, got {w:?}"));
            return None;
        }
    };
    if let Some(MigrationSource::Command { .. }) = migrations {
        p.add(
            key,
            "needs a `migrations` directory: Cutover runs its NNN_name.down.sql files, and a `migrate_command` has no down command",
        );
        return None;
    }
    if *strategy == Some(DbStrategy::Separate) {
        p.add(
            key,
            "applies to the `shared` strategy only: with `separate`, a rollback already returns to the previous release's own database",
        );
        return None;
    }
    Some(value)
}

/// A `postgres://` URL naming a database (Cutover clones and restores by name).
fn url(p: &mut Problems, key: String, text: String) -> Option<String> {
    let Some(rest) = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
    else {
        p.add(
            key,
            format!("expected a URL starting with postgres:// or postgresql://, got {text:?}"),
        );
        return None;
    };
    let db = rest
        .split_once('/')
        .map(|(_, path)| path.split('?').next().unwrap_or(""))
        .unwrap_or("");
    if db.is_empty() {
        p.add(
            key,
            format!(
                "the URL must name the database (postgres://user@host:port/DBNAME), got {text:?}"
            ),
        );
        return None;
    }
    if text.parse::<tokio_postgres::Config>().is_err() {
        p.add(key, format!("not a valid PostgreSQL URL: {text:?}"));
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, DbStrategy, MigrationSource, PasswordSource};

    const BASE: &str = r#"
[services.web]
listen = "127.0.0.1:8080"
[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;

    fn with(db: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse(&format!("{BASE}[services.web.database]\n{db}"), None)
    }

    #[test]
    fn a_database_with_a_migrations_directory_takes_the_defaults() {
        let c = with("url = \"postgres://app@127.0.0.1:5432/app\"\nmigrations = \"db\"\npassword_env = \"APP_PW\"\n")
            .expect("valid");
        let db = c.services["web"].database.clone().expect("database");
        assert_eq!(db.strategy, DbStrategy::Shared);
        assert_eq!(db.url_env, "DATABASE_URL");
        assert_eq!(db.password, Some(PasswordSource::Env("APP_PW".into())));
        assert!(matches!(db.migrations, MigrationSource::Files(ref d) if d.ends_with("db")));
        assert_eq!((db.retries, db.keep_backups, db.prove), (3, 10, true));
        assert_eq!(db.down_on_rollback, crate::config::DownOnRollback::Never);
    }

    #[test]
    fn a_database_needs_a_url_naming_the_database_and_one_migrations_source() {
        let err = with("url = \"mysql://x/y\"\nmigrations = \"db\"\nmigrate_command = [\"npm\", \"run\", \"m\"]\nstrategy = \"copy\"\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("services.web.database.url"), "{err}");
        assert!(err.contains("not both"), "{err}");
        assert!(err.contains("\"shared\" or \"separate\""), "{err}");
        let err = with("url = \"postgres://h/\"\nmigrate_command = [\"npm\"]\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("must name the database"), "{err}");
        assert!(err.contains("version_command"), "{err}");
    }

    #[test]
    fn the_command_source_runs_the_teams_own_tool() {
        let c = with("url = \"postgres://a@h/app\"\nstrategy = \"separate\"\nmigrate_command = [\"alembic\", \"upgrade\", \"head\"]\nversion_command = [\"alembic\", \"current\"]\n")
            .expect("valid");
        let db = c.services["web"].database.clone().expect("database");
        assert_eq!(db.strategy, DbStrategy::Separate);
        assert!(
            matches!(db.migrations, MigrationSource::Command { ref migrate, .. } if migrate[0] == "alembic")
        );
    }

    #[test]
    fn down_on_rollback_says_which_rollbacks_and_needs_down_files_in_a_shared_database() {
        let c = with(
            "url = \"postgres://a@h/app\"\nmigrations = \"db\"\ndown_on_rollback = \"manual\"\n",
        )
        .expect("valid");
        let db = c.services["web"].database.clone().expect("database");
        assert_eq!(db.down_on_rollback, crate::config::DownOnRollback::Manual);
        for (value, wanted) in [
            ("true", "say which rollbacks"),
            ("\"sometimes\"", "got \"sometimes\""),
        ] {
            let err = with(&format!(
                "url = \"postgres://a@h/app\"\nmigrations = \"db\"\ndown_on_rollback = {value}\n"
            ))
            .expect_err("invalid")
            .to_string();
            assert!(
                err.contains("services.web.database.down_on_rollback"),
                "{err}"
            );
            assert!(err.contains(wanted), "{err}");
        }
        let err = with("url = \"postgres://a@h/app\"\nmigrate_command = [\"m\"]\nversion_command = [\"v\"]\ndown_on_rollback = \"always\"\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("has no down command"), "{err}");
        let err = with("url = \"postgres://a@h/app\"\nmigrations = \"db\"\nstrategy = \"separate\"\ndown_on_rollback = \"always\"\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("`shared` strategy only"), "{err}");
    }
}
