//! A real PostgreSQL server for tests: `initdb` into a temporary directory and
//! `pg_ctl` on a free loopback port (never a system service), shared by the tests of
//! one binary and stopped (`pg_ctl stop -m immediate`) when the last test holding it
//! drops its handle. Each test takes a database of its own.
//!
//! `initdb` refuses to run as root; as root the server runs as the `postgres` user
//! (or `nobody`) through `runuser`, in a directory owned by that user.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The directory of the PostgreSQL server binaries: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql), or PG_BIN")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().expect("no /usr/lib/postgresql/*/bin/initdb").1
}

pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    user: Option<String>,
}

static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a server binary, as the unprivileged user when we are root.
fn pg_command(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl PgServer {
    /// The server shared by this test binary, started if none runs.
    pub fn shared() -> Arc<PgServer> {
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slot.upgrade() {
            return s;
        }
        let s = Arc::new(PgServer::start());
        *slot = Arc::downgrade(&s);
        s
    }

    fn start() -> PgServer {
        PgServer::start_with("127.0.0.1", None)
    }

    /// A server of its own that also listens on `address` (the Docker bridge gateway,
    /// so containers reach it) and trusts clients from `subnet` (`172.17.0.0/16`).
    pub fn listening_also_on(address: &str, subnet: &str) -> PgServer {
        PgServer::start_with(&format!("127.0.0.1,{address}"), Some(subnet))
    }

    fn start_with(listen: &str, trusted_subnet: Option<&str>) -> PgServer {
        let user = is_root().then(|| {
            let exists = |u: &str| {
                Command::new("id")
                    .arg(u)
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if exists("postgres") {
                "postgres"
            } else {
                "nobody"
            }
            .to_string()
        });
        let dir = tempfile::Builder::new()
            .prefix("cutover-pg-")
            .tempdir()
            .expect("temp dir");
        if let Some(u) = &user {
            let out = Command::new("chown")
                .arg(u)
                .arg(dir.path())
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown {u}: {out:?}");
        }
        let bin = pg_bin();
        let data = dir.path().join("data");
        let out = pg_command(user.as_deref(), &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(subnet) = trusted_subnet {
            use std::io::Write;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .expect("open pg_hba.conf");
            // The containers, and the daemon on the host (which reaches the gateway
            // address from any of the host's own addresses: `samehost`).
            writeln!(
                hba,
                "host all all {subnet} trust\nhost all all samehost trust"
            )
            .expect("write pg_hba.conf");
        }
        let port = super::free_addr().port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses={listen} -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        let out = pg_command(user.as_deref(), &bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl");
        let server = PgServer { port, dir, user };
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        server
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database with a name no other test uses.
    pub fn fresh_db(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs SQL with `psql` (stops on the first error) and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(db))
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = pg_command(self.user.as_deref(), &pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Gives `service` of the harness's config a `[database]` at `url` (migrations in
/// `<dir>/db`, holding `001_items`, the table the demo app's smoke tests use); returns
/// the migrations directory. Before the daemon starts.
pub fn add_database(h: &super::Harness, service: &str, url: &str) -> PathBuf {
    let migrations = h.dir().join("db");
    std::fs::create_dir_all(&migrations).expect("migrations dir");
    std::fs::write(
        migrations.join("001_items.up.sql"),
        "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);\n",
    )
    .expect("001_items");
    let mut config = std::fs::read_to_string(&h.config_path).expect("read config");
    config.push_str(&format!(
        "\n[services.{service}.database]\nurl = \"{url}\"\nmigrations = \"db\"\npg_bin = \"{}\"\n",
        pg_bin().display()
    ));
    std::fs::write(&h.config_path, config).expect("write config");
    migrations
}
