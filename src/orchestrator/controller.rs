//! The controller: the control plane's front door.
//!
//! It turns requests (deploy, rollback, abort, check) into runs of the state machine,
//! reconciles the world with the store when the daemon boots (crash safety), and stops
//! standby slots whose warm period is over. It holds no deployment state of its own
//! beyond the channel to each running deployment: the store is the source of truth.

use super::switch_times::SwitchTimes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::machine::{Event, Machine, Plan};
use super::progress::Progress;
use super::runner::{Input, Runner, RunnerParts};
use crate::checks::{self, CheckResult, ProbeTarget, SmokeReport};
use crate::config::{Config, ServiceConfig};
use crate::domain::{now_ms, Slot};
use crate::notify::Notifier;
use crate::router::Router;
use crate::runtime::{Runtime, SlotStatus};
use crate::store::{DeploymentKind, NewDeployment, ServiceRecord, SlotState, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown service `{0}` (not in the config)")]
    UnknownService(String),
    #[error("a deployment of `{service}` is already in progress (deployment #{id}); wait for it, or `cutover abort {service}`")]
    InProgress { service: String, id: i64 },
    #[error("no deployment of `{0}` is in progress")]
    NothingInProgress(String),
    #[error("`{0}` has no previous release to roll back to")]
    NothingToRollBack(String),
    #[error("deployment #{id} of `{service}` has not switched traffic yet; use `cutover abort {service}` to stop it")]
    NotSwitchedYet { service: String, id: i64 },
    #[error("deployment #{id} of `{service}` is in phase {phase}, not in canary steps")]
    NotInCanary {
        service: String,
        id: i64,
        phase: String,
    },
    #[error("slot {slot} of `{service}` is not running")]
    SlotNotRunning { service: String, slot: Slot },
    #[error("service `{0}` has no [services.{0}.database]")]
    NoDatabase(String),
    #[error("a slot of `{service}` still runs and writes to the database: {slots}; stop it first, or force it (its writes are lost)")]
    StillWrites { service: String, slots: String },
    #[error(transparent)]
    Database(crate::database::DatabaseError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeploymentInProgress { service, id } => {
                ControlError::InProgress { service, id }
            }
            other => ControlError::Store(other),
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub service: String,
    pub slot: Slot,
    pub version: Option<String>,
    pub addr: String,
    pub health: Vec<CheckResult>,
    pub healthy: bool,
    pub smoke: SmokeReport,
}

struct Active {
    id: i64,
    tx: mpsc::Sender<Input>,
}

pub struct Controller {
    config: Arc<Config>,
    store: Arc<Store>,
    /// Where each service's traffic is pointed.
    routers: HashMap<String, Arc<dyn Router>>,
    runtimes: HashMap<String, Arc<dyn Runtime>>,
    active: Mutex<HashMap<String, Active>>,
    progress: Arc<Mutex<HashMap<String, Progress>>>,
    notifier: Arc<Notifier>,
    switch_times: Arc<SwitchTimes>,
    /// One per service: held while a deployment is begun and launched, and while the
    /// standby reaper stops a slot, so the reaper never stops a release that a
    /// deployment has just started (it re-checks for one under the guard).
    guards: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// What the supervisor last saw of each live release (`supervisor.rs`).
    live_health: Mutex<HashMap<String, super::supervisor::LiveHealth>>,
}

impl Controller {
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        routers: HashMap<String, Arc<dyn Router>>,
        runtimes: HashMap<String, Arc<dyn Runtime>>,
    ) -> Arc<Self> {
        let guards = config
            .services
            .keys()
            .map(|name| (name.clone(), Arc::default()))
            .collect();
        Arc::new(Self {
            guards,
            live_health: Mutex::default(),
            store,
            routers,
            runtimes,
            active: Mutex::new(HashMap::new()),
            progress: Arc::new(Mutex::new(HashMap::new())),
            notifier: Notifier::new(&config.notifications),
            switch_times: Arc::default(),
            config,
        })
    }

    /// How long each service's switches took inside the process (for `/metrics`).
    pub fn switch_times(&self) -> Arc<SwitchTimes> {
        self.switch_times.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The router of a configured service. Every configured service has one
    /// (`routers_from_config` builds them all), so this panics only on a name that is
    /// not in the config, which callers check first.
    pub fn router(&self, service: &str) -> Arc<dyn Router> {
        self.routers
            .get(service)
            .cloned()
            .unwrap_or_else(|| panic!("no router for service `{service}`"))
    }

    /// Whether any deployment runs in this daemon now.
    pub fn deploying_any(&self) -> bool {
        !self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Whether a deployment of `name` runs in this daemon now.
    pub(super) fn deploying(&self, name: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    pub(super) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// What the supervisor last saw of the service's live release.
    pub fn live_health(&self, name: &str) -> Option<super::supervisor::LiveHealth> {
        self.live_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(super) fn set_live_health(&self, name: &str, h: super::supervisor::LiveHealth) {
        self.live_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), h);
    }

    /// The service's guard (see [`Controller`]'s `guards`); `None` for an unknown name.
    pub(super) fn guard(&self, name: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.guards.get(name).cloned()
    }

    pub(super) fn runtimes_get(&self, name: &str) -> Option<Arc<dyn Runtime>> {
        self.runtimes.get(name).cloned()
    }

    pub fn progress(&self, service: &str) -> Option<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    pub(super) fn service_cfg(
        &self,
        name: &str,
    ) -> Result<(Arc<ServiceConfig>, Arc<dyn Runtime>), ControlError> {
        let cfg = self
            .config
            .services
            .get(name)
            .ok_or_else(|| ControlError::UnknownService(name.into()))?;
        let rt = self
            .runtimes
            .get(name)
            .ok_or_else(|| ControlError::UnknownService(name.into()))?;
        Ok((Arc::new(cfg.clone()), rt.clone()))
    }

    /// Starts deploying `version` of `service` into its idle slot; returns the deployment id.
    pub async fn deploy(
        self: &Arc<Self>,
        service: &str,
        version: &str,
        by: &str,
    ) -> Result<i64, ControlError> {
        let (cfg, runtime) = self.service_cfg(service)?;
        let guard = self.guard(service).unwrap_or_default();
        let _held = guard.lock().await;
        let rec = self.store.service(service)?;
        let from = rec.live;
        let target = from.map(Slot::other).unwrap_or(Slot::Blue);
        let new = NewDeployment {
            service: service.into(),
            kind: DeploymentKind::Deploy,
            version: version.into(),
            target_slot: target,
            from_slot: from,
            from_version: from.and_then(|s| rec.slots[s.index()].version.clone()),
            triggered_by: by.into(),
            at: now_ms(),
        };
        let id = self.store.begin_deployment(&new)?;
        let plan = Plan::new(DeploymentKind::Deploy, &cfg, target, from, false);
        self.launch(id, cfg, runtime, version.into(), rec, plan);
        Ok(id)
    }

    /// Sends traffic back to the previous release. During a watch this switches back at
    /// once; after a finished deployment it brings the previous slot back (restarting
    /// and checking it if it was stopped) and then switches.
    pub async fn rollback(self: &Arc<Self>, service: &str, by: &str) -> Result<i64, ControlError> {
        let (cfg, runtime) = self.service_cfg(service)?;
        if let Some(active) = self.store.active_deployment(service)? {
            if active.switched_at.is_none() {
                return Err(ControlError::NotSwitchedYet {
                    service: service.into(),
                    id: active.id,
                });
            }
            self.send(service, Event::Rollback { by: by.into() })
                .await?;
            return Ok(active.id);
        }
        let guard = self.guard(service).unwrap_or_default();
        let _held = guard.lock().await;
        let rec = self.store.service(service)?;
        let live = rec
            .live
            .ok_or_else(|| ControlError::NothingToRollBack(service.into()))?;
        let target = live.other();
        let version = self.previous_release(service, &rec)?;
        let prev = &rec.slots[target.index()];
        // Instant when the previous release is still warm in the other slot; otherwise
        // it is started there again and checked before traffic returns to it.
        let target_running = prev.version.as_deref() == Some(version.as_str())
            && prev.state == SlotState::Standby
            && matches!(
                runtime.status(service, target).await,
                SlotStatus::Running { .. }
            );
        let new = NewDeployment {
            service: service.into(),
            kind: DeploymentKind::Rollback,
            version: version.clone(),
            target_slot: target,
            from_slot: Some(live),
            from_version: rec.slots[live.index()].version.clone(),
            triggered_by: by.into(),
            at: now_ms(),
        };
        let id = self.store.begin_deployment(&new)?;
        let plan = Plan::new(
            DeploymentKind::Rollback,
            &cfg,
            target,
            Some(live),
            target_running,
        );
        self.launch(id, cfg, runtime, version, rec, plan);
        Ok(id)
    }

    /// The release that was live before the current one: the `from_version` of the
    /// deployment that made the current live release live. A failed attempt that
    /// overwrote the idle slot does not change it.
    fn previous_release(&self, service: &str, rec: &ServiceRecord) -> Result<String, ControlError> {
        let none = || ControlError::NothingToRollBack(service.into());
        let live = rec.live.ok_or_else(none)?;
        let live_version = rec.slots[live.index()]
            .version
            .as_deref()
            .ok_or_else(none)?;
        self.store
            .previous_release(service, live, live_version)?
            .ok_or_else(none)
    }

    /// Stops the service's deployment in progress safely.
    pub async fn abort(&self, service: &str, by: &str) -> Result<i64, ControlError> {
        self.service_cfg(service)?;
        let active = self
            .store
            .active_deployment(service)?
            .ok_or_else(|| ControlError::NothingInProgress(service.into()))?;
        self.send(service, Event::Abort { by: by.into() }).await?;
        Ok(active.id)
    }

    /// Advances the canary in progress one step (`full`: to 100 %), or ends its hold.
    pub async fn promote(&self, service: &str, full: bool, by: &str) -> Result<i64, ControlError> {
        let id = self.active_canary(service)?;
        self.send(
            service,
            Event::Promote {
                full,
                by: by.into(),
            },
        )
        .await?;
        Ok(id)
    }

    /// Holds the canary in progress at its current step.
    pub async fn pause(&self, service: &str, by: &str) -> Result<i64, ControlError> {
        let id = self.active_canary(service)?;
        self.send(service, Event::Pause { by: by.into() }).await?;
        Ok(id)
    }

    pub async fn resume(&self, service: &str, by: &str) -> Result<i64, ControlError> {
        let id = self.active_canary(service)?;
        self.send(service, Event::Resume { by: by.into() }).await?;
        Ok(id)
    }

    /// The id of the service's deployment if it is in its canary steps.
    fn active_canary(&self, service: &str) -> Result<i64, ControlError> {
        self.service_cfg(service)?;
        let p = self
            .progress(service)
            .ok_or_else(|| ControlError::NothingInProgress(service.into()))?;
        if p.canary.as_ref().and_then(|c| c.step).is_some() {
            Ok(p.deployment_id)
        } else {
            Err(ControlError::NotInCanary {
                service: service.into(),
                id: p.deployment_id,
                phase: p.phase,
            })
        }
    }

    async fn send(&self, service: &str, event: Event) -> Result<(), ControlError> {
        let tx = {
            let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            active.get(service).map(|a| a.tx.clone())
        };
        match tx {
            Some(tx) if tx.send(Input::Event(event)).await.is_ok() => Ok(()),
            _ => Err(ControlError::NothingInProgress(service.into())),
        }
    }

    fn launch(
        self: &Arc<Self>,
        id: i64,
        cfg: Arc<ServiceConfig>,
        runtime: Arc<dyn Runtime>,
        version: String,
        rec: ServiceRecord,
        plan: Plan,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let name = cfg.name.clone();
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), Active { id, tx: tx.clone() });
        let runner = Runner::new(RunnerParts {
            id,
            service: cfg,
            version,
            store: self.store.clone(),
            runtime,
            router: self.router(&name),
            drain_timeout: self.config.proxy.drain_timeout,
            slots: rec.slots,
            progress: self.progress.clone(),
            notifier: self.notifier.clone(),
            switch_times: self.switch_times.clone(),
            state_dir: self.config.daemon.state_dir.clone(),
        });
        let this = self.clone();
        // Every log line of the deployment (and of the tasks it spawns while inside it)
        // carries the service and the deployment id.
        let span = tracing::info_span!("deployment", service = %name, id);
        tokio::spawn(
            async move {
                runner.run(Machine::new(plan), tx, rx).await;
                let mut active = this.active.lock().unwrap_or_else(|e| e.into_inner());
                if active.get(&name).is_some_and(|a| a.id == id) {
                    active.remove(&name);
                }
            }
            .instrument(span),
        );
    }

    /// Runs the health checks and smoke tests against one slot now.
    pub async fn check(&self, service: &str, slot: Slot) -> Result<CheckReport, ControlError> {
        let (cfg, runtime) = self.service_cfg(service)?;
        let rec = self.store.service(service)?;
        let srec = &rec.slots[slot.index()];
        let addr = srec.endpoint();
        let running = matches!(
            runtime.status(service, slot).await,
            SlotStatus::Running { .. }
        );
        let addr = match addr {
            Some(a) if running => a,
            _ => {
                return Err(ControlError::SlotNotRunning {
                    service: service.into(),
                    slot,
                })
            }
        };
        let target = ProbeTarget {
            endpoint: addr.clone(),
            service: service.into(),
            slot,
            version: srec.version.clone().unwrap_or_default(),
            tls: cfg.upstream_tls.clone(),
        };
        let health = checks::health_round(&cfg.health, &target).await;
        let smoke = checks::smoke(&cfg.smoke, &target).await;
        Ok(CheckReport {
            service: service.into(),
            slot,
            version: srec.version.clone(),
            addr: addr.to_string(),
            healthy: health.iter().all(|r| r.ok),
            health,
            smoke,
        })
    }
}
