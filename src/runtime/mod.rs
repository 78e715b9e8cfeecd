//! Runtimes: where a slot's release runs: a local process, a Docker container, a
//! Docker Compose project, or a Kubernetes Deployment (`kubernetes.rs`).
//!
//! The orchestrator only sees [`Runtime`]; a runtime knows how to start a release in a
//! slot, stop it, say whether it still runs, and re-attach to it after the daemon
//! restarts (the endpoint, handle and identity it returned are persisted by the store).

pub mod compose;
pub mod docker;
pub mod kubernetes;
pub mod log_files;
pub mod ports;
pub mod process;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

/// What to run where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    pub service: String,
    pub slot: Slot,
    pub version: String,
    /// The deployment starting it (container runtimes label their containers with
    /// it); `None` when a restarted daemon brings back the live release.
    pub deployment: Option<i64>,
    /// Variables Cutover adds to the release's environment, winning over the
    /// configured ones (the database URL of its slot: `database::release_env`).
    pub env: Vec<(String, String)>,
}

/// A started slot: where it answers, the runtime's own handle for it (a pid, a
/// container id) and the name routers know it by, all persisted so a restarted daemon
/// can adopt it and route to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningSlot {
    /// An address, or a `host:port` resolved when dialled (a Kubernetes Service).
    pub endpoint: Endpoint,
    pub handle: String,
    /// The slot's router-specific identity ([`crate::domain::routing::Target::identity`]):
    /// [`crate::domain::routing::default_identity`] unless the runtime has its own name
    /// for the slot (the container, the Compose project).
    pub identity: String,
}

/// Whether a slot's release is running, as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SlotStatus {
    Running { restarts: u32 },
    Exited { detail: String },
    NotRunning,
}

/// The runtime's own verdict on a slot's health (Docker's HEALTHCHECK state, a
/// container restarting): one more check in every health round, next to Cutover's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeHealth {
    /// Not judged yet (Docker's `starting`): the release counts as not answering, so
    /// it is only held against the health deadline.
    Starting(String),
    Healthy(String),
    Unhealthy(String),
}

impl RuntimeHealth {
    /// The verdict as a check result named after the runtime (`docker health`).
    pub fn into_check(self, kind: &str) -> crate::checks::CheckResult {
        let (ok, detail) = match self {
            RuntimeHealth::Starting(d) => (false, d),
            RuntimeHealth::Healthy(d) => (true, d),
            RuntimeHealth::Unhealthy(d) => (false, d),
        };
        crate::checks::CheckResult {
            name: format!("{kind} health"),
            ok,
            detail,
            duration: std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start {service}/{slot}: {reason}")]
    Start {
        service: String,
        slot: Slot,
        reason: String,
    },
    #[error("cannot stop {service}/{slot}: {reason}")]
    Stop {
        service: String,
        slot: Slot,
        reason: String,
    },
    #[error("no runtime configured for service `{0}`")]
    UnknownService(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A release started outside both slots (the database compatibility proof runs the
/// live release against a scratch copy); stopped, with its whole process group or
/// container, when dropped.
pub struct ExtraInstance {
    /// Where Cutover reaches it: a loopback port, a container's published port, or a
    /// Service's address (Kubernetes).
    pub endpoint: Endpoint,
    stop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl ExtraInstance {
    pub fn new(
        endpoint: impl Into<Endpoint>,
        stop: impl FnOnce() + Send + Sync + 'static,
    ) -> ExtraInstance {
        ExtraInstance {
            endpoint: endpoint.into(),
            stop: Some(Box::new(stop)),
        }
    }
}

impl Drop for ExtraInstance {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

#[async_trait]
pub trait Runtime: Send + Sync {
    /// `process`, `docker`, ...
    fn kind(&self) -> &'static str;

    /// Starts `spec` in its slot, replacing whatever ran there. Returns once the
    /// release is started, not once it is healthy (health checks decide that).
    async fn start(&self, spec: &SlotSpec) -> Result<RunningSlot, RuntimeError>;

    /// Stops the slot gracefully (stop signal, grace period, then kill). Stopping a
    /// slot that does not run is not an error.
    async fn stop(&self, service: &str, slot: Slot) -> Result<(), RuntimeError>;

    async fn status(&self, service: &str, slot: Slot) -> SlotStatus;

    /// Re-attaches to a slot that a previous daemon started; `None` if it is gone.
    async fn adopt(&self, service: &str, slot: Slot, running: &RunningSlot) -> Option<RunningSlot>;

    /// The last `lines` lines the slot's release wrote (stdout and stderr).
    async fn log_tail(&self, service: &str, slot: Slot, lines: usize) -> Vec<String>;

    /// The runtime's own health verdict for the slot, if it has one (a container's
    /// HEALTHCHECK). `None`: nothing to add to Cutover's checks.
    async fn health(&self, _service: &str, _slot: Slot) -> Option<RuntimeHealth> {
        None
    }

    /// The runtime's own verdict on the extra instance started last (a pod that
    /// crash-loops), if it has one; asked by the proof only while its checks fail, so
    /// that such a failure names its cause instead of waiting out the health deadline.
    async fn extra_health(&self, _service: &str) -> Option<RuntimeHealth> {
        None
    }

    /// Starts `spec`'s release once more, outside both slots and without touching
    /// them, with `spec.env` added; `spec.slot` only fills the `{slot}` placeholder.
    async fn start_extra(&self, spec: &SlotSpec) -> Result<ExtraInstance, RuntimeError> {
        Err(RuntimeError::Start {
            service: spec.service.clone(),
            slot: spec.slot,
            reason: format!(
                "the {} runtime cannot start a release outside its slots (needed by the database compatibility proof; set `prove = false` to skip it)",
                self.kind()
            ),
        })
    }
}

/// Builds the runtime of every configured service; the only place that knows which
/// `runtime.kind` maps to which implementation.
pub fn runtimes_from_config(
    config: &crate::config::Config,
    state_dir: &std::path::Path,
) -> Result<std::collections::HashMap<String, std::sync::Arc<dyn Runtime>>, RuntimeError> {
    let mut out = std::collections::HashMap::new();
    for svc in config.services.values() {
        let rt: std::sync::Arc<dyn Runtime> = match &svc.runtime {
            crate::config::RuntimeConfig::Process(p) => std::sync::Arc::new(
                process::ProcessRuntime::new(&svc.name, p.clone(), state_dir.join("logs"))
                    .with_log_files(config.retention.slot_log_files),
            ),
            crate::config::RuntimeConfig::Docker(d) => std::sync::Arc::new(
                docker::DockerRuntime::new(&svc.name, d.clone(), state_dir.join("docker")),
            ),
            crate::config::RuntimeConfig::Compose(c) => {
                std::sync::Arc::new(compose::ComposeRuntime::new(&svc.name, c.clone()))
            }
            crate::config::RuntimeConfig::Kubernetes(k) => {
                std::sync::Arc::new(kubernetes::KubernetesRuntime::new(&svc.name, k.clone()))
            }
        };
        out.insert(svc.name.clone(), rt);
    }
    Ok(out)
}
