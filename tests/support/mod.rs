//! The end-to-end harness: the real `cutover` binary, a temporary directory, free
//! loopback ports, and a guarantee that nothing it started outlives the test.
//!
//! Why it is built this way:
//! - every test gets its own directory, config, state and ports, so tests of one file
//!   can run in parallel without seeing each other;
//! - the daemon is a child process we can `kill -9` and start again on the same state
//!   directory, which is the only honest way to test crash safety;
//! - slot processes deliberately outlive their daemon (so a restart can adopt them), so
//!   cleanup cannot rely on the daemon: [`Harness`]'s `Drop` kills the daemon, then every
//!   process whose command line names this test's directory (each slot gets
//!   `--behaviour <dir>/behaviour.toml`, the daemon gets `-c <dir>/cutover.toml`),
//!   cross-checked with the pids the store holds. Killing is by pid, never by name.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use cutover::api::client::ApiClient;
use cutover::api::{DeploymentView, ServiceStatus};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The token the demo config sets.
pub const TOKEN: &str = "demo-token";
/// The service the demo config defines.
pub const SERVICE: &str = "web";

/// At most this many daemons (each with its releases and maybe a load) run at once
/// per test binary: the machine is small and the watch judges latency.
static DAEMONS: LazyLock<std::sync::Arc<Semaphore>> =
    LazyLock::new(|| std::sync::Arc::new(Semaphore::new(2)));

