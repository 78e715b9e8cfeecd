//! Local processes: each slot is one child process started from the service's command.
//!
//! Why the details matter:
//! - each release runs in its own session (and so its own process group): a Ctrl-C or
//!   a hang-up aimed at the daemon's terminal does not reach the live service, a stop
//!   reaches the whole tree, and where the kernel groups CPU time by session
//!   (autogroup, the default on most distributions outside systemd services) the
//!   release gets a CPU share of its own instead of sharing the daemon's (and so the
//!   proxy's);
//! - processes outlive the daemon: a restarted daemon adopts them by pid (persisted in
//!   the store) instead of starting duplicates;
//! - stdout and stderr go to `<state_dir>/logs/<service>-<slot>.log`, so a failed start
//!   can be explained with the last lines the release wrote (rotated by size and at
//!   each start, see `log_files.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::ports::free_loopback_port;
use super::{ExtraInstance, RunningSlot, Runtime, RuntimeError, SlotSpec, SlotStatus};
use crate::config::{ProcessRuntimeConfig, StopSignal};
use crate::domain::routing::default_identity;
use crate::domain::Slot;

/// Makes the child the leader of a new session (and process group) before it runs.
#[allow(unsafe_code)]
fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only
    // setsid(2), which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// A process we started (with its `Child` to reap) or adopted (pid only).
struct Proc {
    pid: u32,
    child: Option<Child>,
}

pub struct ProcessRuntime {
    service: String,
    cfg: ProcessRuntimeConfig,
    log_dir: PathBuf,
    /// Rotated copies of a slot's log kept.
    log_files: u32,
    /// One entry per slot; the async mutex also serialises start/stop of a slot.
    slots: [Mutex<Option<Proc>>; 2],
}

impl ProcessRuntime {
    pub fn new(service: &str, cfg: ProcessRuntimeConfig, log_dir: PathBuf) -> Self {
        Self {
            service: service.to_string(),
            cfg,
            log_dir,
            log_files: 5,
            slots: [Mutex::new(None), Mutex::new(None)],
        }
    }

    /// How many rotated copies of a slot's log to keep (`[retention] slot_log_files`).
    pub fn with_log_files(mut self, keep: u32) -> Self {
        self.log_files = keep;
        self
    }

    fn log_path(&self, slot: Slot) -> PathBuf {
        self.log_dir.join(format!("{}-{}.log", self.service, slot))
    }

    fn err(&self, slot: Slot, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Start {
            service: self.service.clone(),
            slot,
            reason: reason.into(),
        }
    }

    fn port_for(&self, slot: Slot) -> Result<u16, RuntimeError> {
        if let Some(ports) = self.cfg.ports {
            return Ok(ports.get(slot));
        }
        free_loopback_port().map_err(|e| self.err(slot, format!("no free loopback port: {e}")))
    }

