//! The Kubernetes runtime: each slot is one Deployment, `<service>-<slot>`, in the
//! user's cluster, written with `kubectl apply --server-side` and stopped by scaling
//! it to zero (the object stays, so `kubectl` shows what ran there last).
//!
//! Cutover builds the Deployment itself from the runtime's keys (image, port,
//! replicas, command, env, labels, readiness path) and labels its pods
//! `app.kubernetes.io/name=<service>` and `cutover.dev/slot=<slot>`: the per-slot
//! Services, and the Kubernetes router's Service selector, select on those. Every
//! start stamps the pod template, so a start always rolls out fresh pods, as a start
//! of the other runtimes always starts a fresh process.
//!
//! Cutover reaches a slot at its configured endpoint (a per-slot Service's address),
//! not at a pod: health checks and smoke tests then see what a client of that Service
//! sees. The Deployment's own view joins every health round ([`Runtime::health`]):
//! all pods ready, still rolling out, or failing (image pull errors, crash loops, the
//! progress deadline), and pod restarts feed the watch's restart trigger.
//!
//! A slot's Deployment and pods are read together, by one `kubectl get
//! deployments,pods -l <the slot's labels>`: each kubectl call is a process, and the
//! supervisor reads the live slot every health interval. A health round's verdict
//! reuses what the round's status read saw (at most [`REUSE`] old).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::process::substitute;
use super::{
    ExtraInstance, RunningSlot, Runtime, RuntimeError, RuntimeHealth, SlotSpec, SlotStatus,
};
use crate::config::{KubernetesRuntimeConfig, EXTRA_SLOT, NAME_LABEL, SLOT_LABEL};
use crate::domain::Slot;
use crate::kube::{pod_ready, selector, KubeError, Kubectl, PatchType};

/// Annotation holding the release's version (on the Deployment and its pods).
const VERSION_ANNOTATION: &str = "cutover.dev/version";
/// Annotation on the pod template that changes with every start.
const START_ANNOTATION: &str = "cutover.dev/started-at";

