//! Configuration: one TOML file → a validated [`Config`].
//!
//! Parsing is two-staged so that `cutover validate` can report *every* mistake at once:
//! raw serde structs (`deny_unknown_fields`) per section, then semantic rules. Every
//! problem names the file, the dotted key and what was expected.
//!
//! # Layout
//! - `model.rs`: the validated types every other layer reads, with their defaults;
//!   `kinds.rs` those of each runtime and router kind.
//! - `raw.rs`: the file as written (the schema), one serde struct per table.
//! - `read.rs`: reads one table into one raw struct, collecting unknown keys and
//!   rejected values without stopping; [`Problem`].
//! - `validate.rs`: top-level sections, cross-service rules (listeners, hosts, ports);
//!   `service.rs` (addresses), `runtime.rs` (process; `runtime/docker.rs`,
//!   `runtime/compose.rs`), `router/` (one file per kind), `health.rs`, `smoke.rs`,
//!   `watch.rs`, `hooks.rs` (commands and HTTP calls at deployment
//!   points; their validated types in `hook_types.rs`), `database.rs` (PostgreSQL
//!   connection, migrations source, backups; types in `database_types.rs`).
//! - `rules.rs`: the rules those files share (durations, ranges, names, argv, URLs,
//!   ...).
//!
//! Imports point one way: `values.rs`, `read.rs`, `delivery.rs`, `kinds.rs` → `model.rs`,
//! `raw.rs` → `rules.rs` → the section files → `service.rs` → `validate.rs` → this
//! file; no two config files import each other.
//! - `delivery.rs`: the validated progressive-delivery types, read by `strategy.rs`
//!   (strategy, mirror), `analysis.rs` + `metric_providers.rs` (metrics) and
//!   `notify.rs` (webhooks).
//! - `values.rs`: durations, fractions, addresses, placeholders, TOML → JSON.
//! - `examples/cutover.toml` (repository root): every key, annotated; parsed by a test.

mod acme;
mod analysis;
mod client_tls;
mod database;
mod database_types;
mod delivery;
mod edge;
mod health;
mod hook_types;
mod hooks;
mod kinds;
mod kube;
mod kube_types;
mod metric_providers;
mod model;
mod notify;
mod raw;
mod read;
mod retention;
mod router;
mod rules;
mod runtime;
mod service;
mod shield;
mod smoke;
mod strategy;
mod supervise;
mod tls;
mod validate;
mod values;
mod watch;

#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod kube_tests;
#[cfg(test)]
mod tests;

pub use acme::{AcmeChallenge, AcmeConfig, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use delivery::*;
pub use model::*;
pub use read::Problem;
pub use retention::RetentionConfig;
pub use shield::{BurstConfig, ShieldConfig};
pub use tls::{CertificateFiles, Hsts, TlsListenerConfig, DEFAULT_TLS13_TICKETS};

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}: {}", self.file.display(), p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }],
    })?;
    parse(&text, Some(path))
}

/// Validates config text. `path` is used for messages and to resolve relative paths
/// (`daemon.state_dir`, `runtime.workdir`) against its directory; without a path (or
/// with a bare file name) they are resolved against the current directory.
pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
    parse_with_env(text, path, &|name| std::env::var(name).ok())
}

/// [`parse`] with the environment lookup (for `api.token_env`) passed in.
fn parse_with_env(
    text: &str,
    path: Option<&Path>,
    env: validate::EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    let error = |problems| ConfigError {
        file: path.map_or_else(|| PathBuf::from("(inline)"), Path::to_path_buf),
        problems,
    };
    let root: toml::Table =
        toml::from_str(text).map_err(|e| error(vec![syntax_problem(text, &e)]))?;
    validate::validate(root, path, &base_dir(path), env).map_err(error)
}

/// A TOML syntax error as one problem: `line L, column C: message`.
fn syntax_problem(text: &str, err: &toml::de::Error) -> Problem {
    // toml puts a second sentence on its own line ("invalid table header\nduplicate
    // key ..."); a problem is one line.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let message = match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    };
    // A value TOML itself refuses (a number too large for 64 bits) is still a
    // key's mistake: name it.
    let key = err
        .span()
        .filter(|_| message.contains("number"))
        .and_then(|span| edge::key_at(text, span.start))
        .unwrap_or_else(|| "(syntax)".into());
    Problem { key, message }
}

/// The directory relative paths in the file are resolved against, made absolute so a
/// daemon that changes directory still finds its state.
fn base_dir(path: Option<&Path>) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match path.and_then(Path::parent) {
        Some(parent) if !parent.as_os_str().is_empty() => cwd.join(parent),
        _ => cwd,
    }
}
