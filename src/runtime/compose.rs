//! Docker Compose: each slot is one Compose project, `<service>-<slot>`, so a stack of
//! frontend + backend + worker moves as one release.
//!
//! Why it is shaped this way:
//! - there is no Rust Compose library, so projects are driven with the command line,
//!   `docker compose` (v2 plugin) or `docker-compose` (v1), whichever is installed
//!   (detected once; when neither is, every start says so);
//! - the slot's host port and the version reach the file through the environment
//!   (`${CUTOVER_PORT}`, `${CUTOVER_VERSION}`, ...), which Compose interpolates;
//! - what runs is then read from the Engine API by Compose's own labels
//!   (`com.docker.compose.project` / `.service`), not by parsing CLI output: the
//!   `public` components must run (and be healthy, if they have a HEALTHCHECK); the
//!   restarts of every component count, so a crash-looping worker rolls the stack back;
//! - the database compatibility proof starts the live release once more as its own
//!   project, `<service>-extra`, on a free port with Cutover's variables (the scratch
//!   copy's URL) in the environment, brought down when the proof ends;
//! - `stop` stops the project's containers (kept, with their logs, like `compose
//!   stop`); the project is removed (`compose down`) when its slot is started again.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::ListContainersOptions;
use tokio::process::Command;
use tokio::sync::{Mutex, OnceCell};

use super::docker::engine::{self, message, Engine};
use super::docker::spec::{exit_detail, health_of, restarts, status_of};
use super::ports::free_loopback_port;
use super::process::substitute;
use super::{
    ExtraInstance, RunningSlot, Runtime, RuntimeError, RuntimeHealth, SlotSpec, SlotStatus,
};
use crate::config::ComposeRuntimeConfig;
use crate::domain::Slot;

const PROJECT_LABEL: &str = "com.docker.compose.project";
const COMPONENT_LABEL: &str = "com.docker.compose.service";
/// How long a fresh stack's public components must stay up for the start to count.
const SETTLE: Duration = Duration::from_millis(1500);

/// The Compose command line found on this machine: program and leading arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeCli {
    pub program: String,
    pub args: Vec<String>,
}

impl ComposeCli {
    /// `docker compose` if the v2 plugin answers, else `docker-compose`.
    pub async fn detect() -> Result<ComposeCli, String> {
        let candidates = [
            ComposeCli {
                program: "docker".into(),
                args: vec!["compose".into()],
            },
            ComposeCli {
                program: "docker-compose".into(),
                args: vec![],
            },
        ];
        for cli in candidates {
            let ok = Command::new(&cli.program)
                .args(&cli.args)
                .arg("version")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(cli);
            }
        }
        Err(
            "neither `docker compose` (the Compose v2 plugin) nor `docker-compose` (v1) is \
             installed or runnable; install one of them (Debian: `apt-get install \
             docker-compose-plugin` or `apt-get install docker-compose`)"
                .into(),
        )
    }

    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The containers of a project this daemon started or adopted.
#[derive(Debug, Clone)]
struct Current {
    project: String,
    /// Restart count of each container when started or adopted.
    baseline: HashMap<String, u32>,
}

pub struct ComposeRuntime {
    service: String,
    cfg: ComposeRuntimeConfig,
    cli: OnceCell<ComposeCli>,
    engine: Engine,
    slots: [Mutex<Option<Current>>; 2],
}

impl ComposeRuntime {
    pub fn new(service: &str, cfg: ComposeRuntimeConfig) -> Self {
        Self {
            service: service.to_string(),
            cfg,
            cli: OnceCell::new(),
            engine: Engine::default(),
            slots: [Mutex::new(None), Mutex::new(None)],
        }
    }

    /// The project of a slot: `<service>-<slot>`.
    pub fn project(&self, slot: Slot) -> String {
        format!("{}-{}", self.service, slot)
    }

    fn err(&self, slot: Slot, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Start {
            service: self.service.clone(),
            slot,
            reason: reason.into(),
        }
    }

    /// The project the database proof starts outside both slots: `<service>-extra`.
    pub fn extra_project(&self) -> String {
        format!("{}-extra", self.service)
    }

