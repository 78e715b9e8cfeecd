//! The migration lint: which changes would break the release that is still live, or
//! lock it out of its tables, decided with squawk's rules (`squawk-linter`).
//!
//! Two kinds of findings:
//! - **breaking**: dropping or renaming a column or table, changing a column's type,
//!   dropping a type (the only way to remove an enum value), a `NOT NULL` column
//!   without a default, `SET NOT NULL`. The live release still reads and writes the old
//!   shape, so these are refused unless the file is a contract step
//!   (`-- cutover:contract`) and no running release needs the old schema;
//! - **locking**: index builds without `CONCURRENTLY`, defaults that rewrite the table,
//!   constraints validated under an exclusive lock, ... They stall the live release's
//!   queries for as long as they run, so they are refused too; a finding that is known
//!   to be harmless (a tiny table) is silenced in the file with squawk's own comment,
//!   `-- squawk-ignore <rule>`.
//!
//! Squawk's style rules (`prefer-bigint-over-int`, ...) are not used: they do not
//! decide whether a deployment is safe.

use serde::Serialize;
use squawk_linter::{Linter, Rule};

use super::files::{self, Migration};

/// Changes the still-live release cannot work with.
const BREAKING: [Rule; 16] = [
    Rule::BanDropColumn,
    Rule::BanDropTable,
    Rule::RenamingColumn,
    Rule::RenamingTable,
    Rule::ChangingColumnType,
    Rule::BanDropType,
    Rule::AddingRequiredField,
    Rule::AddingNotNullableField,
    Rule::BanDropDatabase,
    Rule::BanTruncateCascade,
    Rule::BanDropView,
    Rule::BanDropFunction,
    Rule::BanDropSchema,
    Rule::BanDropSequence,
    Rule::BanSetSchema,
    Rule::BanDropDefault,
];

/// Changes that hold locks the live release's queries wait behind.
const LOCKING: [Rule; 9] = [
    Rule::RequireConcurrentIndexCreation,
    Rule::RequireConcurrentIndexDeletion,
    Rule::AddingFieldWithDefault,
    Rule::ConstraintMissingNotValid,
    Rule::AddingForeignKeyConstraint,
    Rule::DisallowedUniqueConstraint,
    Rule::AddingSerialPrimaryKeyField,
    Rule::RequireConcurrentReindex,
    Rule::RequireConcurrentPartitionDetach,
];

/// One problem in one migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub version: i64,
    pub file: String,
    /// squawk's rule name, e.g. `ban-drop-column`; Cutover's own checks are
    /// `removing-enum-value` and `renaming-enum-value`.
    pub rule: String,
    pub message: String,
    pub line: usize,
    pub statement: String,
    /// Breaks the live release (else: locks it out).
    pub breaking: bool,
    /// Allowed because the file is a contract step and nothing needs the old schema.
    pub allowed: bool,
}

impl Finding {
    pub fn describe(&self) -> String {
        let why = if self.allowed {
            " (allowed: contract step)"
        } else {
            ""
        };
        format!(
            "{}:{}: {} — {}: `{}`{why}",
            self.file, self.line, self.rule, self.message, self.statement
        )
    }
}

/// The lint of a set of pending migrations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub files: usize,
}

impl Report {
    /// The findings that refuse the deployment.
    pub fn refused(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| !f.allowed).collect()
    }

    pub fn passed(&self) -> bool {
        self.refused().is_empty()
    }

    /// Why the gate refuses, one finding per line (the first names the rule).
    pub fn reason(&self) -> Option<String> {
        let refused = self.refused();
        let first = refused.first()?;
        let more = match refused.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Some(format!(
            "{} in {} would {} the live release{more}: {}",
            first.rule,
            first.file,
            if first.breaking { "break" } else { "lock out" },
            first.message
        ))
    }
}

/// Lints `migrations`. `contract_ok`: no running release needs the old schema, so a
/// contract step's breaking changes are allowed.
pub fn lint(migrations: &[&Migration], contract_ok: bool) -> Report {
    let mut findings = Vec::new();
    for m in migrations {
        let file = m
            .path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| m.label());
        for (rule, message, line, statement, breaking) in lint_sql(&m.up) {
            findings.push(Finding {
                version: m.version,
                file: file.clone(),
                allowed: breaking && m.contract && contract_ok,
                rule,
                message,
                line,
                statement,
                breaking,
            });
        }
    }
    Report {
        findings,
        files: migrations.len(),
    }
}

