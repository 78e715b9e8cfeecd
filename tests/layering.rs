//! The layer order of `src/` (ARCHITECTURE.md, "Layer order"): imports point down only.
//!
//! ```text
//! domain → config, store → proxy, checks, kube → runtime, router, analysis → notify
//!        → orchestrator → api → daemon → cli, demo
//! ```
//!
//! A file's layer is its top-level module (`src/<module>/…` or `src/<module>.rs`;
//! `lib.rs` and `main.rs` wire everything together and are exempt). Every reference to
//! `crate::<module>` in code (in `use` lines, grouped `use crate::{a, b}` included, and
//! in paths), and every `super::` that climbs to the crate root, must name a module on
//! the same level or below. `cli` and `demo` share the top level but neither imports
//! the other. Test-only code may import anything: files named `tests.rs` or
//! `*_tests.rs`, and everything from a `#[cfg(test)]` line to the end of the file (a
//! `#[cfg(test)] mod name;` declaration skips only itself). A module missing from
//! [`LAYERS`] fails the test, so a new module is placed in the order when it is added.

use std::path::{Path, PathBuf};

/// Lowest first; modules on one level may import each other.
const LAYERS: &[&[&str]] = &[
    &["domain", "tls"],
    &["config", "store"],
    &["proxy", "checks", "kube"],
    &["runtime", "router", "analysis", "database"],
    &["notify"],
    &["orchestrator"],
    &["api"],
    &["daemon"],
    &["cli", "demo"],
];

/// Side by side on the top level, and neither imports the other.
const APART: [&str; 2] = ["cli", "demo"];

/// Imports of a higher layer that are known and being removed elsewhere: (file, the
/// module it imports). Each must still occur, so the list cannot outlive its reason.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

/// One import that breaks the order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layer = |m: &str| layer_of(m).map_or("?".to_string(), |l| l.to_string());
        write!(
            f,
            "{}:{}: `{}` (layer {}) imports `{}` (layer {})",
            self.file,
            self.line,
            self.from,
            layer(&self.from),
            self.to,
            layer(&self.to)
        )
    }
}

/// What [`check`] found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Findings {
    violations: Vec<Violation>,
    /// Top-level modules (of files, or named in `crate::` paths) missing from [`LAYERS`].
    unknown: Vec<String>,
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|level| level.contains(&module))
}

/// `src/proxy/h1/mod.rs` → `["proxy", "h1"]`, `src/daemon.rs` → `["daemon"]`;
/// `None` for `lib.rs`, `main.rs` and anything outside `src/`.
fn module_path(file: &str) -> Option<Vec<String>> {
    let rel = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [] => None,
        [only] if only == "lib" || only == "main" => None,
        _ => Some(parts),
    }
}

fn is_test_file(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The lines that are not test-only, numbered from 1, with comments removed.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim_start().starts_with("#[") {
                j += 1;
            }
            if j < lines.len() && is_mod_declaration(lines[j]) {
                i = j + 1;
                continue;
            }
            break;
        }
        out.push((i + 1, strip_comment(lines[i])));
        i += 1;
    }
    out
}

