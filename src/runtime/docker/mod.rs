//! Docker: each slot is one container, created through the Engine API (bollard, over
//! the local socket or `DOCKER_HOST`).
//!
//! Why it is shaped this way:
//! - the container of a slot has a predictable name (`cutover-<service>-<slot>`) and
//!   labels (service, slot, version, deployment), so a restarted daemon finds it again,
//!   an operator finds it with `docker ps`, and a slot can never hold two containers;
//! - a start waits a moment for the container to settle, so a release that dies at
//!   once fails its start with its exit code and last log lines, instead of being
//!   discovered by a health deadline;
//! - `status` reports Docker's restart count truthfully: the runner turns an increase
//!   during the watch into a rollback; `health` adds Docker's HEALTHCHECK verdict (and
//!   restarts since the start) to every health round;
//! - the database compatibility proof starts the live release once more outside both
//!   slots (`start_extra`): a container named `cutover-<service>-extra` without a slot
//!   label, removed when the proof ends;
//! - a stopped container is kept (its logs stay readable) until the slot is reused;
//!   images of old releases are removed beyond `keep_releases` (see `cleanup.rs`).
//!
//! # Layout
//! - `spec.rs`: container names, labels, the create request, inspection → status.
//! - `engine.rs`: the lazy connection, image pulls, logs.
//! - `cleanup.rs`: the releases ledger and image removal.

pub mod cleanup;
pub mod engine;
pub mod spec;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use tokio::sync::Mutex;

use super::{
    ExtraInstance, RunningSlot, Runtime, RuntimeError, RuntimeHealth, SlotSpec, SlotStatus,
};
use crate::config::{DockerReach, DockerRuntimeConfig};
use crate::domain::Slot;
use engine::{message, not_found, Engine};

/// How long a fresh container must stay up (not exited, not restarted) for its start
/// to count.
const SETTLE: Duration = Duration::from_millis(1500);

/// The container a slot runs, as this daemon knows it.
#[derive(Debug, Clone)]
struct Current {
    id: String,
    /// Its restart count when started or adopted.
    restarts_at_start: u32,
}

pub struct DockerRuntime {
    service: String,
    cfg: DockerRuntimeConfig,
    engine: Engine,
    ledger: cleanup::Ledger,
    /// One entry per slot; the async mutex also serialises start/stop of a slot.
    slots: [Mutex<Option<Current>>; 2],
}

impl DockerRuntime {
    /// `state_dir` holds the releases ledger.
    pub fn new(service: &str, cfg: DockerRuntimeConfig, state_dir: PathBuf) -> Self {
        Self {
            ledger: cleanup::Ledger::new(&state_dir, service),
            service: service.to_string(),
            cfg,
            engine: Engine::default(),
            slots: [Mutex::new(None), Mutex::new(None)],
        }
    }

    fn err(&self, slot: Slot, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Start {
            service: self.service.clone(),
            slot,
            reason: reason.into(),
        }
    }

    async fn docker(&self) -> Result<&Docker, String> {
        self.engine.get().await
    }

    fn host_port(&self, slot: Slot) -> Result<u16, RuntimeError> {
        if let Some(ports) = self.cfg.ports {
            return Ok(ports.get(slot));
        }
        self.free_port(slot)
    }

    fn free_port(&self, slot: Slot) -> Result<u16, RuntimeError> {
        super::ports::free_loopback_port()
            .map_err(|e| self.err(slot, format!("no free loopback port: {e}")))
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>, String> {
        let docker = self.docker().await?;
        match docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(message(&e)),
        }
    }