/// (rule, message, line, statement head, breaking) for each problem in `sql`.
pub fn lint_sql(sql: &str) -> Vec<(String, String, usize, String, bool)> {
    let parse = squawk_syntax::SourceFile::parse(sql);
    let mut out = Vec::new();
    if let Some(e) = parse.errors().first() {
        out.push((
            "syntax-error".to_string(),
            format!("squawk cannot parse this file: {e:?}; PostgreSQL will judge it"),
            1,
            String::new(),
            false,
        ));
        return out;
    }
    let mut linter = Linter::from(BREAKING.into_iter().chain(LOCKING));
    // Cutover wraps each file in a transaction.
    linter.settings.assume_in_transaction = true;
    for v in linter.lint(&parse, sql) {
        let start = usize::from(v.text_range.start()).min(sql.len());
        let line = sql[..start].matches('\n').count() + 1;
        let end = usize::from(v.text_range.end()).min(sql.len());
        let breaking = BREAKING.contains(&v.code);
        let message = match &v.help {
            Some(h) => format!("{} ({h})", v.message),
            None => v.message.clone(),
        };
        out.push((
            v.code.to_string(),
            message,
            line,
            files::head(&sql[start..end]),
            breaking,
        ));
    }
    // What squawk has no rule for: PostgreSQL cannot drop an enum value, so it is
    // done by editing the catalogue or renaming one; both break the live release.
    for stmt in files::statements(sql) {
        let upper = files::strip_comments(&stmt).to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().collect();
        let line = sql
            .find(stmt.as_str())
            .map(|i| sql[..i].matches('\n').count() + 1)
            .unwrap_or(1);
        if words.starts_with(&["DELETE", "FROM", "PG_ENUM"])
            || words.starts_with(&["DELETE", "FROM", "PG_CATALOG.PG_ENUM"])
        {
            out.push((
                "removing-enum-value".into(),
                "removing an enum value breaks a release that still writes it".into(),
                line,
                files::head(&stmt),
                true,
            ));
        }
        if words.first() == Some(&"ALTER")
            && words.get(1) == Some(&"TYPE")
            && upper.contains(" RENAME VALUE ")
        {
            out.push((
                "renaming-enum-value".into(),
                "renaming an enum value breaks a release that still uses the old name".into(),
                line,
                files::head(&stmt),
                true,
            ));
        }
    }
    out.sort_by_key(|f| f.2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(sql: &str) -> Vec<(String, bool)> {
        lint_sql(sql).into_iter().map(|f| (f.0, f.4)).collect()
    }

    #[test]
    fn additive_changes_pass() {
        let sql = "ALTER TYPE status ADD VALUE 'archived';\n\
                   ALTER TABLE items ADD COLUMN note text;\n\
                   CREATE INDEX CONCURRENTLY items_note ON items (note);\n\
                   CREATE TABLE tags (id bigint PRIMARY KEY, name text);\n";
        assert_eq!(rules(sql), vec![]);
    }

    #[test]
    fn changes_that_break_the_live_release_are_named_by_rule() {
        let cases = [
            ("ALTER TABLE items DROP COLUMN name;", "ban-drop-column"),
            (
                "ALTER TABLE items RENAME COLUMN name TO title;",
                "renaming-column",
            ),
            ("DROP TABLE items;", "ban-drop-table"),
            (
                "ALTER TABLE items ALTER COLUMN name TYPE varchar(10);",
                "changing-column-type",
            ),
            (
                "ALTER TABLE items ADD COLUMN owner text NOT NULL;",
                "adding-required-field",
            ),
            ("DROP TYPE status;", "ban-drop-type"),
            (
                "ALTER TYPE status RENAME VALUE 'a' TO 'b';",
                "renaming-enum-value",
            ),
        ];
        for (sql, rule) in cases {
            let found = rules(sql);
            assert!(
                found.contains(&(rule.to_string(), true)),
                "{sql}: {found:?}"
            );
        }
    }

    #[test]
    fn changes_that_lock_the_live_release_out_are_refused_too() {
        let found = rules("CREATE INDEX items_name ON items (name);");
        assert_eq!(
            found,
            vec![("require-concurrent-index-creation".into(), false)]
        );
        let found =
            rules("ALTER TABLE items ADD COLUMN created timestamptz DEFAULT clock_timestamp();");
        assert!(
            found.contains(&("adding-field-with-default".into(), false)),
            "{found:?}"
        );
        // A constant default is instant since PostgreSQL 11.
        assert_eq!(
            rules("ALTER TABLE items ADD COLUMN n int DEFAULT 0;"),
            vec![]
        );
    }

    #[test]
    fn a_contract_step_is_allowed_only_when_nothing_needs_the_old_schema() {
        let m = Migration {
            version: 9,
            name: "drop_legacy".into(),
            up: "-- cutover:contract\nALTER TABLE items DROP COLUMN legacy;".into(),
            down: None,
            path: "009_drop_legacy.up.sql".into(),
            no_transaction: false,
            contract: true,
        };
        assert!(lint(&[&m], true).passed());
        let refused = lint(&[&m], false);
        let reason = refused.reason().expect("refused");
        assert!(
            reason.starts_with("ban-drop-column in 009_drop_legacy.up.sql would break"),
            "{reason}"
        );
        assert_eq!(refused.findings[0].line, 2);
    }
}
