//! The CLI without a daemon, with the real binary: the error when no daemon address is
//! given anywhere, `--json` of the `db` commands that need no database server, `init`
//! (each runtime's starting config validates), shell completions (`bash -n`) and the man
//! page (rendered by groff, every subcommand in it).

mod support;

use std::path::Path;

use support::{run_bare, run_cli, CliOutput};

/// The `{"error": {"code", "message"}}` a `--json` command prints on failure.
fn json_error(out: &CliOutput) -> (String, String) {
    let v = out.json();
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code:\n{out}"));
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message:\n{out}"));
    (code.to_string(), msg.to_string())
}

#[tokio::test]
async fn with_no_daemon_address_anywhere_the_cli_exits_2_naming_the_flag_the_variable_and_the_file()
{
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [&["status"][..], &["deploy", "web", "v2"], &["logs", "web"]] {
        let out = run_bare(dir.path(), args, &[]).await;
        assert_eq!(out.code, 2, "{out}");
        for what in ["--api", "CUTOVER_API_URL", "cutover.toml"] {
            assert!(out.stderr.contains(what), "{what} not named:\n{out}");
        }
        let mut json_args = vec!["--json"];
        json_args.extend_from_slice(args);
        let out = run_bare(dir.path(), &json_args, &[]).await;
        assert_eq!(out.code, 2, "{out}");
        let (code, msg) = json_error(&out);
        assert_eq!(code, "usage");
        assert!(msg.contains("CUTOVER_API_URL"), "{msg}");
    }
    // A URL that is not one is a usage error too.
    let out = run_bare(dir.path(), &["status"], &[("CUTOVER_API_URL", "ftp://x")]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("http://HOST:PORT"), "{out}");
}

#[tokio::test]
async fn db_commands_answer_json_and_their_errors_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let migrations = dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).expect("mkdir");
    std::fs::write(
        migrations.join("001_items.up.sql"),
        "CREATE TABLE items (id int);\n",
    )
    .expect("write");
    let cfg = dir.path().join("cutover.toml");
    std::fs::write(
        &cfg,
        r#"
[services.web]
listen = "127.0.0.1:2"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]

[services.web.database]
url = "postgres://nobody@127.0.0.1:1/none"
migrations = "migrations"
"#,
    )
    .expect("write config");
    // Every db command but `lint --all` goes through the daemon: none runs here, so
    // a JSON error naming it, exit 1.
    let out = run_cli(&cfg, &["db", "backups", "web", "--json"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(json_error(&out).0, "unreachable", "{out}");
    // `lint --all` reads only the files: no daemon, no database.
    let out = run_cli(&cfg, &["db", "lint", "web", "--all", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["passed"], true, "{out}");
    assert_eq!(out.json()["files"], 1, "{out}");
    // No database there: a JSON error on stdout, exit 1.
    let out = run_cli(&cfg, &["db", "status", "web", "--json"]).await;
    assert_eq!(out.code, 1, "{out}");
    json_error(&out);
}

#[tokio::test]
async fn init_writes_a_config_that_validates_for_each_runtime_and_never_overwrites_without_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    for runtime in ["process", "docker", "compose", "kubernetes"] {
        let file = format!("{runtime}.toml");
        let out = run_bare(
            dir.path(),
            &["-c", &file, "init", "--runtime", runtime],
            &[],
        )
        .await;
        assert_eq!(out.code, 0, "{out}");
        let text = std::fs::read_to_string(dir.path().join(&file)).expect("written");
        assert!(text.contains(&format!("kind = \"{runtime}\"")), "{text}");
        assert!(
            text.lines().filter(|l| l.starts_with('#')).count() > 5,
            "not commented"
        );
        let out = run_bare(dir.path(), &["-c", &file, "validate"], &[]).await;
        assert_eq!(out.code, 0, "{runtime}: {out}");
    }
    std::fs::write(dir.path().join("cutover.toml"), "# mine\n").expect("write");
    let out = run_bare(dir.path(), &["init"], &[]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--force"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cutover.toml")).expect("read"),
        "# mine\n"
    );
    let out = run_bare(dir.path(), &["init", "--force", "--json"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["runtime"], "process");
    let out = run_bare(dir.path(), &["validate"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
}

/// Subcommand names of `cutover --help`.
fn subcommands(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new(support::exe())
        .arg("--help")
        .current_dir(dir)
        .output()
        .expect("cutover --help");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .split("Options:")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[tokio::test]
async fn completions_parse_and_the_man_page_renders_with_every_subcommand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let commands = subcommands(dir.path());
    assert!(commands.len() >= 20, "{commands:?}");

    let out = run_bare(dir.path(), &["completions", "bash"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    let script = dir.path().join("cutover.bash");
    std::fs::write(&script, &out.stdout).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for c in &commands {
        assert!(out.stdout.contains(c.as_str()), "bash completion lacks {c}");
    }
    let out = run_bare(dir.path(), &["completions", "zsh"], &[]).await;
    assert!(out.stdout.starts_with("#compdef cutover"), "{out}");
    let out = run_bare(dir.path(), &["completions", "fish"], &[]).await;
    assert!(out.stdout.contains("complete -c cutover"), "{out}");

    let out = run_bare(dir.path(), &["man"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(".TH cutover 1"), "no roff header");
    for c in &commands {
        let section = format!(".SH \"CUTOVER {}\"", c.to_uppercase());
        assert!(
            out.stdout.contains(&section),
            "the man page lacks {section}"
        );
    }
    let page = dir.path().join("cutover.1");
    std::fs::write(&page, &out.stdout).expect("write");
    let groff = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff (package groff-base) renders the man page");
    assert!(groff.status.success());
    assert_eq!(
        String::from_utf8_lossy(&groff.stderr),
        "",
        "groff warns about the page"
    );
}
