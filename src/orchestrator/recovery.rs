//! Crash safety: what a (re)starting daemon does before it serves, and the reaper that
//! stops standby slots once their warm period is over.
//!
//! Boot rule: traffic goes to the last live slot that was healthy.
//! - Slots the store says are running are adopted from their runtime; gone ones are
//!   marked stopped.
//! - A deployment interrupted before its switch is marked `interrupted`; its new slot is
//!   stopped; traffic never moved.
//! - A deployment interrupted after its switch but before its watch passed is rolled
//!   back: traffic returns to the previous slot if that release still runs.
//! - If the live release itself is gone (the machine rebooted), it is started again.

use std::sync::Arc;
use std::time::Duration;

use super::controller::{ControlError, Controller};
use crate::domain::{now_ms, Slot};
use crate::runtime::{RunningSlot, SlotSpec, SlotStatus};
use crate::store::{DeploymentOutcome, SlotRecord, SlotState, Transition};

impl Controller {
    /// Reconciles the store with the runtimes and installs routing. Call once, before
    /// the proxy accepts traffic.
    pub async fn boot(self: &Arc<Self>) -> Result<(), ControlError> {
        let names: Vec<&str> = self.config().services.keys().map(String::as_str).collect();
        self.store().ensure_services(&names)?;
        let interrupted = self.store().active_deployments()?;

        for name in names {
            let runtime = self.runtime_of(name)?;
            let mut rec = self.store().service(name)?;
            // 1. Adopt what still runs, by its endpoint, handle and identity.
            for slot in Slot::ALL {
                let s = &mut rec.slots[slot.index()];
                let running = match (s.target(name), s.handle.clone()) {
                    (Some(t), Some(handle)) => {
                        let stored = RunningSlot {
                            endpoint: t.endpoint,
                            handle,
                            identity: t.identity,
                        };
                        runtime.adopt(name, slot, &stored).await
                    }
                    _ => None,
                };
                if let Some(r) = &running {
                    // The runtime may find the release elsewhere now (a container's new
                    // address) or name it its own way (a row from before identities).
                    let before = s.clone();
                    s.set_running(&r.endpoint, &r.handle, &r.identity);
                    if *s != before {
                        self.store().update_slot(name, s, None, None, now_ms())?;
                    }
                }
                if running.is_none() && (s.addr.is_some() || s.handle.is_some()) {
                    s.clear_running();
                    if matches!(
                        s.state,
                        SlotState::Standby | SlotState::Ready | SlotState::Starting
                    ) {
                        s.state = SlotState::Stopped;
                    }
                    let msg = format!("{slot} was not running at boot");
                    self.store()
                        .update_slot(name, s, None, Some(("boot", &msg)), now_ms())?;
                }
            }
            // 2. Settle an interrupted deployment.
            if let Some(d) = interrupted.iter().find(|d| d.service == name) {
                let target = d.target_slot;
                let (outcome, reason, live) = match (d.switched_at, d.from_slot) {
                    (None, _) => (
                        DeploymentOutcome::Interrupted,
                        format!("interrupted in phase {}: the daemon stopped before the switch; traffic never moved", d.phase),
                        rec.live,
                    ),
                    (Some(_), Some(from)) if rec.slots[from.index()].addr.is_some() => (
                        DeploymentOutcome::RolledBack,
                        format!("interrupted in phase {}: the daemon stopped before the watch passed; traffic returned to {from}", d.phase),
                        Some(from),
                    ),
                    (Some(_), _) => (
                        DeploymentOutcome::Failed,
                        format!("interrupted in phase {}: the daemon stopped before the watch passed and the previous release is not running; traffic stays on {target}", d.phase),
                        Some(target),
                    ),
                };
                let mut slots = Vec::new();
                if live != Some(target) {
                    let _ = runtime.stop(name, target).await;
                    let t = &mut rec.slots[target.index()];
                    t.clear_running();
                    t.state = SlotState::Failed;
                    slots.push(t.clone());
                }
                if let Some(l) = live {
                    rec.slots[l.index()].state = SlotState::Live;
                    slots.push(rec.slots[l.index()].clone());
                }
                rec.live = live;
                tracing::warn!(service = name, id = d.id, %reason, "settled an interrupted deployment");
                self.store().apply(&Transition {
                    deployment_id: d.id,
                    at: now_ms(),
                    slots,
                    live: Some(live),
                    finish: Some((outcome, reason.clone())),
                    event: Some(("deployment_interrupted".into(), reason)),
                    ..Default::default()
                })?;
            }
            // 3. The live release must run.
            if let Some(live) = rec.live {
                let s = rec.slots[live.index()].clone();
                if s.addr.is_none() {
                    if let Some(version) = s.version.clone() {
                        self.restart_live(name, live, &version, s).await?;
                        rec = self.store().service(name)?;
                    }
                }
            }
            // 4. Route.
            self.install_route(name, &rec.slots, rec.live).await;
        }
        Ok(())
    }

