//! Response shapes that combine the store with live state (router, runtime, proxy
//! statistics). Field names are part of the stable `--json` output.

use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::domain::Slot;
use crate::orchestrator::{Controller, Progress};
use crate::store::{DeploymentRecord, SlotRecord};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotView {
    #[serde(flatten)]
    pub record: SlotRecord,
    /// Whether the release runs now, per its runtime.
    pub running: bool,
    /// Proxied requests to this slot since the daemon started.
    pub requests: u64,
    /// 5xx answers and upstream failures among them.
    pub errors: u64,
    pub in_flight: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// The built-in proxy's address for this service; `null` when an external load
    /// balancer serves it.
    pub listen: Option<String>,
    /// `builtin`, `nginx`, `haproxy`, ...
    pub router: String,
    /// The slot receiving normal traffic according to the store.
    pub live: Option<Slot>,
    pub live_version: Option<String>,
    /// The live slot the router actually routes to.
    pub observed_live: Option<Slot>,
    /// True when the router disagrees with the store (someone changed routing by hand).
    pub drift: bool,
    pub slots: Vec<SlotView>,
    pub active_deployment: Option<DeploymentRecord>,
    pub progress: Option<serde_json::Value>,
    pub last_deployment: Option<DeploymentRecord>,
    /// What the supervisor last saw of the live release between deployments
    /// (`{slot, healthy, detail, consecutive_failures, restarts, checked_at}`); `null`
    /// before its first round or while a deployment runs.
    #[serde(default)]
    pub live_health: Option<crate::orchestrator::supervisor::LiveHealth>,
    /// The certificates its listener serves when it terminates TLS (name, file,
    /// `not_after` Unix time, the last reload error); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<crate::proxy::tls::CertStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentView {
    pub deployment: DeploymentRecord,
    /// Live progress while it runs (phase, watch countdown, latest window).
    pub progress: Option<serde_json::Value>,
}

impl From<Progress> for serde_json::Value {
    fn from(p: Progress) -> Self {
        serde_json::to_value(p).unwrap_or_default()
    }
}

pub async fn service_status(c: &Controller, name: &str) -> Result<ServiceStatus, ApiError> {
    let cfg = c.config().services.get(name).ok_or_else(|| {
        ApiError::from(crate::orchestrator::ControlError::UnknownService(
            name.into(),
        ))
    })?;
    let rec = c.store().service(name)?;
    let observed_live = c.router(name).observed_live(name).await.ok().flatten();
    let mut slots = Vec::new();
    for s in rec.slots.iter() {
        let stats = c.router(name).stats(name, s.slot).await.unwrap_or_default();
        slots.push(SlotView {
            record: s.clone(),
            running: c.slot_running(name, s.slot).await,
            requests: stats.requests,
            errors: stats.errors(),
            in_flight: stats.in_flight,
        });
    }
    let history = c.store().history(name, 2)?;
    let active = history.iter().find(|d| d.outcome.is_none()).cloned();
    let last = history.iter().find(|d| d.outcome.is_some()).cloned();
    let live_health = c.live_health(name).filter(|_| active.is_none());
    Ok(ServiceStatus {
        name: name.into(),
        listen: cfg.listen.map(|a| a.to_string()),
        router: c.router(name).kind().to_string(),
        live: rec.live,
        live_version: rec.live.and_then(|s| rec.slots[s.index()].version.clone()),
        observed_live,
        drift: observed_live != rec.live,
        slots,
        progress: c.progress(name).map(Into::into),
        active_deployment: active,
        last_deployment: last,
        live_health,
        tls_certificates: Vec::new(),
    })
}