/// `mod name;` (any visibility): a test module in its own file.
fn is_mod_declaration(line: &str) -> bool {
    let t = line.trim();
    let t = t
        .strip_prefix("pub(crate) ")
        .or_else(|| t.strip_prefix("pub "))
        .unwrap_or(t);
    t.strip_prefix("mod ")
        .and_then(|rest| rest.strip_suffix(';'))
        .is_some_and(|name| name.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// The line up to a `//` that is not inside a string literal.
fn strip_comment(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return line[..i].to_string(),
            _ => {}
        }
        i += 1;
    }
    line.to_string()
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named by the paths in `code`, each with the line it is on:
/// `crate::x`, `crate::{x, y::z}` (over several lines), and `super::…` chains that
/// climb above `module` (a file's module path) to the crate root.
fn references(module: &[String], code: &[(usize, String)]) -> Vec<(usize, String)> {
    // One string with a line number per byte, so a grouped `use` may span lines.
    let mut text = String::new();
    let mut line_at = Vec::new();
    for (n, l) in code {
        text.push_str(l);
        text.push('\n');
        line_at.resize(text.len(), *n);
    }
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = next_path_start(&text, from) {
        from = pos + 1;
        let rest = &text[pos..];
        // How many modules up this path starts: `crate` = all the way.
        let (mut climbed, mut after) = if let Some(r) = rest.strip_prefix("crate::") {
            (usize::MAX, r)
        } else {
            (0, rest)
        };
        while let Some(r) = after.strip_prefix("super::") {
            climbed = climbed.saturating_add(1);
            after = r;
        }
        // `super` from `src/a/b.rs` ([a, b]) climbs to `a`; from `src/a.rs` to the root.
        if climbed < module.len() {
            continue;
        }
        let start = text.len() - after.len();
        if let Some(group) = after.strip_prefix('{') {
            for (offset, name) in group_heads(group) {
                out.push((line_at[start + 1 + offset], name));
            }
        } else {
            let name = ident(after);
            if !name.is_empty() && name != "self" {
                out.push((line_at[start], name.to_string()));
            }
        }
    }
    out
}

/// The next `crate::` or `super::` that starts a path (not the tail of another word).
fn next_path_start(text: &str, from: usize) -> Option<usize> {
    let mut search = from;
    loop {
        let c = text[search..].find("crate::").map(|i| i + search);
        let s = text[search..].find("super::").map(|i| i + search);
        let pos = match (c, s) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let before = text[..pos].chars().next_back();
        if before.is_some_and(|ch| is_ident_char(ch) || ch == ':') {
            search = pos + 1;
            continue;
        }
        return Some(pos);
    }
}

/// The first identifier of each item of a `{a, b::c, d::{e}}` group (`group` starts
/// just after the `{`), with its byte offset in `group`.
fn group_heads(group: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut expect_item = true;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_item = true,
            c if expect_item && depth == 0 && is_ident_char(c) => {
                let name = ident(&group[i..]);
                if name != "self" {
                    out.push((i, name.to_string()));
                }
                expect_item = false;
            }
            _ => {}
        }
    }
    out
}

/// Every import of a higher layer, and every import across `cli`/`demo`, in `files`
/// ((path relative to the repository, text)).
fn check(files: &[(String, String)]) -> Findings {
    let mut found = Findings::default();
    for (file, text) in files {
        let Some(module) = module_path(file) else {
            continue;
        };
        let top = &module[0];
        if layer_of(top).is_none() && !found.unknown.contains(top) {
            found.unknown.push(top.clone());
        }
        if is_test_file(file) {
            continue;
        }
        for (line, to) in references(&module, &code_lines(text)) {
            if &to == top {
                continue;
            }
            let (Some(from_layer), Some(to_layer)) = (layer_of(top), layer_of(&to)) else {
                if layer_of(&to).is_none() && !found.unknown.contains(&to) {
                    found.unknown.push(to);
                }
                continue;
            };
            let apart = APART.contains(&top.as_str()) && APART.contains(&to.as_str());
            if to_layer > from_layer || apart {
                found.violations.push(Violation {
                    file: file.clone(),
                    line,
                    from: top.clone(),
                    to,
                });
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn source_tree() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).expect("under the root");
            let rel = rel.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            (rel, text)
        })
        .collect()
}

