//! The migrations directory: `NNN_name.up.sql` with an optional `NNN_name.down.sql`,
//! applied in version order.
//!
//! Markers in a file's comments:
//! - `-- cutover:contract`: the file is a contract step (drops what an older release
//!   still used); the gate allows its breaking changes only when no running release
//!   needs the old schema (see `lint.rs`);
//! - `-- cutover:no-transaction`: run one statement at a time, outside a transaction
//!   (detected by itself for `CONCURRENTLY`, which PostgreSQL refuses in one).
//!
//! Statements are split with squawk's parser (dollar quotes and comments included), so
//! they can run (and be measured) one by one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use squawk_syntax::ast::AstNode;

use super::DatabaseError;

/// One migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub up: String,
    pub down: Option<String>,
    pub path: PathBuf,
    /// Run statement by statement outside a transaction.
    pub no_transaction: bool,
    /// Marked `-- cutover:contract`.
    pub contract: bool,
}

impl Migration {
    /// `007_add_status`
    pub fn label(&self) -> String {
        format!("{:03}_{}", self.version, self.name)
    }
}

/// `NNN_name.up.sql` → (NNN, name, true); `.down.sql` → false; anything else `None`.
pub fn parse_file_name(file: &str) -> Option<(i64, String, bool)> {
    let (stem, up) = match (file.strip_suffix(".up.sql"), file.strip_suffix(".down.sql")) {
        (Some(stem), _) => (stem, true),
        (None, Some(stem)) => (stem, false),
        _ => return None,
    };
    let (digits, name) = stem.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some((digits.parse().ok()?, name.to_string())).map(|(v, n)| (v, n, up))
}

/// Every migration in `dir`, in version order. Two files with one version, a down file
/// without its up file, or an unreadable file is an error naming the file.
pub fn load(dir: &Path) -> Result<Vec<Migration>, DatabaseError> {
    let err = |reason: String| DatabaseError::Files {
        dir: dir.display().to_string(),
        reason,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
    let mut ups: BTreeMap<i64, Migration> = BTreeMap::new();
    let mut downs: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        let file = entry.file_name().to_string_lossy().to_string();
        let Some((version, name, up)) = parse_file_name(&file) else {
            continue;
        };
        let text =
            std::fs::read_to_string(entry.path()).map_err(|e| err(format!("{file}: {e}")))?;
        if up {
            if let Some(other) = ups.get(&version) {
                return Err(err(format!(
                    "{file} and {} both have version {version}",
                    other.path.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
            ups.insert(
                version,
                Migration {
                    version,
                    name,
                    no_transaction: needs_no_transaction(&text),
                    contract: has_marker(&text, "cutover:contract"),
                    up: text,
                    down: None,
                    path: entry.path(),
                },
            );
        } else {
            downs.insert(version, (file, text));
        }
    }
    for (version, (file, text)) in downs {
        match ups.get_mut(&version) {
            Some(m) => m.down = Some(text),
            None => return Err(err(format!("{file} has no matching up file"))),
        }
    }
    Ok(ups.into_values().collect())
}

fn has_marker(sql: &str, marker: &str) -> bool {
    sql.lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .any(|c| c.trim() == marker)
}

/// Marked `-- cutover:no-transaction`, or a statement PostgreSQL refuses inside a
/// transaction block (`CREATE INDEX CONCURRENTLY`, `REINDEX ... CONCURRENTLY`, ...).
pub fn needs_no_transaction(sql: &str) -> bool {
    has_marker(sql, "cutover:no-transaction")
        || statements(sql).iter().any(|s| {
            let upper = strip_comments(s).to_ascii_uppercase();
            upper.split_whitespace().any(|w| w == "CONCURRENTLY")
                || upper.starts_with("VACUUM")
                || upper.starts_with("CREATE DATABASE")
        })
}

/// The statement without its leading comment lines.
pub fn strip_comments(stmt: &str) -> String {
    stmt.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// The file's statements, in order, without the trailing `;`. A file squawk cannot
/// parse is one statement (PostgreSQL will say what is wrong with it).
pub fn statements(sql: &str) -> Vec<String> {
    let parse = squawk_syntax::SourceFile::parse(sql);
    if !parse.errors().is_empty() {
        let whole = sql.trim();
        return if whole.is_empty() {
            Vec::new()
        } else {
            vec![whole.to_string()]
        };
    }
    parse
        .tree()
        .stmts()
        .map(|s| {
            s.syntax()
                .text()
                .to_string()
                .trim()
                .trim_end_matches(';')
                .trim()
                .to_string()
        })
        .filter(|s| !strip_comments(s).is_empty())
        .collect()
}

/// The first line of a statement, shortened, for records: `ALTER TABLE items ADD ...`.
pub fn head(stmt: &str) -> String {
    let one: String = strip_comments(stmt)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match one.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_version_name_and_direction() {
        assert_eq!(
            parse_file_name("007_add_status.up.sql"),
            Some((7, "add_status".into(), true))
        );
        assert_eq!(
            parse_file_name("12_x.down.sql"),
            Some((12, "x".into(), false))
        );
        for bad in [
            "add.up.sql",
            "007.up.sql",
            "007_x.sql",
            "x7_a.up.sql",
            "README.md",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn statements_are_split_by_the_parser_and_dollar_quotes_stay_whole() {
        let sql = "-- comment\nCREATE TABLE a (id int);\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\n-- only a comment\n";
        let s = statements(sql);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[1].contains("SELECT 1;"));
        assert_eq!(head(&s[0]), "CREATE TABLE a (id int)");
    }

    #[test]
    fn concurrently_and_the_marker_run_outside_a_transaction() {
        assert!(needs_no_transaction(
            "CREATE INDEX CONCURRENTLY i ON t (a);"
        ));
        assert!(needs_no_transaction(
            "-- cutover:no-transaction\nUPDATE t SET a = 1;"
        ));
        assert!(!needs_no_transaction("CREATE INDEX i ON t (a);"));
    }

    #[test]
    fn a_directory_loads_in_version_order_with_its_down_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w(
            "010_b.up.sql",
            "-- cutover:contract\nALTER TABLE t DROP COLUMN a;",
        );
        w("002_a.up.sql", "CREATE TABLE t (a int);");
        w("002_a.down.sql", "DROP TABLE t;");
        w("notes.txt", "ignored");
        let m = load(dir.path()).unwrap();
        assert_eq!(m.iter().map(|m| m.version).collect::<Vec<_>>(), [2, 10]);
        assert!(m[0].down.is_some() && m[1].down.is_none());
        assert!(m[1].contract && !m[0].contract);
        w("003_orphan.down.sql", "SELECT 1;");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("003_orphan.down.sql has no matching up file"),
            "{err}"
        );
    }
}
