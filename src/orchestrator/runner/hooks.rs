//! Running hooks: the operator's commands and HTTP calls at named points of a
//! deployment (`Effect::RunHooks`), answered with `Event::Hooks`.
//!
//! The hooks of one point run in config order, as one task that answers through the
//! runner's channel (like a health round), so an `abort` is handled while they run;
//! the runner aborts the task when the machine leaves the hook phase, and dropping it
//! kills the running command's process group. The first failure of a hook with
//! `on_failure = "abort"` ends the point (later hooks do not run) and is the only
//! failure the machine hears of; `warn` failures are recorded, logged and answered as
//! success. Every hook that ran is recorded like a check (phase `hook:<point>`), with
//! its exit or HTTP status and the last 4 KiB of its output.
//!
//! Commands run without a shell, in the service's working directory, in a process
//! group of their own, with `CUTOVER_*` variables describing the deployment.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Input, Runner};
use crate::checks::{human_duration, CheckResult};
use crate::config::{Hook, HookAction, HookPoint, OnFailure};
use crate::orchestrator::machine::{Event, Machine};

/// How much of a hook's output is kept: the end, where the error usually is.
pub(crate) const OUTPUT_TAIL: usize = 4 * 1024;

/// What one hook did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HookRun {
    pub ok: bool,
    /// `exit 0`, `exit 1`, `killed by signal 9`, `HTTP 204 No Content`,
    /// `timed out after 30s`, `could not run ...`.
    pub status: String,
    /// stdout and stderr (or the response body), the last [`OUTPUT_TAIL`] bytes,
    /// control characters other than newline and tab removed.
    pub output: String,
    pub duration: Duration,
}

mod http;

impl HookRun {
    fn failed(status: String, started: Instant) -> HookRun {
        HookRun {
            ok: false,
            status,
            output: String::new(),
            duration: started.elapsed(),
        }
    }

    /// The status, then the output on the lines after it.
    pub fn detail(&self) -> String {
        match self.output.is_empty() {
            true => self.status.clone(),
            false => format!("{}\n{}", self.status, self.output),
        }
    }
}

/// The name a point's results are recorded under (`hook:pre_switch`).
pub(crate) fn record_phase(point: HookPoint) -> &'static str {
    match point {
        HookPoint::BeforeStart => "hook:before_start",
        HookPoint::PreSwitch => "hook:pre_switch",
        HookPoint::PostSwitch => "hook:post_switch",
        HookPoint::AfterSuccess => "hook:after_success",
        HookPoint::OnRollback => "hook:on_rollback",
    }
}

/// The machine's event and the records for the hooks that ran (pure). Only a failed
/// hook with `on_failure = "abort"` makes a failure; a `warn` failure is recorded as
/// failed, says so in its detail, and the machine hears success.
pub(crate) fn answer(point: HookPoint, runs: Vec<(&Hook, HookRun)>) -> (Event, Vec<CheckResult>) {
    let mut failure = None;
    let mut results = Vec::new();
    for (hook, mut run) in runs {
        if !run.ok && hook.on_failure == OnFailure::Warn {
            run.status
                .push_str(" (on_failure = warn: the deployment carried on)");
        }
        if !run.ok {
            match hook.on_failure {
                OnFailure::Abort => {
                    let last = run.output.lines().rev().find(|l| !l.trim().is_empty());
                    failure.get_or_insert(match (run.status.starts_with("timed out"), last) {
                        (true, _) | (false, None) => {
                            format!("`{}` failed: {}", hook.name, run.status)
                        }
                        (false, Some(line)) => format!(
                            "`{}` failed: {}: {}",
                            hook.name,
                            run.status,
                            truncate(line.trim(), 200)
                        ),
                    });
                }
                OnFailure::Warn => {}
            }
        }
        results.push(CheckResult {
            name: hook.name.clone(),
            ok: run.ok,
            detail: run.detail(),
            duration: run.duration,
        });
    }
    (Event::Hooks { point, failure }, results)
}

/// Runs one hook, bounded by its timeout.
pub(crate) async fn run_hook(hook: &Hook, env: &[(String, String)]) -> HookRun {
    match &hook.action {
        HookAction::Command { argv, dir } => run_command(argv, dir, env, hook.timeout).await,
        HookAction::Http(h) => http::run(h, hook.timeout).await,
    }
}

/// The variables that describe the deployment to a hook command.
pub(crate) const ENV_NAMES: [&str; 8] = [
    "CUTOVER_SERVICE",
    "CUTOVER_VERSION",
    "CUTOVER_DEPLOYMENT_ID",
    "CUTOVER_HOOK_POINT",
    "CUTOVER_SLOT",
    "CUTOVER_SLOT_ADDR",
    "CUTOVER_PREVIOUS_SLOT",
    "CUTOVER_PREVIOUS_VERSION",
];

/// Kills a process group when dropped (a timeout, or the task aborted), unless the
/// leader exited on its own first.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Aborts a helper task (an output reader) when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The last bytes written to stdout and stderr, interleaved as they arrived.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * OUTPUT_TAIL {
            let cut = self.0.len() - OUTPUT_TAIL;
            self.0.drain(..cut);
        }
    }
}

