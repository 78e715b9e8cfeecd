//! The configuration the docs show is configuration the real reader accepts (issue
//! #15, item 9): every ```toml block of README.md and every `examples/*.toml` is
//! validated with `cutover::config::parse`, as `cutover validate` would.
//!
//! A README block that is not a whole config is marked with the HTML comment
//! `<!-- config: fragment -->` on the line before its fence (invisible when rendered);
//! it is merged over a minimal config (a process service for each service it names,
//! plus its own tables) before validating. A block showing alternatives for one table
//! (`<!-- config: alternatives -->`) is split at its blank lines and each part is
//! validated as a fragment. And the README's copy of the annotated example is the
//! file itself.

use std::path::Path;

const MARK: &str = "<!-- config: fragment -->";
const ALTERNATIVES: &str = "<!-- config: alternatives -->";

struct Block {
    line: usize,
    text: String,
    fragment: bool,
    alternatives: bool,
}

/// Every ```toml block, its indentation (list items) removed.
fn toml_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if fence.starts_with("```toml") {
            let indent = lines[i].len() - fence.len();
            let mark = if i > 0 { lines[i - 1].trim() } else { "" };
            let fragment = mark == MARK;
            let alternatives = mark == ALTERNATIVES;
            let start = i + 1;
            let mut j = start;
            while j < lines.len() && !lines[j].trim_start().starts_with("```") {
                j += 1;
            }
            let body: Vec<&str> = lines[start..j]
                .iter()
                .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
                .collect();
            out.push(Block {
                line: i + 1,
                text: body.join("\n") + "\n",
                fragment,
                alternatives,
            });
            i = j;
        }
        i += 1;
    }
    out
}

/// Deep merge: tables merge key by key, anything else in `over` wins.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A fragment inside a minimal config: every service it names gets a listen address
/// and a process runtime unless the fragment gives its own.
fn wrap(fragment: &str) -> Result<String, String> {
    let frag: toml::Value = toml::from_str(fragment).map_err(|e| format!("not TOML: {e}"))?;
    let mut base: toml::Value =
        toml::from_str("[api]\ntoken = \"a-token-for-the-docs-test-of-40-characters\"\n").unwrap();
    let names: Vec<String> = frag
        .get("services")
        .and_then(|s| s.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_else(|| vec!["web".to_string()]);
    for (i, name) in names.iter().enumerate() {
        let svc: toml::Value = toml::from_str(&format!(
            "[services.{name}]\nlisten = \"127.0.0.1:{}\"\n[services.{name}.runtime]\nkind = \"process\"\n\
             command = [\"./app\", \"--port\", \"{{port}}\"]\n",
            18_000 + i
        ))
        .unwrap();
        let given = frag.get("services").and_then(|s| s.get(name));
        let mut svc = svc;
        if let Some(given) = given {
            // A service with its own runtime or an external router keeps its own keys.
            if given.get("runtime").is_some() {
                svc["services"][name.as_str()]
                    .as_table_mut()
                    .unwrap()
                    .remove("runtime");
            }
            if given.get("router").is_some() || given.get("listen").is_some() {
                svc["services"][name.as_str()]
                    .as_table_mut()
                    .unwrap()
                    .remove("listen");
            }
        }
        merge(&mut base, svc);
    }
    merge(&mut base, frag);
    Ok(toml::to_string(&base).unwrap())
}

/// Files the README's examples name on the reader's machine (certificates under
/// `/etc/cutover/`): a problem that is only "cannot read" such a file is not the
/// example's mistake; every other problem is.
const READERS_FILES: &str = ": cannot read /etc/cutover/";

fn validate(what: &str, text: &str) -> Result<(), String> {
    match cutover::config::parse(text, Some(Path::new("/srv/app/cutover.toml"))) {
        Ok(_) => Ok(()),
        Err(e) => {
            let shown = e.to_string();
            let problems: Vec<&str> = shown.lines().skip(1).collect();
            if !problems.is_empty() && problems.iter().all(|l| l.contains(READERS_FILES)) {
                return Ok(());
            }
            Err(format!("{what}:\n{shown}\n--- as validated:\n{text}"))
        }
    }
}

#[test]
fn every_toml_block_in_the_readme_validates_with_the_real_config_reader() {
    let readme = include_str!("../README.md");
    let blocks = toml_blocks(readme);
    assert!(
        blocks.len() >= 10,
        "only {} toml blocks found",
        blocks.len()
    );
    // The preview example reads its secret from the environment, as documented.
    std::env::set_var(
        "CUTOVER_PREVIEW_SECRET",
        "a-preview-secret-for-the-docs-test",
    );
    let mut failures = Vec::new();
    for b in &blocks {
        let parts: Vec<(String, String, bool)> = if b.alternatives {
            b.text
                .split("\n\n")
                .filter(|p| !p.trim().is_empty())
                .enumerate()
                .map(|(n, p)| {
                    let what = format!("README.md line {} (alternative {})", b.line, n + 1);
                    (what, p.to_string(), true)
                })
                .collect()
        } else {
            let kind = if b.fragment {
                "fragment"
            } else {
                "whole config"
            };
            let what = format!("README.md line {} ({kind})", b.line);
            vec![(what, b.text.clone(), b.fragment)]
        };
        for (what, text, fragment) in parts {
            let text = if fragment {
                match wrap(&text) {
                    Ok(t) => t,
                    Err(e) => {
                        failures.push(format!("{what}: {e}"));
                        continue;
                    }
                }
            } else {
                text
            };
            if let Err(e) = validate(&what, &text) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} README config blocks do not validate (mark a partial one with `{MARK}` \
         on the line before its fence, blocks of alternatives with `{ALTERNATIVES}`):\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_example_config_file_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            validate(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no examples/*.toml found");
}

#[test]
fn the_readmes_annotated_example_is_examples_cutover_toml() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/cutover.toml");
    let first_line = example.lines().next().unwrap();
    let block = toml_blocks(readme)
        .into_iter()
        .find(|b| b.text.starts_with(first_line))
        .expect("the README shows the annotated example");
    assert!(
        block.text == example,
        "README.md line {} differs from examples/cutover.toml: copy the file into the README",
        block.line
    );
}