/// Fails the test instead of hanging it.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs` seconds.
pub async fn wait_until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(secs, what, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

mod ports;
pub mod postgres;
/// A free port on 127.0.0.1, outside the ephemeral range (see `ports.rs`).
pub use ports::free_addr;

/// What a CLI run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The stdout as JSON (for `--json` commands).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The demo config with edits; see [`Harness::builder`].
pub struct Builder {
    behaviour: String,
    edits: Vec<(String, String)>,
}

impl Builder {
    /// The behaviour file for the demo app: one table per version, e.g.
    /// `[v3]\nunhealthy = true\n`.
    pub fn behaviour(mut self, toml: &str) -> Self {
        self.behaviour = toml.to_string();
        self
    }

    /// Replaces `from` (which must occur in the demo config) with `to`.
    pub fn edit(mut self, from: &str, to: &str) -> Self {
        self.edits.push((from.to_string(), to.to_string()));
        self
    }

    /// The watch duration (the demo's is 10s).
    pub fn watch(self, duration: &str) -> Self {
        self.edit("duration = \"10s\"", &format!("duration = \"{duration}\""))
    }

    /// The health deadline (the demo's is 15s).
    pub fn health_deadline(self, duration: &str) -> Self {
        self.edit("deadline = \"15s\"", &format!("deadline = \"{duration}\""))
    }

    pub fn healthy_threshold(self, n: u32) -> Self {
        self.edit("healthy_threshold = 2", &format!("healthy_threshold = {n}"))
    }

    pub fn unhealthy_threshold(self, n: u32) -> Self {
        self.edit(
            "unhealthy_threshold = 3",
            &format!("unhealthy_threshold = {n}"),
        )
    }

    /// Drops the watch's p95-latency trigger (for tests whose point is not latency,
    /// so a busy machine cannot roll a good release back).
    pub fn without_latency_trigger(self) -> Self {
        self.edit(
            "p95_latency = { max = \"500ms\", for = \"2s\", min_requests = 20 }\n",
            "",
        )
    }

    /// Writes the files; the daemon is not started yet.
    pub async fn build(self) -> Harness {
        let permit = DAEMONS.clone().acquire_owned().await.expect("semaphore");
        let dir = tempfile::Builder::new()
            .prefix("cutover-e2e-")
            .tempdir()
            .expect("temp dir");
        let proxy = free_addr();
        let api = free_addr();
        let behaviour = dir.path().join("behaviour.toml");
        std::fs::write(&behaviour, &self.behaviour).expect("write behaviour");
        let mut config =
            cutover::demo::story::demo_config(Path::new(exe()), &behaviour, proxy, api);
        for (from, to) in &self.edits {
            assert!(
                config.contains(from.as_str()),
                "the demo config no longer contains {from:?}; update the harness"
            );
            config = config.replace(from.as_str(), to);
        }
        let config_path = dir.path().join("cutover.toml");
        std::fs::write(&config_path, &config).expect("write config");
        Harness {
            dir,
            config_path,
            proxy,
            api,
            daemon: None,
            starts: 0,
            _permit: permit,
            api_tls: None,
        }
    }
}

/// A test's world: directory, config, ports and (once started) the daemon.
pub struct Harness {
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub proxy: SocketAddr,
    pub api: SocketAddr,
    daemon: Option<Child>,
    starts: u32,
    _permit: OwnedSemaphorePermit,
    /// Set when the test makes the API serve HTTPS: how its clients trust it.
    pub api_tls: Option<cutover::tls::ClientTls>,
}

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

impl Harness {
    /// The demo config (`cutover::demo::story::demo_config`) with an empty behaviour
    /// file; adjust it with the builder's methods.
    pub fn builder() -> Builder {
        Builder {
            behaviour: String::new(),
            edits: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes another file into the test's directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Replaces `from` (which must occur) in the config file; the daemon reads it at its
    /// next start.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        assert!(text.contains(from), "the config does not contain {from:?}");
        std::fs::write(&self.config_path, text.replace(from, to)).expect("write config");
    }

    /// Starts `cutover serve` and waits until its API answers.
    pub async fn start(&mut self) {
        self.start_with_env(&[]).await;
    }

    /// [`Harness::start`] with extra environment variables for the daemon (fault
    /// injection, e.g. `CUTOVER_FAULT_PAUSE_AT`).
    pub async fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        self.starts += 1;
        let log = std::fs::File::create(self.daemon_log_path(self.starts)).expect("daemon log");
        let child = std::process::Command::new(exe())
            .arg("-c")
            .arg(&self.config_path)
            .arg("serve")
            .env("CUTOVER_LOG", "info")
            .envs(env.iter().copied())
            .env_remove("CUTOVER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cutover serve");
        self.daemon = Some(child);
        let client = self.client();
        let started = tokio::time::Instant::now();
        loop {
            if client.get::<Value>("/healthz").await.is_ok() {
                return;
            }
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "cutover serve exited with {status} before its API answered:\n{}",
                    self.daemon_logs()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!("the API did not answer within 30s:\n{}", self.daemon_logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon
            .as_ref()
            .expect("the daemon is not running")
            .id()
    }

    /// Sends `signal` to the daemon and waits for it to exit.
    pub async fn stop_daemon(&mut self, signal: Signal) {
        let mut child = self.daemon.take().expect("the daemon is not running");
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        within(30, "the daemon to exit", async {
            loop {
                if child.try_wait().expect("wait for the daemon").is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// `kill -9` the daemon (its slot processes keep running, as after a crash).
    pub async fn crash(&mut self) {
        self.stop_daemon(Signal::SIGKILL).await;
    }

    /// Starts the daemon again on the same config and state directory.
    pub async fn restart(&mut self) {
        self.start().await;
    }

    fn daemon_log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("daemon-{n}.log"))
    }

    /// Every daemon log so far, and the slot logs (for failure messages).
    pub fn daemon_logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let text = std::fs::read_to_string(self.daemon_log_path(n)).unwrap_or_default();
            out.push_str(&format!("--- daemon log #{n}\n{text}\n"));
        }
        for slot in ["blue", "green"] {
            let path = self
                .state_dir()
                .join("logs")
                .join(format!("{SERVICE}-{slot}.log"));
            if let Ok(text) = std::fs::read_to_string(path) {
                out.push_str(&format!("--- {slot} log\n{text}\n"));
            }
        }
        out
    }

    /// An API client with the config's token.
    pub fn client(&self) -> ApiClient {
        self.client_with_token(Some(TOKEN))
    }

    /// An API client with the given token (or none).
    pub fn client_with_token(&self, token: Option<&str>) -> ApiClient {
        let client = ApiClient::new(self.api, token.map(str::to_string));
        match &self.api_tls {
            Some(tls) => client.with_tls(tls),
            None => client,
        }
    }

    /// `GET /api/v1/services/web`.
    pub async fn status(&self) -> ServiceStatus {
        self.client()
            .get(&format!("/api/v1/services/{SERVICE}"))
            .await
            .unwrap_or_else(|e| panic!("GET service status: {e}\n{}", self.daemon_logs()))
    }

    /// The deployment of `version` as `cutover history web --json` prints it.
    pub async fn history_entry(&self, version: &str) -> Value {
        let history = self.cli(&["history", SERVICE, "--json"]).await;
        assert_eq!(history.code, 0, "{history}");
        history
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .find(|d| d["version"] == version)
            .unwrap_or_else(|| panic!("no {version} in the history: {history}"))
            .clone()
    }

    /// `GET /api/v1/deployments/{id}`.
    pub async fn deployment(&self, id: i64) -> DeploymentView {
        self.client()
            .get(&format!("/api/v1/deployments/{id}"))
            .await
            .unwrap_or_else(|e| panic!("GET deployment {id}: {e}"))
    }

    /// Starts a deployment through the API; returns its id.
    pub async fn deploy_no_wait(&self, version: &str) -> i64 {
        let v: Value = self
            .client()
            .post(
                &format!("/api/v1/services/{SERVICE}/deploy"),
                serde_json::json!({ "version": version }),
            )
            .await
            .unwrap_or_else(|e| panic!("deploy {version}: {e}"));
        v["deployment_id"].as_i64().expect("deployment_id")
    }

    /// Waits until deployment `id` is in `phase` (per the store); panics if it finishes
    /// first.
    pub async fn wait_for_phase(&self, id: i64, phase: &str, secs: u64) {
        wait_until(
            secs,
            &format!("deployment #{id} to reach phase {phase}"),
            || async {
                let d = self.deployment(id).await.deployment;
                assert!(
                    d.outcome.is_none(),
                    "deployment #{id} finished ({:?}: {:?}) before reaching {phase}\n{}",
                    d.outcome,
                    d.reason,
                    self.daemon_logs()
                );
                (d.phase == phase).then_some(())
            },
        )
        .await
    }

    /// Waits until deployment `id` has finished; returns its record.
    pub async fn wait_finished(&self, id: i64, secs: u64) -> cutover::store::DeploymentRecord {
        wait_until(secs, &format!("deployment #{id} to finish"), || async {
            let d = self.deployment(id).await.deployment;
            d.outcome.is_some().then_some(d)
        })
        .await
    }

    /// Runs `cutover -c <config> <args>` and captures its output.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with_config(&self.config_path, args).await
    }

    /// Runs `cutover -c <config> <args>` with another config file.
    pub async fn cli_with_config(&self, config: &Path, args: &[&str]) -> CliOutput {
        run_cli(config, args).await
    }

    /// Waits (up to 30 s) until the proxy answers `/` with `hello from {version}`.
    pub async fn wait_serving(&self, version: &str) {
        let expected = format!("hello from {version}");
        wait_until(30, &format!("the proxy to answer {expected}"), || async {
            match self.get_proxy("/").await {
                Ok((200, body)) if body.trim() == expected => Some(()),
                _ => None,
            }
        })
        .await;
    }

    /// `GET http://proxy{path}`: status and body.
    pub async fn get_proxy(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.proxy, path).await
    }

    /// Pids of running slot processes of this test (from `/proc`, not from the daemon).
    pub fn slot_processes(&self) -> BTreeSet<u32> {
        our_processes(self.dir.path())
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("demo-app"))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Every process of this test, then the pids the store holds (if they are ours),
    /// killed by pid with SIGKILL.
    fn kill_everything(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut pids: BTreeSet<u32> = our_processes(self.dir.path())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if let Ok(store) = cutover::store::Store::open(&self.state_dir().join("cutover.db")) {
            for svc in store.services().unwrap_or_default() {
                for s in &svc.slots {
                    if let Some(pid) = s.handle.as_deref().and_then(pid_of_handle) {
                        if cmdline_of(pid)
                            .is_some_and(|c| c.contains(&*self.dir.path().to_string_lossy()))
                        {
                            pids.insert(pid);
                        }
                    }
                }
            }
        }
        for pid in pids {
            let p = Pid::from_raw(pid as i32);
            // Slots lead their own process group: take the whole tree.
            let _ = killpg(p, Signal::SIGKILL);
            let _ = kill(p, Signal::SIGKILL);
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.daemon_logs());
        }
        self.kill_everything();
    }
}

