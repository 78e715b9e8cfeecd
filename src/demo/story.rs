//! `cutover demo`: the whole story, for real, in a temporary directory.
//!
//! It writes a config for the demo app, starts `cutover serve` (this same binary) as a
//! child process, puts a bounded live load on the proxy and then, through the API:
//! 1. deploys v1;
//! 2. deploys v2 under load: zero failed requests expected;
//! 3. deploys v3, whose health checks fail: rejected before any user traffic;
//! 4. deploys v4, which answers 20 % of requests with 500: switched in, then rolled
//!    back automatically within the watch window, with the reason recorded.
//!
//! It prints what happens and the failed-request counts, and exits 0 only if every act
//! ended as the story says.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::load::{Load, LoadStats};
use crate::api::client::{follow, ApiClient};
use crate::api::DeploymentView;
use crate::store::DeploymentOutcome;

/// Runs the story; `rate` is the load in requests per second.
pub async fn run(rate: u32) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("cutover-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let proxy_addr = free_addr()?;
    let api_addr = free_addr()?;
    let config_path = write_files(dir.path(), proxy_addr, api_addr)?;
    println!("cutover demo: working in {}", dir.path().display());
    println!("  config:  {}", config_path.display());
    println!("  proxy:   http://{proxy_addr}/   (try it while the demo runs)");
    println!("  API:     http://{api_addr}/api/v1/services");
    println!("  web:     http://{api_addr}/dashboard   (watch it live; token: demo-token)");

    let exe = std::env::current_exe().context("cannot find the cutover binary")?;
    let mut daemon = tokio::process::Command::new(&exe)
        .arg("--config")
        .arg(&config_path)
        .args(["serve", "--stop-on-exit"])
        .env("CUTOVER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `cutover serve`")?;

    let result = play(&config_path, api_addr, proxy_addr, rate).await;

    // Stop the daemon gracefully; it stops the demo app's processes on exit.
    if let Some(pid) = daemon.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .is_err()
    {
        let _ = daemon.kill().await;
    }
    match result {
        Ok(true) => {
            println!("\ndemo finished: every act ended as expected.");
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) => {
            println!("\ndemo finished, but something did not go as the story says (see above).");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
            eprintln!("daemon log:\n{log}");
            Err(e)
        }
    }
}

async fn play(
    config_path: &Path,
    api: SocketAddr,
    proxy: SocketAddr,
    rate: u32,
) -> anyhow::Result<bool> {
    let config = crate::config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_for_api(api).await?;
    let client = ApiClient::new(api, crate::daemon::client_token(&config));
    let mut all_good = true;

    act("1. deploy v1 (first release, nothing live yet)");
    let (d, _) = deploy(&client, "v1", None).await?;
    all_good &= expect(
        d.outcome == Some(DeploymentOutcome::Succeeded),
        "v1 is live",
    );

    let load = Load::start(proxy, "/", rate, 8, Duration::from_secs(600));
    tokio::time::sleep(Duration::from_secs(1)).await;

    act("2. deploy v2 under live load");
    let (d, seen) = deploy(&client, "v2", Some(&load)).await?;
    print_load(&seen);
    all_good &= expect(
        d.outcome == Some(DeploymentOutcome::Succeeded),
        "v2 is live",
    );
    all_good &= expect(
        seen.failed() == 0,
        &format!(
            "zero failed requests during v1 → v2 (saw {})",
            seen.failed()
        ),
    );
    all_good &= expect(seen.by_version.contains_key("v2"), "users reached v2");

    act("3. deploy v3, whose health checks fail");
    let (d, seen) = deploy(&client, "v3", Some(&load)).await?;
    print_load(&seen);
    all_good &= expect(
        d.outcome == Some(DeploymentOutcome::Failed),
        "v3 was rejected",
    );
    all_good &= expect(d.switched_at.is_none(), "traffic never moved to v3");
    all_good &= expect(
        !seen.by_version.contains_key("v3"),
        "no user request reached v3",
    );
    all_good &= expect(
        seen.failed() == 0,
        &format!("zero failed requests (saw {})", seen.failed()),
    );

    act("4. deploy v4, which answers 20% of requests with 500");
    let (d, seen) = deploy(&client, "v4", Some(&load)).await?;
    print_load(&seen);
    all_good &= expect(
        d.outcome == Some(DeploymentOutcome::RolledBack),
        "v4 was rolled back automatically",
    );
    println!("   reason recorded: {}", d.reason.as_deref().unwrap_or("-"));
    let status: Value = client.get("/api/v1/services/web").await?;
    all_good &= expect(status["live_version"] == "v2", "v2 is live again");
    println!(
        "   (the {} failed requests here are v4's own injected 500s during the watch, before the trigger fired)",
        seen.failed()
    );

    let total = load.stop().await;
    println!(
        "\nload summary: {} requests, {} ok, {} failed in total",
        total.sent,
        total.ok,
        total.failed()
    );
    println!("  answered by: {:?}", total.by_version);
    Ok(all_good)
}