    /// Spawns the release of `spec` on `port` in a session of its own, its output to
    /// `log_path`.
    fn spawn(
        &self,
        spec: &SlotSpec,
        port: u16,
        log_path: &std::path::Path,
    ) -> Result<Child, RuntimeError> {
        let slot = spec.slot;
        let argv: Vec<String> = self
            .cfg
            .command
            .iter()
            .map(|a| substitute(a, spec, port))
            .collect();
        std::fs::create_dir_all(&self.log_dir).map_err(|e| {
            self.err(
                slot,
                format!("cannot create {}: {e}", self.log_dir.display()),
            )
        })?;
        // The release's output may hold secrets: readable by the daemon's user only.
        // Appending, so the daemon can rotate it by size (`log_files.rs`); the previous
        // release's log becomes `.1`.
        let log = super::log_files::open_slot_log(log_path, self.log_files)
            .map_err(|e| self.err(slot, format!("cannot create {}: {e}", log_path.display())))?;
        let log2 = log.try_clone().map_err(|e| self.err(slot, e.to_string()))?;

        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("PORT", port.to_string())
            .env("CUTOVER_VERSION", &spec.version)
            .env("CUTOVER_SLOT", slot.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(false);
        new_session(&mut cmd);
        for (k, v) in &self.cfg.env {
            cmd.env(k, substitute(v, spec, port));
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cfg.workdir {
            cmd.current_dir(dir);
        }
        cmd.spawn()
            .map_err(|e| self.err(slot, format!("cannot run `{}`: {e}", argv[0])))
    }

    async fn stop_locked(&self, slot: Slot, entry: &mut Option<Proc>) {
        let Some(mut proc) = entry.take() else { return };
        let pgid = Pid::from_raw(proc.pid as i32);
        let _ = killpg(pgid, signal_of(self.cfg.stop_signal));
        let deadline = tokio::time::Instant::now() + self.cfg.stop_grace;
        while tokio::time::Instant::now() < deadline {
            if !proc_alive(&mut proc) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(service = %self.service, %slot, pid = proc.pid, "stop grace period over; killing");
        let _ = killpg(pgid, Signal::SIGKILL);
        if let Some(child) = proc.child.as_mut() {
            let _ = child.wait().await;
        }
    }
}

fn signal_of(s: StopSignal) -> Signal {
    match s {
        StopSignal::Term => Signal::SIGTERM,
        StopSignal::Int => Signal::SIGINT,
        StopSignal::Quit => Signal::SIGQUIT,
        StopSignal::Hup => Signal::SIGHUP,
        StopSignal::Kill => Signal::SIGKILL,
    }
}

/// Whether the process still runs (a zombie does not count).
fn proc_alive(proc: &mut Proc) -> bool {
    match proc.child.as_mut() {
        Some(child) => matches!(child.try_wait(), Ok(None)),
        None => pid_alive(proc.pid),
    }
}

fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// When process `pid` started (clock ticks since boot, `/proc/<pid>/stat` field 22).
/// With the pid it identifies a process for good: a pid reused after a reboot or
/// a wrap-around has another start time, while `exec` keeps both.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The runtime handle: `pid:start_time`.
fn handle_of(pid: u32) -> String {
    match start_time(pid) {
        Some(t) => format!("{pid}:{t}"),
        None => pid.to_string(),
    }
}

/// Parses a handle and checks it still names the same living process.
fn same_process(handle: &str) -> Option<u32> {
    let (pid, started) = match handle.split_once(':') {
        Some((p, t)) => (p.parse().ok()?, Some(t.parse::<u64>().ok()?)),
        None => (handle.parse().ok()?, None),
    };
    let alive = pid_alive(pid) && started.is_none_or(|t| start_time(pid) == Some(t));
    alive.then_some(pid)
}

/// Replaces `{version}`, `{port}`, `{slot}` and `{service}`.
pub fn substitute(template: &str, spec: &SlotSpec, port: u16) -> String {
    template
        .replace("{version}", &spec.version)
        .replace("{port}", &port.to_string())
        .replace("{slot}", spec.slot.as_str())
        .replace("{service}", &spec.service)
}

/// The last `n` lines of a file (empty if it cannot be read).
pub fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &SlotSpec) -> Result<RunningSlot, RuntimeError> {
        let slot = spec.slot;
        let mut entry = self.slots[slot.index()].lock().await;
        self.stop_locked(slot, &mut entry).await;

        let port = self.port_for(slot)?;
        let log_path = self.log_path(slot);
        let child = self.spawn(spec, port, &log_path)?;
        let pid = child
            .id()
            .ok_or_else(|| self.err(slot, "exited immediately"))?;
        tracing::info!(service = %self.service, %slot, version = %spec.version, pid, port, "started");
        *entry = Some(Proc {
            pid,
            child: Some(child),
        });
        Ok(RunningSlot {
            endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
            handle: handle_of(pid),
            identity: default_identity(&self.service, slot),
        })
    }

    async fn start_extra(&self, spec: &SlotSpec) -> Result<ExtraInstance, RuntimeError> {
        let port = free_loopback_port()
            .map_err(|e| self.err(spec.slot, format!("no free loopback port: {e}")))?;
        let log_path = self.log_dir.join(format!("{}-proof.log", self.service));
        let mut child = self.spawn(spec, port, &log_path)?;
        let pid = child.id().map(|p| p as i32);
        tracing::info!(service = %self.service, version = %spec.version, ?pid, port, "started an extra instance");
        Ok(ExtraInstance::new(
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            move || {
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.start_kill();
            },
        ))
    }

    async fn stop(&self, _service: &str, slot: Slot) -> Result<(), RuntimeError> {
        let mut entry = self.slots[slot.index()].lock().await;
        self.stop_locked(slot, &mut entry).await;
        Ok(())
    }
    async fn status(&self, _service: &str, slot: Slot) -> SlotStatus {
        let mut entry = self.slots[slot.index()].lock().await;
        let Some(proc) = entry.as_mut() else {
            return SlotStatus::NotRunning;
        };
        if let Some(child) = proc.child.as_mut() {
            return match child.try_wait() {
                Ok(None) => SlotStatus::Running { restarts: 0 },
                Ok(Some(status)) => SlotStatus::Exited {
                    detail: status.to_string(),
                },
                Err(e) => SlotStatus::Exited {
                    detail: e.to_string(),
                },
            };
        }
        if pid_alive(proc.pid) {
            SlotStatus::Running { restarts: 0 }
        } else {
            SlotStatus::Exited {
                detail: format!("process {} is gone", proc.pid),
            }
        }
    }

    async fn adopt(
        &self,
        _service: &str,
        slot: Slot,
        running: &RunningSlot,
    ) -> Option<RunningSlot> {
        let pid = same_process(&running.handle)?;
        *self.slots[slot.index()].lock().await = Some(Proc { pid, child: None });
        tracing::info!(service = %self.service, %slot, pid, "adopted running process");
        Some(running.clone())
    }

    async fn log_tail(&self, _service: &str, slot: Slot, lines: usize) -> Vec<String> {
        tail_lines(&self.log_path(slot), lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(script: &str, grace: Duration, dir: &std::path::Path) -> ProcessRuntime {
        let cfg = ProcessRuntimeConfig {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: [(
                "GREETING".to_string(),
                "hello {version} on {port}".to_string(),
            )]
            .into(),
            workdir: None,
            stop_signal: StopSignal::Term,
            stop_grace: grace,
            ports: None,
        };
        ProcessRuntime::new("web", cfg, dir.join("logs"))
    }

    fn spec(version: &str) -> SlotSpec {
        SlotSpec {
            service: "web".into(),
            slot: Slot::Blue,
            version: version.into(),
            deployment: None,
            env: Vec::new(),
        }
    }

    async fn wait_for_log(rt: &ProcessRuntime, needle: &str) -> Vec<String> {
        for _ in 0..100 {
            let tail = rt.log_tail("web", Slot::Blue, 5).await;
            if tail.iter().any(|l| l.contains(needle)) {
                return tail;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rt.log_tail("web", Slot::Blue, 5).await
    }

    #[tokio::test]
    async fn a_started_process_gets_its_placeholders_and_logs_to_its_slot_file() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(
            "echo \"$GREETING\"; exec sleep 30",
            Duration::from_secs(5),
            dir.path(),
        );
        let running = rt.start(&spec("v7")).await.unwrap();
        let tail = wait_for_log(&rt, "hello").await;
        assert_eq!(
            tail,
            vec![format!("hello v7 on {}", running.endpoint.port())]
        );
        assert_eq!(
            rt.status("web", Slot::Blue).await,
            SlotStatus::Running { restarts: 0 }
        );
        rt.stop("web", Slot::Blue).await.unwrap();
        assert_eq!(rt.status("web", Slot::Blue).await, SlotStatus::NotRunning);
    }

    #[tokio::test]
    async fn a_process_that_exits_is_reported_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime("echo boom >&2; exit 3", Duration::from_secs(1), dir.path());
        rt.start(&spec("v1")).await.unwrap();
        let mut status = SlotStatus::NotRunning;
        for _ in 0..100 {
            status = rt.status("web", Slot::Blue).await;
            if matches!(status, SlotStatus::Exited { .. }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            status,
            SlotStatus::Exited {
                detail: "exit status: 3".into()
            }
        );
        assert_eq!(
            rt.log_tail("web", Slot::Blue, 10).await,
            vec!["boom".to_string()]
        );
    }

    #[tokio::test]
    async fn a_process_that_ignores_the_stop_signal_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
            Duration::from_millis(300),
            dir.path(),
        );
        let running = rt.start(&spec("v1")).await.unwrap();
        wait_for_log(&rt, "ready").await;
        let pid = same_process(&running.handle).unwrap();
        rt.stop("web", Slot::Blue).await.unwrap();
        assert!(!pid_alive(pid), "the process survived its stop");
    }

    #[tokio::test]
    async fn a_new_runtime_adopts_a_running_process_and_can_stop_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = runtime("exec sleep 30", Duration::from_secs(5), dir.path());
        let running = first.start(&spec("v1")).await.unwrap();
        // A restarted daemon: a fresh runtime that only knows what the store kept.
        let second = runtime("exec sleep 30", Duration::from_secs(5), dir.path());
        assert_eq!(
            second.adopt("web", Slot::Blue, &running).await,
            Some(running.clone())
        );
        assert_eq!(
            second.status("web", Slot::Blue).await,
            SlotStatus::Running { restarts: 0 }
        );
        second.stop("web", Slot::Blue).await.unwrap();
        let pid: u32 = running.handle.split(':').next().unwrap().parse().unwrap();
        // The first runtime still holds the Child; reap it so the pid is really gone.
        assert!(matches!(
            first.status("web", Slot::Blue).await,
            SlotStatus::Exited { .. }
        ));
        assert!(!pid_alive(pid));
    }

    #[tokio::test]
    async fn a_reused_pid_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = other.id().unwrap();
        let rt = runtime("exec sleep 30", Duration::from_secs(1), dir.path());
        // The store remembered this pid with another start time: a different process.
        let stale = start_time(pid).unwrap() + 1;
        let claimed = RunningSlot {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            handle: format!("{pid}:{stale}"),
            identity: "web-blue".into(),
        };
        assert_eq!(rt.adopt("web", Slot::Blue, &claimed).await, None);
        let current = RunningSlot {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            handle: handle_of(pid),
            identity: "web-blue".into(),
        };
        assert!(rt.adopt("web", Slot::Blue, &current).await.is_some());
        other.kill().await.unwrap();
    }
}
