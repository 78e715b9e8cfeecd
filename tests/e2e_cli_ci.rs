//! The CLI as a CI pipeline meets it, with the real binary and a daemon: no config
//! file (the daemon's address and token from `CUTOVER_API_URL`/`CUTOVER_TOKEN`),
//! `--json` on every command (errors as JSON too, with the same exit codes), `-q`/`-v`,
//! who triggered a deployment, production confirmation (refused without a terminal,
//! typed on a real pseudo-terminal), `plan` changing nothing and `logs`. The commands
//! that need no daemon are in `cli_offline.rs`.

mod support;

use serde_json::Value;
use support::{run_bare, run_cli, CliOutput, Harness, TOKEN};

/// A daemon with v1 live (2s watch).
async fn daemon_with_v1() -> Harness {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    h
}

fn api_env(h: &Harness) -> (String, String) {
    (format!("http://{}", h.api), TOKEN.to_string())
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_daemon_command_works_with_env_vars_and_no_config_file_and_answers_json() {
    let h = daemon_with_v1().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, token) = api_env(&h);
    let env = [
        ("CUTOVER_API_URL", url.as_str()),
        ("CUTOVER_TOKEN", token.as_str()),
        ("CUTOVER_ACTOR", "ci-bot"),
    ];
    let run = |args: Vec<&'static str>| {
        let dir = dir.path().to_path_buf();
        async move { run_bare(&dir, &args, &env).await }
    };

    let out = run(vec!["status", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()[0]["live_version"], "v1", "{out}");
    let out = run(vec!["status", "web", "--json"]).await;
    assert_eq!(out.json()["name"], "web", "{out}");
    assert!(out.json()["environment"].is_null(), "{out}");

    let out = run(vec!["check", "web", "--slot", "blue", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["healthy"], true, "{out}");

    let out = run(vec!["plan", "web", "v2", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["target_slot"], "green", "{out}");

    let out = run(vec!["logs", "web", "--slot", "blue", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let lines = out.json()["lines"].as_array().cloned().unwrap_or_default();
    assert!(
        lines.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("demo-app v1 listening on"))),
        "the demo app's start line is not in its slot's log:\n{out}"
    );

    // Deploy from "CI": the actor comes from CUTOVER_ACTOR.
    let out = run(vec!["deploy", "web", "v2", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let rec = out.json();
    assert_eq!(
        (rec["version"].as_str(), rec["outcome"].as_str()),
        (Some("v2"), Some("succeeded")),
        "{out}"
    );
    assert_eq!(rec["triggered_by"], "ci-bot", "{out}");

    // Nothing in progress: abort/promote/pause/resume fail with a JSON error, exit 1.
    for action in ["abort", "promote", "pause", "resume"] {
        let out = run(vec![action, "web", "--json"]).await;
        assert_eq!(out.code, 1, "{action}: {out}");
        let (code, _) = json_error(&out);
        assert!(
            code == "nothing_in_progress" || code.contains("canary"),
            "{action}: {out}"
        );
    }
    // An unknown service: the daemon's 404 is a usage error (exit 2) in JSON.
    let out = run(vec!["history", "nosuch", "--json"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(json_error(&out).0, "unknown_service", "{out}");

    // The --actor flag wins over CUTOVER_ACTOR.
    let out = run_bare(
        dir.path(),
        &["rollback", "web", "--json", "--actor", "release-manager"],
        &env,
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let out = run(vec!["history", "web", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let history = out.json();
    let by: Vec<&str> = history
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| d["triggered_by"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(by[..2], ["release-manager", "ci-bot"], "{out}");

    // A CI system's variable names the user when nothing else does.
    let out = run_bare(
        dir.path(),
        &["deploy", "web", "v3", "--no-wait", "--json"],
        &[
            ("CUTOVER_API_URL", url.as_str()),
            ("CUTOVER_TOKEN", token.as_str()),
            ("GITHUB_ACTOR", "octocat"),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let id = out.json()["deployment_id"].as_i64().expect("deployment_id");
    let d = h.wait_finished(id, 60).await;
    assert_eq!(d.triggered_by, "github:octocat");

    // The token from the flag works too; a wrong one is a JSON 401 (exit 2).
    let out = run_bare(
        dir.path(),
        &[
            "--api", &url, "--token", "wrong", "--json", "deploy", "web", "v4",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(json_error(&out).0, "unauthorized", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_nothing_and_verbose_shows_the_api_calls() {
    let h = daemon_with_v1().await;
    let out = h.cli(&["-q", "deploy", "web", "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "", "{out}");
    let out = h.cli(&["-q", "abort", "web"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("no deployment of `web`"),
        "errors still print:\n{out}"
    );
    let out = h.cli(&["-v", "status", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("→ GET http://"), "{out}");
    assert!(
        out.stderr.contains("← 200 GET /api/v1/services/web"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_preview_url_answer_json() {
    let h = Harness::builder().build().await;
    let out = h.cli(&["validate", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["ok"], true);
    assert_eq!(out.json()["services"][0], "web");
    let broken = h.write("broken.toml", "[services.web]\nlisten = 5\n");
    let out = run_cli(&broken, &["validate", "--json"]).await;
    assert_eq!(out.code, 2, "{out}");
    let (code, msg) = json_error(&out);
    assert_eq!(code, "invalid_config");
    assert!(msg.contains("services.web.listen"), "{msg}");
    let out = h.cli(&["preview-url", "web", "--json"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(json_error(&out).0, "preview_off");
}

/// A daemon whose config marks everything production.
async fn production_daemon() -> Harness {
    let mut h = Harness::builder()
        .edit("[daemon]", "environment = \"production\"\n\n[daemon]")
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    h.start().await;
    h
}

/// Runs `cutover args...` on a pseudo-terminal (python's `pty`), typing `answer` when
/// asked for the service name. Returns the exit code and everything the terminal showed.
async fn on_a_terminal(h: &Harness, answer: &str, args: &[&str]) -> (i32, String) {
    const SCRIPT: &str = r#"
import os, pty, select, sys
answer, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, sent = b"", False
while True:
    r, _, _ = select.select([fd], [], [], 90)
    if not r:
        break
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    if not sent and b"Type the service name" in out:
        os.write(fd, (answer + "\n").encode())
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg(answer)
        .arg(support::exe())
        .arg("-c")
        .arg(&h.config_path)
        .args(args)
        .kill_on_drop(true);
    for var in support::CLI_ENV {
        cmd.env_remove(var);
    }
    let out = support::within(120, "cutover on a pty", cmd.output())
        .await
        .expect("python3 (needed for the pseudo-terminal test) runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_service_is_changed_only_with_yes_or_its_name_typed_on_a_terminal() {
    let h = production_daemon().await;
    let status = h.status().await;
    assert_eq!(status.environment.as_deref(), Some("production"));

    // No terminal, no --yes: refused before anything is asked of the daemon.
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--yes"), "{out}");
    let out = h.cli(&["deploy", "web", "v1", "--json"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(json_error(&out).0, "confirmation_required");
    // Without a config file too (the daemon reports the environment).
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, token) = api_env(&h);
    let out = run_bare(
        dir.path(),
        &["deploy", "web", "v1"],
        &[("CUTOVER_API_URL", &url), ("CUTOVER_TOKEN", &token)],
    )
    .await;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        h.status().await.last_deployment.is_none(),
        "a refused deploy started something"
    );

    // On a terminal, the wrong name: not confirmed, nothing changes.
    let (code, shown) = on_a_terminal(&h, "wbe", &["deploy", "web", "v1"]).await;
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("PRODUCTION"), "{shown}");
    let s = h.status().await;
    assert!(
        s.last_deployment.is_none() && s.active_deployment.is_none(),
        "{s:?}"
    );

    // The right name: it deploys.
    let (code, shown) = on_a_terminal(&h, "web", &["deploy", "web", "v1"]).await;
    assert_eq!(code, 0, "{shown}");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));

    // --yes goes ahead without a terminal, for deploy and rollback alike.
    let out = h.cli(&["deploy", "web", "v2", "--yes"]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = h.cli(&["rollback", "web"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v2"));
    let out = h.cli(&["rollback", "web", "-y"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
    // Read-only commands never ask.
    let out = h.cli(&["status", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = h.cli(&["plan", "web", "v3"]).await;
    assert_eq!(out.code, 0, "{out}");
}

/// Everything `plan` could change, as the API and the proxy show it.
async fn world(h: &Harness) -> (Value, Value, Value, Option<cutover::domain::Slot>, String) {
    let c = h.client();
    let mut status: Value = c.get("/api/v1/services/web").await.expect("status");
    for s in status["slots"].as_array_mut().expect("slots") {
        for k in ["requests", "errors", "in_flight"] {
            s.as_object_mut().expect("slot").remove(k);
        }
    }
    let slots = status["slots"].clone();
    let history: Value = c
        .get("/api/v1/services/web/history?limit=100")
        .await
        .expect("history");
    let events: Value = c
        .get("/api/v1/services/web/events?limit=1000")
        .await
        .expect("events");
    let observed: Option<cutover::domain::Slot> =
        serde_json::from_value(status["observed_live"].clone()).expect("observed_live");
    let (code, body) = h.get_proxy("/").await.expect("the proxy answers");
    (
        slots,
        history,
        events,
        observed,
        format!("{code} {}", body.trim()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_dry_run_show_the_deploy_and_change_nothing() {
    let h = daemon_with_v1().await;
    let processes = h.slot_processes();
    let before = world(&h).await;
    assert_eq!(before.4, "200 hello from v1");

    let out = h.cli(&["plan", "web", "v2", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let p = out.json();
    assert_eq!(p["target_slot"], "green", "{out}");
    assert_eq!(p["from_slot"], "blue", "{out}");
    assert_eq!(p["replaces_version"], "v1", "{out}");
    assert!(p["blocked_by"].is_null(), "{out}");
    let checks: Vec<&str> = p["health"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        checks.contains(&"live") && checks.contains(&"deep"),
        "{out}"
    );
    assert!(!p["smoke"].as_array().expect("smoke").is_empty(), "{out}");
    assert_eq!(p["strategy"]["kind"], "blue-green", "{out}");
    assert_eq!(
        p["router"]["change"], "traffic moves from blue to green",
        "{out}"
    );
    assert!(
        p["watch"]["triggers"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.contains("error rate")))),
        "{out}"
    );
    assert!(p["database"].is_null(), "{out}");
    assert!(p["steps"].as_array().is_some_and(|s| s.len() >= 4), "{out}");

    let out = h.cli(&["deploy", "web", "v2", "--dry-run", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["target_slot"], "green", "{out}");
    let out = h.cli(&["plan", "web", "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("dry run"), "{out}");
    assert!(out.stdout.contains("replaces: v1 on blue"), "{out}");

    // A bad version is refused like a deploy's.
    let out = h.cli(&["plan", "web", "bad version!", "--json"]).await;
    assert_eq!(out.code, 2, "{out}");

    let after = world(&h).await;
    assert_eq!(after.0, before.0, "slot state changed");
    assert_eq!(after.1, before.1, "history changed");
    assert_eq!(after.2, before.2, "events were recorded");
    assert_eq!(after.3, before.3, "the router changed");
    assert_eq!(after.4, before.4, "the proxy answers differently");
    assert_eq!(
        h.slot_processes(),
        processes,
        "a release was started or stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_what_the_release_printed_and_follow_new_lines() {
    let h = daemon_with_v1().await;
    let out = h.cli(&["logs", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("demo-app v1 listening on"), "{out}");
    let out = h.cli(&["logs", "web", "--lines", "0", "--json"]).await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(json_error(&out).0, "bad_request");
    let (code, body) = support::http_get(h.api, "/api/v1/services/web/logs")
        .await
        .expect("GET logs");
    assert_eq!(code, 401, "logs need the token: {body}");

    // Follow green (empty), deploy v2 into it: its start line arrives.
    let mut follower = tokio::process::Command::new(support::exe())
        .args(["-c"])
        .arg(&h.config_path)
        .args(["logs", "web", "--slot", "green", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn logs --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let out = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = support::within(30, "the followed log to show v2's start", async {
        loop {
            let l = lines
                .next_line()
                .await
                .expect("read")
                .expect("the follower ended early");
            if l.contains("demo-app v2 listening on") {
                return l;
            }
        }
    })
    .await;
    let text: String = serde_json::from_str(&line).expect("each followed line is a JSON string");
    assert!(text.starts_with("demo-app v2"), "{text}");
    let _ = follower.kill().await;
}