fn pump(mut from: impl AsyncRead + Unpin + Send + 'static, tail: Arc<Mutex<Tail>>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            tail.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]);
        }
    }))
}

async fn run_command(
    argv: &[String],
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> HookRun {
    let started = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        return HookRun::failed("empty command".into(), started);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !dir.as_os_str().is_empty() {
        cmd.current_dir(dir);
    }
    for name in ENV_NAMES {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return HookRun::failed(format!("could not run `{program}`: {e}"), started),
    };
    let mut group = GroupKill(child.id().map(|pid| pid as i32));
    let tail = Arc::new(Mutex::new(Tail::default()));
    let readers = [
        child.stdout.take().map(|o| pump(o, tail.clone())),
        child.stderr.take().map(|e| pump(e, tail.clone())),
    ];
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // Exited by itself: whatever it left running in its group may stay.
            group.0 = None;
            // Give the readers a moment to drain what is left in the pipes (a
            // background process holding them open does not hold the hook up).
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                for r in readers.iter().flatten() {
                    while !r.0.is_finished() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
            .await;
            Some(status)
        }
        Ok(Err(e)) => {
            drop(group);
            return HookRun::failed(format!("waiting for `{program}` failed: {e}"), started);
        }
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            // The group is gone, so the pipes close: read what it wrote.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                for r in readers.iter().flatten() {
                    while !r.0.is_finished() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
            .await;
            None
        }
    };
    drop(readers);
    let output = clean(&tail.lock().unwrap_or_else(|e| e.into_inner()).0);
    let (ok, status) = match status {
        None => (
            false,
            format!("timed out after {}", human_duration(timeout)),
        ),
        Some(s) if s.success() => (true, "exit 0".to_string()),
        Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => (false, format!("exit {code}")),
            (None, Some(sig)) => (false, format!("killed by signal {sig}")),
            (None, None) => (false, s.to_string()),
        },
    };
    HookRun {
        ok,
        status,
        output,
        duration: started.elapsed(),
    }
}

/// The last [`OUTPUT_TAIL`] bytes as text, control characters other than newline and
/// tab removed, without trailing blank space.
pub(crate) fn clean(bytes: &[u8]) -> String {
    let tail = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL)..];
    let text: String = String::from_utf8_lossy(tail)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    text.trim_end().to_string()
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Runner {
    /// The environment a hook command of `point` gets.
    fn hook_env(&self, machine: &Machine, point: HookPoint) -> Vec<(String, String)> {
        let plan = machine.plan();
        let mut env = vec![
            ("CUTOVER_SERVICE", self.service.name.clone()),
            ("CUTOVER_VERSION", self.version.clone()),
            ("CUTOVER_DEPLOYMENT_ID", self.id.to_string()),
            ("CUTOVER_HOOK_POINT", point.as_str().to_string()),
            ("CUTOVER_SLOT", plan.target.as_str().to_string()),
        ];
        if let Some(addr) = self.addr_of(plan.target) {
            env.push(("CUTOVER_SLOT_ADDR", addr.to_string()));
        }
        if let Some(from) = plan.from {
            env.push(("CUTOVER_PREVIOUS_SLOT", from.as_str().to_string()));
            if let Some(v) = self.slots[from.index()].version.clone() {
                env.push(("CUTOVER_PREVIOUS_VERSION", v));
            }
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Runs the hooks of `point` in a task; answers `Input::Checked` with
    /// `Event::Hooks`.
    pub(super) fn spawn_hooks(
        &mut self,
        machine: &Machine,
        point: HookPoint,
        tx: &mpsc::Sender<Input>,
    ) {
        let hooks: Vec<Hook> = self
            .service
            .hooks
            .iter()
            .filter(|h| h.at == point)
            .cloned()
            .collect();
        let env = self.hook_env(machine, point);
        let (service, id) = (self.service.name.clone(), self.id);
        let tx = tx.clone();
        let task = tokio::spawn(async move {
            let mut runs = Vec::new();
            for hook in &hooks {
                let run = run_hook(hook, &env).await;
                let stop = !run.ok && hook.on_failure == OnFailure::Abort;
                if run.ok {
                    tracing::info!(%service, id, hook = %hook.name, %point, status = %run.status, "hook passed");
                } else {
                    tracing::warn!(%service, id, hook = %hook.name, %point, status = %run.status, on_failure = hook.on_failure.as_str(), "hook failed");
                }
                runs.push((hook, run));
                if stop {
                    break;
                }
            }
            let (event, results) = answer(point, runs);
            let _ = tx
                .send(Input::Checked {
                    phase: record_phase(point),
                    results,
                    event,
                })
                .await;
        });
        self.hooks_task = Some((point, task));
    }

    /// Kills the hooks still running when the machine has left their phase (an abort,
    /// a rollback): dropping the task kills the command's process group.
    pub(super) fn cancel_stale_hooks(&mut self, machine: &Machine) {
        use crate::orchestrator::machine::Phase;
        if let Some((point, task)) = &self.hooks_task {
            if machine.phase() != Phase::Hooks(*point) {
                task.abort();
                self.hooks_task = None;
            }
        }
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
