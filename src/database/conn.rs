//! Connecting to a service's database, the names of its other databases (a slot's
//! clone, the scratch copy), and the URL a release is given for each.

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::DatabaseError;
use crate::config::{DatabaseConfig, DbStrategy, PasswordSource};
use crate::domain::Slot;

/// One service's database, as its config describes it.
#[derive(Debug, Clone)]
pub struct Database {
    pub service: String,
    pub cfg: DatabaseConfig,
    /// Where backups go (the config's `backup_dir`, else `<state_dir>/backups/<service>`).
    pub backup_dir: PathBuf,
}

impl Database {
    pub fn new(service: &str, cfg: DatabaseConfig, state_dir: &std::path::Path) -> Database {
        let backup_dir = cfg
            .backup_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("backups").join(service));
        Database {
            service: service.to_string(),
            cfg,
            backup_dir,
        }
    }

    /// The database named in the URL.
    pub fn base_name(&self) -> String {
        dbname_of(&self.cfg.url)
    }

    /// The database a slot uses: the one in the URL when shared; `<name>_<slot>` when
    /// each slot has its own.
    pub fn slot_db(&self, slot: Slot) -> String {
        match self.cfg.strategy {
            DbStrategy::Shared => self.base_name(),
            DbStrategy::Separate => format!("{}_{}", self.base_name(), slot.as_str()),
        }
    }

    /// The scratch copy the rehearsal and the compatibility proof use.
    pub fn scratch_db(&self) -> String {
        format!("{}_cutover_scratch", self.base_name())
    }

    /// The URL of database `db` (the configured URL with its database replaced), as a
    /// release gets it in `url_env`. The password is not added: a release reads it
    /// the way it always does.
    pub fn url_for(&self, db: &str) -> String {
        with_dbname(&self.cfg.url, db)
    }

    /// The password, from the environment or its file.
    pub fn password(&self) -> Result<Option<String>, DatabaseError> {
        match &self.cfg.password {
            None => Ok(None),
            Some(PasswordSource::Env(name)) => {
                std::env::var(name)
                    .map(Some)
                    .map_err(|_| DatabaseError::Connect {
                        db: self.base_name(),
                        reason: format!("the password variable {name} is not set"),
                    })
            }
            Some(PasswordSource::File(path)) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(DatabaseError::io(format!(
                    "reading the password file {}",
                    path.display()
                ))),
        }
    }

    /// Connects to database `db` (`None`: the configured one).
    pub async fn connect(&self, db: Option<&str>) -> Result<Client, DatabaseError> {
        let name = db.map(str::to_string).unwrap_or_else(|| self.base_name());
        let mut config: tokio_postgres::Config =
            self.cfg.url.parse().map_err(|e| DatabaseError::Connect {
                db: name.clone(),
                reason: format!("{e}"),
            })?;
        config.dbname(&name);
        config.application_name("cutover");
        config.connect_timeout(Duration::from_secs(10));
        if let Some(pw) = self.password()? {
            config.password(pw);
        }
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|e| DatabaseError::Connect {
                    db: name.clone(),
                    reason: super::describe(&e),
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        Ok(client)
    }

    /// The server's major version (16 for 16.4).
    pub async fn server_major(&self) -> Result<u32, DatabaseError> {
        let client = self.connect(None).await?;
        let row = client
            .query_one("SHOW server_version_num", &[])
            .await
            .map_err(DatabaseError::sql("reading the server version"))?;
        let num: String = row.get(0);
        Ok(num.parse::<u32>().unwrap_or(0) / 10_000)
    }

    /// Drops database `db` if it exists, first ending its sessions.
    pub async fn drop_db(&self, db: &str) -> Result<(), DatabaseError> {
        let admin = self.connect(Some("postgres")).await?;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await
            .map_err(DatabaseError::sql(format!("ending the sessions of {db}")))?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(db)))
            .await
            .map_err(DatabaseError::sql(format!("dropping {db}")))
    }

    /// Creates an empty database `db` (dropping one of that name first).
    pub async fn recreate_db(&self, db: &str) -> Result<(), DatabaseError> {
        self.drop_db(db).await?;
        let admin = self.connect(Some("postgres")).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(db)))
            .await
            .map_err(DatabaseError::sql(format!("creating {db}")))
    }

    /// Whether database `db` exists.
    pub async fn exists(&self, db: &str) -> Result<bool, DatabaseError> {
        let admin = self.connect(Some("postgres")).await?;
        let n = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(DatabaseError::sql("listing databases"))?;
        Ok(n.is_some())
    }
}

/// The database named by a `postgres://` URL.
pub fn dbname_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split_once('/')
        .map(|(_, p)| p.split('?').next().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// `url` with its database replaced by `db`.
pub fn with_dbname(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path.split_once('?').map(|(_, q)| q);
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

/// `"name"`, with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_another_database_and_keeps_its_parameters() {
        let url = "postgres://app@127.0.0.1:5432/shop?sslmode=disable";
        assert_eq!(dbname_of(url), "shop");
        assert_eq!(
            with_dbname(url, "shop_green"),
            "postgres://app@127.0.0.1:5432/shop_green?sslmode=disable"
        );
        assert_eq!(with_dbname("postgresql://h/a", "b"), "postgresql://h/b");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
