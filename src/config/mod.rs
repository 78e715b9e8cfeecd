//! Configuration: one TOML file → a validated [`Config`].
//!
//! Parsing is two-staged so that `cutover validate` can report *every* mistake at once:
//! raw serde structs (`deny_unknown_fields`) per section, then semantic rules. Every
//! problem names the file, the dotted key and what was expected.

mod model;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `services.web.health.checks[1].http.path`.
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

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

/// Validates config text. `path` is used for messages and to resolve relative paths.
pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
    let _ = (text, path);
    todo!("config parsing")
}