    /// Every container labelled with this service's `slot` (running or not), plus the
    /// one holding the slot's name: what a start must replace.
    async fn slot_containers(&self, docker: &Docker, slot: Slot) -> Result<Vec<String>, String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={}", spec::LABEL_SERVICE, self.service),
                format!("{}={}", spec::LABEL_SLOT, slot),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let mut ids: Vec<String> = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| message(&e))?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        let name = spec::container_name(&self.service, slot);
        if let Ok(c) = docker.inspect_container(&name, None).await {
            ids.extend(c.id.filter(|id| !ids.contains(id)));
        }
        Ok(ids)
    }

    /// Stops a container with its stop signal and the grace period; a missing or
    /// already stopped container is fine.
    async fn stop_container(&self, docker: &Docker, id: &str) -> Result<(), String> {
        let options = StopContainerOptions {
            t: Some(self.cfg.stop_grace.as_secs().max(1) as i32),
            ..Default::default()
        };
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(message(&e)),
        }
    }

    async fn remove_container(&self, docker: &Docker, id: &str) -> Result<(), String> {
        self.stop_container(docker, id).await?;
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(message(&e)),
        }
    }

    /// Creates and starts the container, then waits for it to settle.
    async fn launch(&self, spec: &SlotSpec) -> Result<(String, SocketAddr), String> {
        let docker = self.docker().await?;
        let slot = spec.slot;
        let image = spec::image_ref(&self.cfg, spec);
        engine::ensure_image(docker, &image).await?;
        for id in self.slot_containers(docker, slot).await? {
            self.remove_container(docker, &id)
                .await
                .map_err(|e| format!("cannot remove the slot's previous container: {e}"))?;
        }
        let mut from_files = Vec::new();
        for file in &self.cfg.env_files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read env file {}: {e}", file.display()))?;
            from_files.extend(
                spec::parse_env_file(&text)
                    .map_err(|e| format!("env file {}: {e}", file.display()))?,
            );
        }
        let env = spec::environment(&self.cfg, spec, from_files);
        let host_port = match self.cfg.reach {
            DockerReach::Loopback => self.host_port(slot).map_err(|e| e.to_string())?,
            DockerReach::Network => 0,
        };
        let body = spec::create_body(&self.cfg, spec, host_port, env);
        let options = CreateContainerOptions {
            name: Some(spec::container_name(&self.service, slot)),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("cannot create the container from {image}: {}", message(&e)))?;
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| format!("cannot start the container from {image}: {}", message(&e)))?;
        let addr = self.settle(&created.id).await?;
        Ok((created.id, addr))
    }

    /// Waits for a started container to settle (not exited, not restarted for
    /// [`SETTLE`]); returns where it answers.
    async fn settle(&self, id: &str) -> Result<SocketAddr, String> {
        let started = tokio::time::Instant::now();
        loop {
            let c = self
                .inspect(id)
                .await?
                .ok_or("the container disappeared right after its start")?;
            match spec::status_of(&c) {
                SlotStatus::Running { restarts: 0 } => {}
                SlotStatus::Running { .. } => {
                    let c = self.next_exit(id, c).await;
                    return Err(format!(
                        "the container crashed right after its start ({})",
                        spec::exit_detail(&c)
                    ));
                }
                SlotStatus::Exited { detail } => {
                    return Err(format!(
                        "the container stopped right after its start: {detail}"
                    ))
                }
                SlotStatus::NotRunning => {}
            }
            if started.elapsed() >= SETTLE {
                return spec::address_of(&self.cfg, &c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A container seen running again after a restart: Docker has reset its exit code
    /// on the restart, so the code it crashed with is not in `c`. Looks again for up to
    /// [`SETTLE`] for the next exit (a container that crashes on start soon does) and
    /// returns the last state seen.
    async fn next_exit(
        &self,
        id: &str,
        mut c: ContainerInspectResponse,
    ) -> ContainerInspectResponse {
        let started = tokio::time::Instant::now();
        while spec::running_again(&c) && started.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.inspect(id).await {
                Ok(Some(next)) => c = next,
                _ => break,
            }
        }
        c
    }

    /// Starts `spec`'s release outside both slots (the database compatibility proof):
    /// the slot's container spec with `spec.env` added, under its own name
    /// (`cutover-<service>-extra`) and labels (no slot label, so no slot start, stop or
    /// adoption ever takes it for a slot's), on its own free loopback port (or its
    /// address on the configured network), never restarted.
    async fn launch_extra(&self, spec: &SlotSpec) -> Result<(String, SocketAddr), String> {
        let docker = self.docker().await?;
        let image = spec::image_ref(&self.cfg, spec);
        engine::ensure_image(docker, &image).await?;
        let name = spec::extra_name(&self.service);
        // A leftover of a daemon that stopped mid-proof.
        self.remove_container(docker, &name).await?;
        let mut from_files = Vec::new();
        for file in &self.cfg.env_files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read env file {}: {e}", file.display()))?;
            from_files.extend(
                spec::parse_env_file(&text)
                    .map_err(|e| format!("env file {}: {e}", file.display()))?,
            );
        }
        let env = spec::environment(&self.cfg, spec, from_files);
        let host_port = match self.cfg.reach {
            DockerReach::Loopback => self.free_port(spec.slot).map_err(|e| e.to_string())?,
            DockerReach::Network => 0,
        };
        let body = spec::extra_body(spec::create_body(&self.cfg, spec, host_port, env));
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("cannot create the container from {image}: {}", message(&e)))?;
        let started = docker.start_container(&created.id, None).await;
        let settled = match started {
            Ok(()) => self.settle(&created.id).await,
            Err(e) => Err(format!(
                "cannot start the container from {image}: {}",
                message(&e)
            )),
        };
        match settled {
            Ok(addr) => Ok((created.id, addr)),
            Err(e) => {
                let _ = self.remove_container(docker, &created.id).await;
                Err(e)
            }
        }
    }

    /// Records the release and removes images of releases beyond `keep_releases`.
    async fn clean_up(&self, version: &str) {
        if let Err(e) = self.ledger.record(version) {
            tracing::warn!(service = %self.service, error = %e, "cannot record the release");
            return;
        }
        let Ok(docker) = self.docker().await else {
            return;
        };
        let mut in_use = Vec::new();
        for slot in Slot::ALL {
            let name = spec::container_name(&self.service, slot);
            if let Ok(Some(c)) = self.inspect(&name).await {
                let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
                in_use.extend(labels.get(spec::LABEL_VERSION).cloned());
            }
        }
        let expired = cleanup::expired(
            &self.ledger.read(),
            &in_use,
            self.cfg.keep_releases as usize,
        );
        if expired.is_empty() {
            return;
        }
        let image_of = |v: &str| {
            let spec = SlotSpec {
                service: self.service.clone(),
                slot: Slot::Blue,
                version: v.to_string(),
                deployment: None,
                env: Vec::new(),
            };
            spec::image_ref(&self.cfg, &spec)
        };
        let gone = cleanup::remove_images(docker, &expired, image_of).await;
        if let Err(e) = self.ledger.forget(&gone) {
            tracing::warn!(service = %self.service, error = %e, "cannot update the releases ledger");
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: &SlotSpec) -> Result<RunningSlot, RuntimeError> {
        let slot = spec.slot;
        let mut entry = self.slots[slot.index()].lock().await;
        *entry = None;
        let (id, addr) = self.launch(spec).await.map_err(|e| self.err(slot, e))?;
        tracing::info!(service = %self.service, %slot, version = %spec.version, container = %id, %addr, "container started");
        *entry = Some(Current {
            id: id.clone(),
            restarts_at_start: 0,
        });
        drop(entry);
        self.clean_up(&spec.version).await;
        Ok(RunningSlot {
            endpoint: addr.into(),
            handle: id,
            identity: spec::container_name(&self.service, slot),
        })
    }

    async fn start_extra(&self, spec: &SlotSpec) -> Result<ExtraInstance, RuntimeError> {
        let (id, addr) = self
            .launch_extra(spec)
            .await
            .map_err(|e| self.err(spec.slot, format!("the extra instance: {e}")))?;
        tracing::info!(service = %self.service, version = %spec.version, container = %short(&id), %addr, "started an extra instance");
        let docker = self.docker().await.ok().cloned();
        Ok(ExtraInstance::new(addr, move || {
            // Removed in the background: `Drop` cannot wait. The next extra instance
            // removes a leftover of the same name first.
            let (Some(docker), Ok(rt)) = (docker, tokio::runtime::Handle::try_current()) else {
                return;
            };
            rt.spawn(async move {
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                if let Err(e) = docker.remove_container(&id, Some(options)).await {
                    if !not_found(&e) {
                        tracing::warn!(container = %short(&id), error = %message(&e), "cannot remove the extra instance");
                    }
                }
            });
        }))
    }

    async fn stop(&self, _service: &str, slot: Slot) -> Result<(), RuntimeError> {
        let mut entry = self.slots[slot.index()].lock().await;
        let stop_err = |reason: String| RuntimeError::Stop {
            service: self.service.clone(),
            slot,
            reason,
        };
        let docker = self.docker().await.map_err(stop_err)?;
        // By label and name too: a container started by a daemon that crashed before it
        // recorded the start is stopped all the same.
        let mut ids = self.slot_containers(docker, slot).await.map_err(stop_err)?;
        ids.extend(entry.take().map(|c| c.id).filter(|id| !ids.contains(id)));
        for id in ids {
            self.stop_container(docker, &id).await.map_err(stop_err)?;
        }
        Ok(())
    }

    async fn status(&self, _service: &str, slot: Slot) -> SlotStatus {
        let Some(current) = self.slots[slot.index()].lock().await.clone() else {
            return SlotStatus::NotRunning;
        };
        match self.inspect(&current.id).await {
            Ok(Some(c)) => spec::status_of(&c),
            Ok(None) => SlotStatus::Exited {
                detail: format!("container {} was removed", short(&current.id)),
            },
            // The engine not answering says nothing about the container: keep calling
            // it running rather than rolling back a healthy release.
            Err(e) => {
                tracing::warn!(service = %self.service, %slot, error = %e, "cannot inspect the container");
                SlotStatus::Running {
                    restarts: current.restarts_at_start,
                }
            }
        }
    }

    async fn adopt(
        &self,
        _service: &str,
        slot: Slot,
        running: &RunningSlot,
    ) -> Option<RunningSlot> {
        let name = spec::container_name(&self.service, slot);
        let mut found = None;
        for id in [running.handle.as_str(), name.as_str()] {
            if let Ok(Some(c)) = self.inspect(id).await {
                if spec::belongs_to(&c, &self.service, slot) {
                    found = Some(c);
                    break;
                }
            }
        }
        let c = found?;
        if !matches!(spec::status_of(&c), SlotStatus::Running { .. }) {
            return None;
        }
        let addr = spec::address_of(&self.cfg, &c).ok()?;
        let id = c.id.clone()?;
        *self.slots[slot.index()].lock().await = Some(Current {
            id: id.clone(),
            restarts_at_start: spec::restarts(&c),
        });
        tracing::info!(service = %self.service, %slot, container = %short(&id), %addr, "adopted running container");
        Some(RunningSlot {
            endpoint: addr.into(),
            handle: id,
            identity: name,
        })
    }

    async fn log_tail(&self, _service: &str, slot: Slot, lines: usize) -> Vec<String> {
        let Ok(docker) = self.docker().await else {
            return Vec::new();
        };
        let name = spec::container_name(&self.service, slot);
        engine::log_tail(docker, &name, lines).await
    }

    async fn health(&self, _service: &str, slot: Slot) -> Option<RuntimeHealth> {
        let current = self.slots[slot.index()].lock().await.clone()?;
        let c = self.inspect(&current.id).await.ok()??;
        spec::health_of(&c, current.restarts_at_start)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