    fn runtime_of(&self, name: &str) -> Result<Arc<dyn crate::runtime::Runtime>, ControlError> {
        self.runtimes_get(name)
            .ok_or_else(|| ControlError::UnknownService(name.into()))
    }

    async fn restart_live(
        &self,
        name: &str,
        slot: Slot,
        version: &str,
        mut s: SlotRecord,
    ) -> Result<(), ControlError> {
        let runtime = self.runtime_of(name)?;
        let spec = SlotSpec {
            service: name.into(),
            slot,
            version: version.into(),
            deployment: None,
            env: crate::database::release_env(
                self.service_cfg(name).ok().map(|(c, _)| c).as_deref(),
                slot,
            ),
        };
        match runtime.start(&spec).await {
            Ok(r) => {
                s.set_running(&r.endpoint, &r.handle, &r.identity);
                s.state = SlotState::Live;
                let msg = format!("restarted live release {version} in {slot} at boot");
                tracing::warn!(service = name, %slot, version, "live release was not running; restarted it");
                self.store()
                    .update_slot(name, &s, None, Some(("boot", &msg)), now_ms())?;
            }
            Err(e) => {
                tracing::error!(service = name, %slot, error = %e, "cannot restart the live release")
            }
        }
        Ok(())
    }

    pub(super) async fn install_route(
        &self,
        name: &str,
        slots: &[SlotRecord; 2],
        live: Option<Slot>,
    ) {
        let live_t = live.and_then(|slot| slots[slot.index()].target(name));
        if let Err(e) = self.router(name).apply(name, live_t, None).await {
            tracing::error!(service = name, error = %e, "cannot install routing at boot");
        }
    }

    /// Stops standby slots whose warm period is over; runs until the task is dropped.
    pub async fn reap_standby(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.reap_once().await {
                tracing::error!(error = %e, "standby reaper failed");
            }
        }
    }

    /// One pass of the reaper (public for tests).
    pub async fn reap_once(&self) -> Result<(), ControlError> {
        let now = now_ms();
        for rec in self.store().services()? {
            if self.store().active_deployment(&rec.name)?.is_some() {
                continue; // the deployment owns the slots
            }
            for mut s in rec.slots.clone() {
                let expired =
                    s.state == SlotState::Standby && s.standby_until.is_some_and(|u| u <= now);
                if !expired || rec.live == Some(s.slot) {
                    continue;
                }
                let runtime = self.runtime_of(&rec.name)?;
                // The warm period is over: no more retries on this slot.
                self.router(&rec.name).unprotect(&rec.name);
                let _ = self
                    .router(&rec.name)
                    .drain(&rec.name, s.slot, self.config().proxy.drain_timeout)
                    .await;
                // The drain took time: a deployment may have begun meanwhile and started
                // its release in this very slot. Decide again under the service's guard,
                // which a deployment holds while it begins.
                let guard = self.guard(&rec.name).unwrap_or_default();
                let _held = guard.lock().await;
                if self.store().active_deployment(&rec.name)?.is_some() {
                    continue;
                }
                let now_rec = self.store().service(&rec.name)?.slots[s.slot.index()].clone();
                if now_rec.state != SlotState::Standby || now_rec.handle != s.handle {
                    continue; // no longer the standby this pass found
                }
                if let Err(e) = runtime.stop(&rec.name, s.slot).await {
                    tracing::error!(service = %rec.name, slot = %s.slot, error = %e, "cannot stop standby slot");
                    continue;
                }
                s.state = SlotState::Stopped;
                s.clear_running();
                s.standby_until = None;
                let msg = format!(
                    "warm period over; stopped {} ({})",
                    s.slot,
                    s.version.clone().unwrap_or_default()
                );
                self.store().update_slot(
                    &rec.name,
                    &s,
                    None,
                    Some(("standby_stopped", &msg)),
                    now,
                )?;
            }
        }
        Ok(())
    }

    /// Whether a slot's release still runs, per its runtime.
    pub async fn slot_running(&self, name: &str, slot: Slot) -> bool {
        match self.runtime_of(name) {
            Ok(rt) => matches!(rt.status(name, slot).await, SlotStatus::Running { .. }),
            Err(_) => false,
        }
    }
}