#[test]
fn every_import_in_src_points_down_the_layer_order() {
    let files = source_tree();
    assert!(
        files.len() > 50,
        "read only {} files under src/",
        files.len()
    );
    let found = check(&files);
    let mut problems: Vec<String> = found
        .unknown
        .iter()
        .map(|m| format!("module `{m}` is not in LAYERS: place it in the layer order (tests/layering.rs, ARCHITECTURE.md)"))
        .collect();
    let known = |v: &Violation| KNOWN_VIOLATIONS.contains(&(v.file.as_str(), v.to.as_str()));
    problems.extend(
        found
            .violations
            .iter()
            .filter(|v| !known(v))
            .map(ToString::to_string),
    );
    for (file, to) in KNOWN_VIOLATIONS {
        if !found
            .violations
            .iter()
            .any(|v| v.file == *file && v.to == *to)
        {
            problems.push(format!(
                "{file} no longer imports `{to}`: remove it from KNOWN_VIOLATIONS"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the layer order is broken:\n{}",
        problems.join("\n")
    );
}

// ----- the checker itself, on synthetic input -----

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

fn violations(list: &[(&str, &str)]) -> Vec<String> {
    let found = check(&files(list));
    assert!(found.unknown.is_empty(), "{:?}", found.unknown);
    found.violations.iter().map(ToString::to_string).collect()
}

#[test]
fn a_lower_layer_importing_a_higher_one_is_caught_with_file_line_and_layers() {
    let v = violations(&[(
        "src/proxy/table.rs",
        "use std::sync::Arc;\n\nuse crate::router::Target;\n",
    )]);
    assert_eq!(
        v,
        ["src/proxy/table.rs:3: `proxy` (layer 2) imports `router` (layer 3)"]
    );
}

#[test]
fn a_grouped_use_is_caught_for_each_module_it_names() {
    let v = violations(&[(
        "src/store/sqlite.rs",
        "use crate::{\n    domain::Slot,\n    orchestrator::Progress,\n    api::{self, ApiError},\n};\n",
    )]);
    assert_eq!(
        v,
        [
            "src/store/sqlite.rs:3: `store` (layer 1) imports `orchestrator` (layer 5)",
            "src/store/sqlite.rs:4: `store` (layer 1) imports `api` (layer 6)",
        ]
    );
}

#[test]
fn paths_in_code_and_super_chains_to_the_root_are_caught() {
    let v = violations(&[
        (
            "src/checks/health.rs",
            "fn f() { let _ = crate::daemon::serve; }\n",
        ),
        ("src/config/model.rs", "use super::super::proxy::Routes;\n"),
        ("src/domain/mod.rs", "use super::config::Config;\n"),
    ]);
    assert_eq!(
        v,
        [
            "src/checks/health.rs:1: `checks` (layer 2) imports `daemon` (layer 7)",
            "src/config/model.rs:1: `config` (layer 1) imports `proxy` (layer 2)",
            "src/domain/mod.rs:1: `domain` (layer 0) imports `config` (layer 1)",
        ]
    );
}

#[test]
fn downward_same_level_and_own_module_imports_pass() {
    let v = violations(&[
        (
            "src/api/mod.rs",
            "use crate::orchestrator::Controller;\nuse crate::domain::Slot;\n",
        ),
        (
            "src/router/mod.rs",
            "use crate::runtime::Runtime;\nuse crate::analysis::run;\n",
        ),
        (
            "src/proxy/h1/request.rs",
            "use super::wire::header;\nuse super::super::cookies;\nuse crate::proxy::stats;\n",
        ),
        ("src/lib.rs", "pub mod cli;\nuse crate::cli::main;\n"),
    ]);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn test_modules_test_files_and_comments_are_ignored() {
    let v = violations(&[
        (
            "src/domain/stats.rs",
            "//! See [`crate::api`].\nfn f() {} // crate::cli\nconst URL: &str = \"http://x\"; // crate::api\n#[cfg(test)]\nmod tests {\n    use crate::orchestrator::Machine;\n}\n",
        ),
        (
            "src/config/mod.rs",
            "#[cfg(test)]\nmod tests;\n\nuse crate::config::Config;\n",
        ),
        ("src/config/tests.rs", "use crate::daemon::serve;\n"),
        ("src/store/sqlite_tests.rs", "use crate::api::app;\n"),
    ]);
    assert!(v.is_empty(), "{v:?}");
    // A `#[cfg(test)] mod tests;` declaration skips only itself.
    let v = violations(&[(
        "src/config/mod.rs",
        "#[cfg(test)]\nmod tests;\n\nuse crate::api::app;\n",
    )]);
    assert_eq!(
        v,
        ["src/config/mod.rs:4: `config` (layer 1) imports `api` (layer 6)"]
    );
}

#[test]
fn cli_and_demo_may_not_import_each_other_either_way() {
    let v = violations(&[
        ("src/demo/story.rs", "use crate::cli::deploy::follow;\n"),
        ("src/cli/mod.rs", "fn f() { crate::demo::story::run(1); }\n"),
    ]);
    assert_eq!(
        v,
        [
            "src/demo/story.rs:1: `demo` (layer 8) imports `cli` (layer 8)",
            "src/cli/mod.rs:1: `cli` (layer 8) imports `demo` (layer 8)",
        ]
    );
}

#[test]
fn a_module_missing_from_the_order_is_reported() {
    let found = check(&files(&[
        ("src/kubernetes/mod.rs", "use crate::domain::Slot;\n"),
        ("src/router/mod.rs", "use crate::mesh::Mesh;\n"),
    ]));
    assert_eq!(found.unknown, ["kubernetes", "mesh"]);
}