async fn deploy(
    client: &ApiClient,
    version: &str,
    load: Option<&Load>,
) -> anyhow::Result<(crate::store::DeploymentRecord, LoadStats)> {
    let before = load.map(Load::stats).unwrap_or_default();
    let started: Value = client
        .post(
            "/api/v1/services/web/deploy",
            serde_json::json!({ "version": version, "triggered_by": "demo" }),
        )
        .await?;
    let id = started["deployment_id"]
        .as_i64()
        .context("no deployment id")?;
    follow(client, id, false).await?;
    let view: DeploymentView = client.get(&format!("/api/v1/deployments/{id}")).await?;
    let seen = load.map(|l| l.stats().since(&before)).unwrap_or_default();
    Ok((view.deployment, seen))
}

fn act(title: &str) {
    println!("\n=== {title}");
}

fn expect(ok: bool, what: &str) -> bool {
    println!("   {} {what}", if ok { "✓" } else { "✗ NOT:" });
    ok
}

fn print_load(s: &LoadStats) {
    println!(
        "   live load during this act: {} requests, {} ok, {} failed; answered by {:?}",
        s.sent,
        s.ok,
        s.failed(),
        s.by_version
    );
}

async fn wait_for_api(api: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(api).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the daemon did not start listening on {api} within 10s")
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?)
}

/// Writes the behaviour file and the config; returns the config's path.
fn write_files(
    dir: &Path,
    proxy: SocketAddr,
    api: SocketAddr,
) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let behaviour = dir.join("behaviour.toml");
    std::fs::write(
        &behaviour,
        "[v3]\nunhealthy = true\n\n[v4]\nerror_rate = 0.2\n",
    )?;
    let config = demo_config(&exe, &behaviour, proxy, api);
    let path = dir.join("cutover.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// The demo's config (also used by the end-to-end tests).
pub fn demo_config(exe: &Path, behaviour: &Path, proxy: SocketAddr, api: SocketAddr) -> String {
    format!(
        r#"[daemon]
state_dir = "state"

[api]
listen = "{api}"
token = "demo-token"

[services.web]
listen = "{proxy}"
warm_for = "60s"

[services.web.runtime]
kind = "process"
command = ["{exe}", "demo-app", "--port", "{{port}}", "--version", "{{version}}", "--behaviour", "{behaviour}"]
stop_grace = "5s"

[services.web.health]
interval = "200ms"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 3
deadline = "15s"

[[services.web.health.checks]]
name = "live"
http = {{ path = "/health" }}

[[services.web.health.checks]]
name = "deep"
http = {{ path = "/health/deep", json = {{ "checks.database" = "healthy" }} }}

[services.web.smoke]
max_p95_latency = "500ms"

[[services.web.smoke.steps]]
name = "create"
method = "POST"
path = "/items"
body = '{{"name": "widget"}}'
expect_status = 201
expect_json = {{ name = "widget" }}
capture = {{ item = "id" }}

[[services.web.smoke.steps]]
name = "read"
path = "/items/{{{{item}}}}"
expect_status = 200
expect_json = {{ name = "widget" }}

[[services.web.smoke.steps]]
name = "update"
method = "PUT"
path = "/items/{{{{item}}}}"
body = '{{"name": "gadget"}}'
expect_json = {{ name = "gadget" }}

[[services.web.smoke.steps]]
name = "delete"
method = "DELETE"
path = "/items/{{{{item}}}}"
expect_status = 204

[services.web.watch]
duration = "10s"
interval = "250ms"
window = "3s"
error_rate = {{ max = 0.05, for = "1s", min_requests = 20 }}
p95_latency = {{ max = "500ms", for = "2s", min_requests = 20 }}
health_failures = 3
"#,
        exe = exe.display(),
        behaviour = behaviour.display(),
    )
}