/// Container states that mean the release will not come up by waiting.
const FAILING: [&str; 6] = [
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

pub struct KubernetesRuntime {
    service: String,
    cfg: KubernetesRuntimeConfig,
    kubectl: Kubectl,
    /// Pod restarts last seen per slot, kept when the cluster does not answer.
    restarts: Mutex<[u32; 2]>,
    /// The last read of each slot's Deployment and pods (see [`REUSE`]).
    snapshots: Mutex<[Cached; 2]>,
}

/// A slot's Deployment (`None`: none with the slot's labels) and its pods, read by one
/// kubectl call.
struct Snapshot {
    /// When the call was made (what it shows is at least this recent).
    asked: Instant,
    deployment: Option<Value>,
    pods: Vec<Value>,
}

/// One slot's newest snapshot. A read that was asked before the newest one, or
/// before the slot was started or stopped (`epoch`), is not kept: reads run
/// concurrently (a status request beside a health round), and an older answer must
/// not stand in for a newer one.
#[derive(Default)]
struct Cached {
    epoch: u64,
    last: Option<Arc<Snapshot>>,
}

impl Cached {
    /// Drops the snapshot and moves on to the next epoch.
    fn forget(&mut self) {
        self.epoch += 1;
        self.last = None;
    }

    /// Keeps `s`, read in `epoch`, if nothing newer is kept.
    fn offer(&mut self, epoch: u64, s: Arc<Snapshot>) {
        let newer = self.last.as_ref().is_none_or(|l| l.asked <= s.asked);
        if self.epoch == epoch && newer {
            self.last = Some(s);
        }
    }
}

/// How old a slot's snapshot may be for the runtime's health verdict to use it
/// instead of calling kubectl again: a health round reads the slot's status first
/// (always fresh), then runs Cutover's checks, then asks for the verdict. Each kubectl
/// call is a process (tens of milliseconds of CPU), so a round costs one, not two.
const REUSE: Duration = Duration::from_secs(1);

impl KubernetesRuntime {
    pub fn new(service: &str, cfg: KubernetesRuntimeConfig) -> KubernetesRuntime {
        KubernetesRuntime {
            service: service.to_string(),
            kubectl: Kubectl::new(cfg.access.clone()),
            cfg,
            restarts: Mutex::new([0; 2]),
            snapshots: Mutex::new(Default::default()),
        }
    }

    /// The slot's Deployment: `<service>-<slot>`.
    pub fn deployment_name(&self, slot: Slot) -> String {
        format!("{}-{slot}", self.service)
    }

    fn pod_selector(&self, slot: Slot) -> String {
        self.selector_for(slot.as_str())
    }

    /// The label selector of this service's pods whose slot label is `slot` (a slot,
    /// or the proof's extra instance).
    fn selector_for(&self, slot: &str) -> String {
        selector(&[(NAME_LABEL, &self.service), (SLOT_LABEL, slot)])
    }

    fn running(&self, slot: Slot) -> RunningSlot {
        RunningSlot {
            endpoint: self.cfg.endpoints[&slot].clone(),
            handle: format!(
                "{}/{}",
                self.kubectl.namespace(),
                self.deployment_name(slot)
            ),
            identity: self.deployment_name(slot),
        }
    }

    /// The database proof's extra instance: `<service>-extra`.
    pub fn extra_name(&self) -> String {
        format!("{}-{EXTRA_SLOT}", self.service)
    }

    /// The Deployment for `spec`, as Cutover applies it.
    pub fn manifest(&self, spec: &SlotSpec, started_at: i64) -> Value {
        let name = self.deployment_name(spec.slot);
        self.deployment(
            spec,
            &name,
            spec.slot.as_str(),
            self.cfg.replicas,
            started_at,
        )
    }

    /// The extra instance's Deployment: the same pod as a slot's (`spec.env` added),
    /// one replica, its pods labelled `cutover.dev/slot: extra` so that neither slot's
    /// Service nor the router's selector ever picks them.
    pub fn extra_manifest(&self, spec: &SlotSpec, started_at: i64) -> Value {
        self.deployment(spec, &self.extra_name(), EXTRA_SLOT, 1, started_at)
    }

    fn deployment(
        &self,
        spec: &SlotSpec,
        name: &str,
        slot: &str,
        replicas: u32,
        started_at: i64,
    ) -> Value {
        let c = &self.cfg;
        let sub = |s: &String| substitute(s, spec, c.port);
        let selector = json!({ NAME_LABEL: self.service, SLOT_LABEL: slot });
        let mut pod_labels: BTreeMap<String, String> = c.labels.clone();
        pod_labels.insert(NAME_LABEL.into(), self.service.clone());
        pod_labels.insert(SLOT_LABEL.into(), slot.into());
        // Cutover's own variables (the slot's database URL) win over configured ones.
        let mut env: BTreeMap<String, String> =
            c.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
        env.extend(spec.env.iter().cloned());
        let mut container = json!({
            "name": "app",
            "image": sub(&c.image),
            "ports": [{ "name": "http", "containerPort": c.port, "protocol": "TCP" }],
            "env": env.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
        });
        if let Some(cmd) = &c.command {
            container["command"] = json!(cmd.iter().map(sub).collect::<Vec<_>>());
        }
        if let Some(args) = &c.args {
            container["args"] = json!(args.iter().map(sub).collect::<Vec<_>>());
        }
        if let Some(path) = &c.ready_path {
            container["readinessProbe"] = json!({
                "httpGet": { "path": path, "port": c.port },
                "periodSeconds": 2,
                "failureThreshold": 2,
            });
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": self.kubectl.namespace(),
                "labels": {
                    NAME_LABEL: self.service,
                    SLOT_LABEL: slot,
                    "app.kubernetes.io/managed-by": "cutover",
                },
                "annotations": { VERSION_ANNOTATION: spec.version },
            },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            VERSION_ANNOTATION: spec.version,
                            START_ANNOTATION: started_at.to_string(),
                        },
                    },
                    "spec": {
                        "terminationGracePeriodSeconds": c.stop_grace.as_secs(),
                        "containers": [container],
                    },
                },
            },
        })
    }

    /// The slot's Deployment and pods in one call (`kubectl get deployments,pods -l
    /// <the slot's labels>`), or the last snapshot if it is at most `reuse` old.
    async fn snapshot(&self, slot: Slot, reuse: Duration) -> Result<Arc<Snapshot>, KubeError> {
        let epoch = {
            let cache = &self.cache()[slot.index()];
            let fresh = cache
                .last
                .clone()
                .filter(|s| !reuse.is_zero() && s.asked.elapsed() <= reuse);
            if let Some(s) = fresh {
                return Ok(s);
            }
            cache.epoch
        };
        let snapshot = Arc::new(
            self.read(&self.deployment_name(slot), &self.pod_selector(slot))
                .await?,
        );
        self.cache()[slot.index()].offer(epoch, snapshot.clone());
        Ok(snapshot)
    }

    /// The Deployment `name` and the pods `labels` select, by one kubectl call.
    async fn read(&self, name: &str, labels: &str) -> Result<Snapshot, KubeError> {
        let asked = Instant::now();
        let items = self.kubectl.list("deployments,pods", labels).await?;
        let mut snapshot = Snapshot {
            asked,
            deployment: None,
            pods: Vec::new(),
        };
        for item in items {
            match item["kind"].as_str() {
                Some("Deployment") if item["metadata"]["name"] == name => {
                    snapshot.deployment = Some(item)
                }
                Some("Pod") => snapshot.pods.push(item),
                _ => {}
            }
        }
        Ok(snapshot)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, [Cached; 2]> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the slot's snapshot, and any read still under way: what they saw is
    /// about to change.
    fn forget(&self, slot: Slot) {
        self.cache()[slot.index()].forget();
    }

    /// Why a slot has no Deployment Cutover can read.
    fn missing(&self, slot: Slot) -> String {
        format!(
            "Deployment {} does not exist (none labelled {})",
            self.deployment_name(slot),
            self.pod_selector(slot)
        )
    }

    /// Applies `manifest` and checks that the cluster stored this start's pod
    /// template. Not the image: an admission webhook may pin it to a digest or
    /// rewrite its registry.
    async fn apply_fresh(&self, manifest: &Value) -> Result<(), String> {
        let stored = self
            .kubectl
            .apply(manifest)
            .await
            .map_err(|e| e.to_string())?;
        if stamp(&stored) != stamp(manifest) {
            return Err(format!(
                "the cluster did not store this start's pod template (its {START_ANNOTATION} is {})",
                stamp(&stored)
            ));
        }
        Ok(())
    }

    fn err_start(&self, slot: Slot, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Start {
            service: self.service.clone(),
            slot,
            reason: e.to_string(),
        }
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn start(&self, spec: &SlotSpec) -> Result<RunningSlot, RuntimeError> {
        let slot = spec.slot;
        let manifest = self.manifest(spec, crate::domain::now_ms());
        self.forget(slot);
        self.apply_fresh(&manifest)
            .await
            .map_err(|e| self.err_start(slot, e))?;
        self.restarts.lock().unwrap_or_else(|e| e.into_inner())[slot.index()] = 0;
        tracing::info!(service = %self.service, %slot, version = %spec.version, deployment = %self.deployment_name(slot), namespace = %self.kubectl.namespace(), "deployment applied");
        Ok(self.running(slot))
    }

    /// The live release once more as `<service>-extra`, reached at `endpoints.extra`;
    /// scaled to zero when the proof drops it (the object stays, like a slot's).
    async fn start_extra(&self, spec: &SlotSpec) -> Result<ExtraInstance, RuntimeError> {
        let Some(endpoint) = self.cfg.extra_endpoint.clone() else {
            return Err(self.err_start(
                spec.slot,
                "the database compatibility proof needs `endpoints.extra` in the kubernetes runtime (a Service selecting the pods labelled `cutover.dev/slot: extra`); set it, or set `prove = false`",
            ));
        };
        let started_at = crate::domain::now_ms();
        let manifest = self.extra_manifest(spec, started_at);
        self.apply_fresh(&manifest)
            .await
            .map_err(|e| self.err_start(spec.slot, format!("the extra instance: {e}")))?;
        tracing::info!(service = %self.service, version = %spec.version, deployment = %self.extra_name(), %endpoint, "started an extra instance");
        let kubectl = self.kubectl.clone();
        let name = self.extra_name();
        Ok(ExtraInstance::new(endpoint, move || {
            // In the background: `Drop` cannot wait.
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            rt.spawn(scale_extra_to_zero(kubectl, name, started_at));
        }))
    }

    async fn stop(&self, _service: &str, slot: Slot) -> Result<(), RuntimeError> {
        self.forget(slot);
        let name = self.deployment_name(slot);
        let scaled = self
            .kubectl
            .patch(
                "deployment",
                &name,
                PatchType::Merge,
                &json!({ "spec": { "replicas": 0 } }),
            )
            .await;
        match scaled {
            Ok(_) => {
                tracing::info!(service = %self.service, %slot, deployment = %name, "scaled to zero");
                Ok(())
            }
            // Nothing runs there: stopping it is not an error.
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(RuntimeError::Stop {
                service: self.service.clone(),
                slot,
                reason: e.to_string(),
            }),
        }
    }

    async fn status(&self, _service: &str, slot: Slot) -> SlotStatus {
        let last = || self.restarts.lock().unwrap_or_else(|e| e.into_inner())[slot.index()];
        match self.snapshot(slot, Duration::ZERO).await {
            Ok(s) => match &s.deployment {
                None => SlotStatus::Exited {
                    detail: self.missing(slot),
                },
                Some(d) if d["spec"]["replicas"].as_u64() == Some(0) => SlotStatus::Exited {
                    detail: format!(
                        "Deployment {} was scaled to zero",
                        self.deployment_name(slot)
                    ),
                },
                Some(_) => {
                    let n = restarts(&s.pods);
                    self.restarts.lock().unwrap_or_else(|e| e.into_inner())[slot.index()] = n;
                    SlotStatus::Running { restarts: n }
                }
            },
            // The cluster not answering says nothing about the pods: keep calling the
            // release running rather than rolling back a healthy one.
            Err(e) => {
                tracing::warn!(service = %self.service, %slot, error = %e, "cannot read the Deployment");
                SlotStatus::Running { restarts: last() }
            }
        }
    }

    async fn adopt(
        &self,
        _service: &str,
        slot: Slot,
        _running: &RunningSlot,
    ) -> Option<RunningSlot> {
        let d = self
            .kubectl
            .get("deployment", &self.deployment_name(slot))
            .await
            .ok()??;
        let ours = d["metadata"]["labels"][SLOT_LABEL] == slot.as_str()
            && d["metadata"]["labels"][NAME_LABEL] == self.service.as_str();
        if !ours || d["spec"]["replicas"].as_u64() == Some(0) {
            return None;
        }
        tracing::info!(service = %self.service, %slot, deployment = %self.deployment_name(slot), "adopted running Deployment");
        Some(self.running(slot))
    }

    async fn log_tail(&self, _service: &str, slot: Slot, lines: usize) -> Vec<String> {
        match self.kubectl.logs(&self.pod_selector(slot), lines).await {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..]
                    .iter()
                    .map(|l| l.to_string())
                    .collect()
            }
            Err(e) => vec![format!("(cannot read the pods' logs: {e})")],
        }
    }

    /// The extra Deployment's verdict, as a slot's: one call, asked only while the
    /// proof's checks fail.
    async fn extra_health(&self, _service: &str) -> Option<RuntimeHealth> {
        let labels = self.selector_for(EXTRA_SLOT);
        Some(match self.read(&self.extra_name(), &labels).await {
            Ok(s) => deployment_health(s.deployment.as_ref()?, &s.pods),
            Err(e) => RuntimeHealth::Starting(format!("cannot read the Deployment: {e}")),
        })
    }

    async fn health(&self, _service: &str, slot: Slot) -> Option<RuntimeHealth> {
        Some(match self.snapshot(slot, REUSE).await {
            Ok(s) => match &s.deployment {
                Some(d) => deployment_health(d, &s.pods),
                None => RuntimeHealth::Unhealthy(self.missing(slot)),
            },
            Err(e) => RuntimeHealth::Starting(format!("cannot read the Deployment: {e}")),
        })
    }
}

