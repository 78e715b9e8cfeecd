//! A real Prometheus server (Debian package `prometheus`) for tests: its own config,
//! storage and loopback port, scraping one target every second; killed on drop.
//! Fails (never skips) when `prometheus` is not installed: `.ci/run` installs it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

fn prometheus_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let candidate = PathBuf::from(dir).join("prometheus");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("this test needs the `prometheus` binary (Debian package `prometheus`; scripts/test installs it), found none on PATH");
}

// Also loaded by `support/mod.rs` in the test files that have both; this file is
// used without `support` too (tests/analysis_prometheus.rs), so it brings its own.
#[allow(clippy::duplicate_mod)]
#[path = "ports.rs"]
mod ports;

/// A free loopback port, outside the ephemeral range (`support/ports.rs`).
pub fn free_port() -> u16 {
    ports::free_addr().port()
}

/// A Prometheus process with its own config and storage; killed on drop.
pub struct Prometheus {
    child: std::process::Child,
    pub address: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Prometheus {
        Self::start_on(free_port(), target)
    }

    /// On a port chosen beforehand (e.g. already written into a config).
    pub fn start_on(port: u16, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cutover\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus");
        Prometheus {
            child,
            address: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Serving its API over HTTPS with `cert`/`key` (its `--web.config.file`), on
    /// `port`, scraping nothing but itself.
    pub fn start_tls(port: u16, cert: &std::path::Path, key: &std::path::Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1s\n").unwrap();
        let web = dir.path().join("web.yml");
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus");
        Prometheus {
            child,
            address: format!("https://127.0.0.1:{port}"),
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