    /// Runs `compose -p <project> -f <file> <args>` with `env`; stdout, or why not.
    async fn compose(
        &self,
        project: &str,
        env: &[(String, String)],
        args: &[&str],
    ) -> Result<String, String> {
        let cli = self.cli.get_or_try_init(ComposeCli::detect).await?;
        let mut cmd = Command::new(&cli.program);
        cmd.args(&cli.args)
            .arg("-p")
            .arg(project)
            .arg("-f")
            .arg(&self.cfg.file)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = self.cfg.file.parent() {
            cmd.current_dir(dir);
        }
        let limit = self.cfg.stop_grace + Duration::from_secs(300);
        let what = format!("`{} {}`", cli.display(), args.join(" "));
        let out = tokio::time::timeout(limit, cmd.output())
            .await
            .map_err(|_| format!("{what} did not finish within {}s", limit.as_secs()))?
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            tail[tail.len().saturating_sub(5)..].join(" | ")
        ))
    }

    /// The environment Compose interpolates the file with.
    fn environment(&self, spec: &SlotSpec, port: u16) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .cfg
            .env
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v, spec, port)))
            .collect();
        env.extend([
            ("CUTOVER_PORT".to_string(), port.to_string()),
            ("CUTOVER_VERSION".to_string(), spec.version.clone()),
            ("CUTOVER_SLOT".to_string(), spec.slot.as_str().to_string()),
            ("CUTOVER_SERVICE".to_string(), spec.service.clone()),
        ]);
        // Cutover's own variables (the slot's database URL): the file passes them on
        // (`environment: [DATABASE_URL]`).
        env.extend(spec.env.iter().cloned());
        env
    }

    fn grace(&self) -> String {
        self.cfg.stop_grace.as_secs().max(1).to_string()
    }

    /// The project's containers (running or not), inspected, by component name.
    async fn containers(
        &self,
        project: &str,
    ) -> Result<Vec<(String, ContainerInspectResponse)>, String> {
        let docker = self.engine.get().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={project}")],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| message(&e))?;
        let mut out = Vec::new();
        for summary in list {
            let Some(id) = summary.id else { continue };
            let component = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPONENT_LABEL).cloned())
                .unwrap_or_default();
            if let Ok(c) = docker.inspect_container(&id, None).await {
                out.push((component, c));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Why the stack does not count as running: a public component without a
    /// running container. `None` when all of them run.
    fn missing_public(&self, containers: &[(String, ContainerInspectResponse)]) -> Option<String> {
        for name in &self.cfg.public {
            let mine: Vec<_> = containers.iter().filter(|(c, _)| c == name).collect();
            if mine.is_empty() {
                return Some(format!("component {name} has no container"));
            }
            for (_, c) in mine {
                if let SlotStatus::Exited { detail } = status_of(c) {
                    return Some(format!("component {name}: {detail}"));
                }
            }
        }
        None
    }

    async fn launch(&self, spec: &SlotSpec) -> Result<(SocketAddr, Current), String> {
        let port = match self.cfg.ports {
            Some(p) => p.get(spec.slot),
            None => free_port()?,
        };
        self.launch_project(spec, &self.project(spec.slot), port)
            .await
    }

    /// Brings `project` up (after removing what it held) with `spec`'s release on
    /// `port`, and waits for it to settle.
    async fn launch_project(
        &self,
        spec: &SlotSpec,
        project: &str,
        port: u16,
    ) -> Result<(SocketAddr, Current), String> {
        let env = self.environment(spec, port);
        let grace = self.grace();
        self.compose(project, &env, &["down", "--remove-orphans", "-t", &grace])
            .await
            .map_err(|e| format!("cannot remove the project's previous containers: {e}"))?;
        self.compose(project, &env, &["up", "-d", "--remove-orphans"])
            .await?;
        let project = project.to_string();
        let started = tokio::time::Instant::now();
        loop {
            let containers = self.containers(&project).await?;
            if let Some(why) = self.missing_public(&containers) {
                return Err(format!("the stack stopped right after its start: {why}"));
            }
            if let Some((name, c)) = containers.iter().find(|(_, c)| restarts(c) > 0) {
                return Err(format!(
                    "component {name} crashed right after its start ({})",
                    exit_detail(c)
                ));
            }
            if started.elapsed() >= SETTLE {
                let baseline = baseline_of(&containers);
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                return Ok((addr, Current { project, baseline }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn free_port() -> Result<u16, String> {
    free_loopback_port().map_err(|e| format!("no free loopback port: {e}"))
}

fn baseline_of(containers: &[(String, ContainerInspectResponse)]) -> HashMap<String, u32> {
    containers
        .iter()
        .filter_map(|(_, c)| Some((c.id.clone()?, restarts(c))))
        .collect()
}

#[async_trait]
impl Runtime for ComposeRuntime {
    fn kind(&self) -> &'static str {
        "compose"
    }

    async fn start(&self, spec: &SlotSpec) -> Result<RunningSlot, RuntimeError> {
        let slot = spec.slot;
        let mut entry = self.slots[slot.index()].lock().await;
        *entry = None;
        let (addr, current) = self.launch(spec).await.map_err(|e| self.err(slot, e))?;
        tracing::info!(service = %self.service, %slot, version = %spec.version, project = %current.project, %addr, "compose project started");
        let handle = current.project.clone();
        *entry = Some(current);
        Ok(RunningSlot {
            endpoint: addr.into(),
            identity: handle.clone(),
            handle,
        })
    }

    /// The project `<service>-extra` on a free port with `spec.env` added; brought
    /// down (`compose down`) in the background when the proof drops it.
    async fn start_extra(&self, spec: &SlotSpec) -> Result<ExtraInstance, RuntimeError> {
        let project = self.extra_project();
        let port = free_port().map_err(|e| self.err(spec.slot, e))?;
        let down = |rt: &ComposeRuntime| {
            let env = rt.environment(spec, port);
            let grace = rt.grace();
            let project = project.clone();
            let cli = rt.cli.get().cloned();
            let (file, dir) = (
                rt.cfg.file.clone(),
                rt.cfg.file.parent().map(|d| d.to_path_buf()),
            );
            move || {
                let (Some(cli), Ok(handle)) = (cli, tokio::runtime::Handle::try_current()) else {
                    return;
                };
                handle.spawn(async move {
                    let mut cmd = Command::new(&cli.program);
                    cmd.args(&cli.args)
                        .arg("-p")
                        .arg(&project)
                        .arg("-f")
                        .arg(&file)
                        .args(["down", "--remove-orphans", "-t", &grace])
                        .envs(env)
                        .stdin(std::process::Stdio::null());
                    if let Some(dir) = dir {
                        cmd.current_dir(dir);
                    }
                    if let Err(e) = cmd.output().await {
                        tracing::warn!(%project, error = %e, "cannot bring the extra project down");
                    }
                });
            }
        };
        match self.launch_project(spec, &project, port).await {
            Ok((addr, _)) => {
                tracing::info!(service = %self.service, version = %spec.version, %project, %addr, "started an extra instance");
                Ok(ExtraInstance::new(addr, down(self)))
            }
            Err(e) => {
                down(self)();
                Err(self.err(spec.slot, format!("the extra instance: {e}")))
            }
        }
    }

    async fn stop(&self, _service: &str, slot: Slot) -> Result<(), RuntimeError> {
        let mut entry = self.slots[slot.index()].lock().await;
        entry.take();
        // Always by project label: a project started by a daemon that crashed before it
        // recorded the start is stopped all the same. Through the Engine API rather
        // than `compose stop`, which would need the file's variables to parse it.
        let stop_err = |reason: String| RuntimeError::Stop {
            service: self.service.clone(),
            slot,
            reason,
        };
        let docker = self.engine.get().await.map_err(stop_err)?;
        let containers = self
            .containers(&self.project(slot))
            .await
            .map_err(stop_err)?;
        for (_, c) in containers {
            let Some(id) = c.id else { continue };
            let options = bollard::query_parameters::StopContainerOptions {
                t: Some(self.cfg.stop_grace.as_secs().max(1) as i32),
                ..Default::default()
            };
            match docker.stop_container(&id, Some(options)).await {
                Ok(()) => {}
                Err(e) if engine::not_found(&e) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(stop_err(message(&e))),
            }
        }
        Ok(())
    }

    async fn status(&self, _service: &str, slot: Slot) -> SlotStatus {
        let Some(current) = self.slots[slot.index()].lock().await.clone() else {
            return SlotStatus::NotRunning;
        };
        let containers = match self.containers(&current.project).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = %self.service, %slot, error = %e, "cannot list the project's containers");
                return SlotStatus::Running { restarts: 0 };
            }
        };
        if let Some(detail) = self.missing_public(&containers) {
            return SlotStatus::Exited { detail };
        }
        // Restarts of every component since the start, so any crash loop counts.
        let restarts = containers
            .iter()
            .map(|(_, c)| {
                let base =
                    c.id.as_ref()
                        .and_then(|id| current.baseline.get(id))
                        .copied()
                        .unwrap_or(0);
                restarts(c).saturating_sub(base)
            })
            .sum();
        SlotStatus::Running { restarts }
    }

    async fn adopt(
        &self,
        _service: &str,
        slot: Slot,
        running: &RunningSlot,
    ) -> Option<RunningSlot> {
        let project = self.project(slot);
        let containers = self.containers(&project).await.ok()?;
        if containers.is_empty() || self.missing_public(&containers).is_some() {
            return None;
        }
        let baseline = baseline_of(&containers);
        *self.slots[slot.index()].lock().await = Some(Current {
            project: project.clone(),
            baseline,
        });
        tracing::info!(service = %self.service, %slot, %project, "adopted running compose project");
        Some(RunningSlot {
            endpoint: running.endpoint.clone(),
            identity: project.clone(),
            handle: project,
        })
    }

    async fn log_tail(&self, _service: &str, slot: Slot, lines: usize) -> Vec<String> {
        let Ok(containers) = self.containers(&self.project(slot)).await else {
            return Vec::new();
        };
        let Ok(docker) = self.engine.get().await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, c) in &containers {
            let Some(id) = &c.id else { continue };
            for line in engine::log_tail(docker, id, lines).await {
                out.push(format!("{name}: {line}"));
            }
        }
        out[out.len().saturating_sub(lines)..].to_vec()
    }

    async fn health(&self, _service: &str, slot: Slot) -> Option<RuntimeHealth> {
        let current = self.slots[slot.index()].lock().await.clone()?;
        let containers = self.containers(&current.project).await.ok()?;
        let mut verdicts = Vec::new();
        for (name, c) in containers
            .iter()
            .filter(|(n, _)| self.cfg.public.contains(n))
        {
            let base =
                c.id.as_ref()
                    .and_then(|id| current.baseline.get(id))
                    .copied()
                    .unwrap_or(0);
            if let Some(v) = health_of(c, base) {
                verdicts.push((name.clone(), v));
            }
        }
        combine(verdicts)
    }
}

/// One verdict for the stack: the first unhealthy component, else the first still
/// starting, else healthy when any component judged itself.
fn combine(verdicts: Vec<(String, RuntimeHealth)>) -> Option<RuntimeHealth> {
    let describe = |name: &str, d: &str| format!("{name}: {d}");
    if let Some((n, RuntimeHealth::Unhealthy(d))) = verdicts
        .iter()
        .find(|(_, v)| matches!(v, RuntimeHealth::Unhealthy(_)))
    {
        return Some(RuntimeHealth::Unhealthy(describe(n, d)));
    }
    if let Some((n, RuntimeHealth::Starting(d))) = verdicts
        .iter()
        .find(|(_, v)| matches!(v, RuntimeHealth::Starting(_)))
    {
        return Some(RuntimeHealth::Starting(describe(n, d)));
    }
    let names: Vec<&str> = verdicts.iter().map(|(n, _)| n.as_str()).collect();
    (!names.is_empty()).then(|| RuntimeHealth::Healthy(format!("healthy: {}", names.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unhealthy_component_outweighs_starting_and_healthy_ones() {
        let v = |n: &str, h: RuntimeHealth| (n.to_string(), h);
        assert_eq!(
            combine(vec![
                v("api", RuntimeHealth::Starting("starting".into())),
                v("web", RuntimeHealth::Unhealthy("exit 1".into())),
            ]),
            Some(RuntimeHealth::Unhealthy("web: exit 1".into()))
        );
        assert_eq!(
            combine(vec![
                v("api", RuntimeHealth::Healthy("ok".into())),
                v("web", RuntimeHealth::Starting("starting".into())),
            ]),
            Some(RuntimeHealth::Starting("web: starting".into()))
        );
        assert_eq!(
            combine(vec![
                v("api", RuntimeHealth::Healthy("ok".into())),
                v("web", RuntimeHealth::Healthy("ok".into())),
            ]),
            Some(RuntimeHealth::Healthy("healthy: api, web".into()))
        );
        assert_eq!(combine(vec![]), None);
    }
}