/// The start stamp of a Deployment's pod template.
fn stamp(d: &Value) -> Value {
    d["spec"]["template"]["metadata"]["annotations"][START_ANNOTATION].clone()
}

/// Scales the extra instance started at `started_at` to zero. Guarded by its start
/// stamp: when the proof of a second release (the one kept warm) has applied its own
/// template meanwhile, the patch's `test` fails and that instance keeps running.
async fn scale_extra_to_zero(kubectl: Kubectl, name: String, started_at: i64) {
    let path = format!(
        "/spec/template/metadata/annotations/{}",
        START_ANNOTATION.replace('~', "~0").replace('/', "~1")
    );
    let patch = json!([
        { "op": "test", "path": path, "value": started_at.to_string() },
        { "op": "replace", "path": "/spec/replicas", "value": 0 },
    ]);
    match kubectl
        .patch("deployment", &name, PatchType::Json, &patch)
        .await
    {
        Ok(_) => tracing::info!(deployment = %name, "extra instance scaled to zero"),
        Err(e) if e.is_not_found() || e.to_string().contains("test failed") => {
            tracing::debug!(deployment = %name, error = %e, "extra instance already replaced or gone")
        }
        Err(e) => {
            tracing::warn!(deployment = %name, error = %e, "cannot scale the extra instance to zero")
        }
    }
}