/// Runs the binary with `-c config args...` (60 s at most).
pub async fn run_cli(config: &Path, args: &[&str]) -> CliOutput {
    let mut cmd = tokio::process::Command::new(exe());
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("CUTOVER_CONFIG")
        .env_remove("CUTOVER_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    clean_env(&mut cmd);
    let out = within(120, &format!("cutover {}", args.join(" ")), cmd.output())
        .await
        .expect("run cutover");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One GET over a fresh connection: status and body, or why there was no answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let fut = async {
        let resp = client.get(uri).await.map_err(|e| format!("{e:#}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The pid's command line (NUL separators as spaces), unless it is gone or a zombie.
pub fn cmdline_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .to_string();
    if state == "Z" || state == "X" {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Live processes whose command line names `dir` (other than this test process).
pub fn our_processes(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| cmdline_of(pid).map(|c| (pid, c)))
        .filter(|(_, c)| c.contains(&needle))
        .collect()
}

/// The pids (`handle`) of the slots the status reports running.
pub fn running_slot_pids(status: &ServiceStatus) -> BTreeSet<u32> {
    status
        .slots
        .iter()
        .filter(|s| s.running)
        .filter_map(|s| pid_of_handle(s.record.handle.as_deref()?))
        .collect()
}

/// The pid (`handle`) of one slot, if the store has one.
pub fn slot_pid(status: &ServiceStatus, slot: cutover::domain::Slot) -> Option<u32> {
    let view = status.slots.iter().find(|s| s.record.slot == slot)?;
    pid_of_handle(view.record.handle.as_deref()?)
}

/// The pid in a process runtime's handle (`pid:start_time`, or a bare pid).
pub fn pid_of_handle(handle: &str) -> Option<u32> {
    handle.split(':').next()?.parse().ok()
}

/// Variables of the outer environment that would change what the CLI does (the daemon
/// to call, the token, who is asking): removed so a test sees only what it sets.
pub const CLI_ENV: [&str; 10] = [
    "CUTOVER_CONFIG",
    "CUTOVER_API_URL",
    "CUTOVER_TOKEN",
    "CUTOVER_ACTOR",
    "CUTOVER_LOG",
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "BUILDKITE_BUILD_CREATOR",
    "CIRCLE_USERNAME",
    "BITBUCKET_STEP_TRIGGERER_UUID",
];

fn clean_env(cmd: &mut tokio::process::Command) {
    for var in CLI_ENV {
        cmd.env_remove(var);
    }
}

/// Runs the binary in `dir` (where there is no config file unless the test wrote one)
/// with only `env` set of the CLI's variables: how a CI runner calls a remote daemon.
pub async fn run_bare(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = tokio::process::Command::new(exe());
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    clean_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let out = within(120, &format!("cutover {}", args.join(" ")), cmd.output())
        .await
        .expect("run cutover");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
