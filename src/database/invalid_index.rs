//! The INVALID index a failed `CREATE INDEX CONCURRENTLY` leaves behind.
//!
//! Why it matters: a concurrent build that fails (a unique index over duplicate rows, a
//! lock timeout, a cancelled session) does not roll back like a transaction; PostgreSQL
//! keeps the half-built index, marked `indisvalid = false`. It is never used by a query
//! but is still updated by every write, and a retry written the recommended way
//! (`CREATE INDEX CONCURRENTLY IF NOT EXISTS`) then "succeeds" by doing nothing, leaving
//! the schema without a usable index. So the runner:
//! - before a concurrent build, drops an invalid index of the name the statement
//!   builds (left by an earlier failed run, e.g. of a daemon that crashed);
//! - after a failed build, drops every invalid index that appeared during it;
//!
//! both with `DROP INDEX CONCURRENTLY IF EXISTS` (no lock that stops writes), and names
//! what it dropped in the migration's record or failure.

use std::collections::BTreeSet;

use tokio_postgres::Client;

/// The invalid indexes of user schemas, as `regclass` text (`items_name_key`, or
/// `schema.name` outside the search path).
pub(crate) async fn list(client: &Client) -> BTreeSet<String> {
    let rows = client
        .query(
            "SELECT i.indexrelid::regclass::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// The name of the index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON`
/// statement builds, lower-cased and unquoted; `None` when it names none.
pub(crate) fn built_by(stmt: &str) -> Option<String> {
    let text = super::files::strip_comments(stmt);
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    if upper.first().map(String::as_str) != Some("CREATE") {
        return None;
    }
    let at = upper.iter().position(|w| w == "INDEX")?;
    let mut i = at + 1;
    while let Some(w) = upper.get(i) {
        match w.as_str() {
            "CONCURRENTLY" | "IF" | "NOT" | "EXISTS" => i += 1,
            "ON" => return None,
            _ => break,
        }
    }
    let name = words.get(i)?;
    let name = match name.starts_with('"') {
        true => name.trim_matches('"').to_string(),
        false => name.to_ascii_lowercase(),
    };
    Some(name)
}

/// Whether the regclass text `index` names `wanted` (with or without its schema).
fn same_index(index: &str, wanted: &str) -> bool {
    let last = |s: &str| {
        s.rsplit('.')
            .next()
            .unwrap_or(s)
            .trim_matches('"')
            .to_string()
    };
    last(index) == last(wanted)
}

/// The invalid indexes in `found` that `stmt` would build again.
pub(crate) fn leftovers_of(found: &BTreeSet<String>, stmt: &str) -> Vec<String> {
    let Some(name) = built_by(stmt) else {
        return Vec::new();
    };
    found
        .iter()
        .filter(|i| same_index(i, &name))
        .cloned()
        .collect()
}

/// Drops each of `indexes` concurrently; returns those dropped and, for the others,
/// why not.
pub(crate) async fn drop_all(client: &Client, indexes: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut dropped, mut failed) = (Vec::new(), Vec::new());
    for index in indexes {
        // The regclass text is already quoted where it needs to be.
        match client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
            .await
        {
            Ok(()) => dropped.push(index.clone()),
            Err(e) => failed.push(format!("{index}: {}", super::describe(&e))),
        }
    }
    (dropped, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_a_concurrent_build_creates_is_read_from_the_statement() {
        let cases = [
            (
                "CREATE INDEX CONCURRENTLY items_name ON items (name)",
                Some("items_name"),
            ),
            (
                "create unique index concurrently if not exists Items_Key on items (k)",
                Some("items_key"),
            ),
            (
                "-- why\nCREATE INDEX CONCURRENTLY \"Odd\" ON items (k)",
                Some("Odd"),
            ),
            ("CREATE INDEX CONCURRENTLY ON items (k)", None),
            ("ALTER TABLE items ADD COLUMN k int", None),
        ];
        for (stmt, want) in cases {
            assert_eq!(built_by(stmt).as_deref(), want, "{stmt}");
        }
        let found: BTreeSet<String> = ["public.items_key".to_string(), "other".to_string()].into();
        assert_eq!(
            leftovers_of(
                &found,
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_key ON items (k)"
            ),
            ["public.items_key"]
        );
    }
}