/// Restarts of all containers of `pods`.
fn restarts(pods: &[Value]) -> u32 {
    pods.iter()
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["restartCount"].as_u64().unwrap_or(0) as u32)
        .sum()
}

/// The Deployment's own verdict: every wanted pod updated and ready, a failure that
/// waiting will not fix, or still rolling out.
pub fn deployment_health(d: &Value, pods: &[Value]) -> RuntimeHealth {
    let st = &d["status"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let wanted = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let deadline = st["conditions"].as_array().and_then(|cs| {
        cs.iter().find(|c| {
            c["type"] == "Progressing"
                && c["status"] == "False"
                && c["reason"] == "ProgressDeadlineExceeded"
        })
    });
    if let Some(c) = deadline {
        return RuntimeHealth::Unhealthy(format!(
            "ProgressDeadlineExceeded: {}",
            c["message"]
                .as_str()
                .unwrap_or("the rollout did not finish in time")
        ));
    }
    // Only the pods of the template applied last: pods of an earlier start may still
    // be terminating, ready or not.
    let stamp = &d["spec"]["template"]["metadata"]["annotations"][START_ANNOTATION];
    let current: Vec<&Value> = pods
        .iter()
        .filter(|p| &p["metadata"]["annotations"][START_ANNOTATION] == stamp)
        .collect();
    for pod in &current {
        for cs in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let waiting = &cs["state"]["waiting"];
            if let Some(reason) = waiting["reason"].as_str().filter(|r| FAILING.contains(r)) {
                return RuntimeHealth::Unhealthy(format!(
                    "pod {}: {reason}{}",
                    pod["metadata"]["name"].as_str().unwrap_or("?"),
                    waiting["message"]
                        .as_str()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    let observed = n(&st["observedGeneration"]) >= n(&d["metadata"]["generation"]);
    let ready = current.iter().filter(|p| pod_ready(p)).count() as u64;
    let summary = format!("{ready} of {wanted} pods of this release ready");
    if observed && ready >= wanted {
        RuntimeHealth::Healthy(summary)
    } else {
        RuntimeHealth::Starting(summary)
    }
}

#[cfg(test)]
#[path = "kubernetes_tests.rs"]
mod tests;
