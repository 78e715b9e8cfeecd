//! The runner's side of the data plane's guard (`proxy::shield`): set it just before
//! traffic first reaches the target, end its burst trigger when the watch is over,
//! remove it when the deployment does not leave the previous release warm.
//!
//! When the trigger fires, the proxy has already moved normal traffic back; the watcher
//! task turns that into `Event::Tripped`, and the machine ends the deployment through
//! its usual switch-back (the route applied again, for external routers too, then the
//! target stopped and the outcome `rolled_back` with the trigger's reason).
//!
//! Armed: from the first request to the target (the first canary weight above 0, or
//! the switch) until the machine leaves the canary steps, the switch, the watch and the
//! `post_switch` hooks. A rollback deployment (the operator's switch back to an earlier
//! release) is never guarded.

use super::{Input, Runner};
use crate::config::HookPoint;
use crate::orchestrator::machine::{Event, Machine, Phase};
use crate::store::{DeploymentKind, DeploymentOutcome};

impl Runner {
    /// Sets the guard over the target once per deployment (later canary steps keep it,
    /// with its budget and its trigger's counts).
    pub(super) fn arm_guard(&mut self, machine: &Machine) {
        let plan = machine.plan();
        if self.guard.is_some() || plan.kind != DeploymentKind::Deploy {
            return;
        }
        let Some(from) = plan.from else { return };
        let (Some(new), Some(previous)) =
            (self.target_of_slot(plan.target), self.target_of_slot(from))
        else {
            return;
        };
        let svc = &self.service;
        let Some(guard) =
            self.router
                .protect(&svc.name, new, previous, &svc.shield, svc.burst.as_ref())
        else {
            return;
        };
        let watcher = match (&svc.burst, &self.events) {
            (Some(_), Some(tx)) => {
                let (g, tx) = (guard.clone(), tx.clone());
                Some(tokio::spawn(async move {
                    let why = g.tripped().await;
                    let _ = tx.send(Input::Event(Event::Tripped(why))).await;
                }))
            }
            _ => None,
        };
        self.guard = Some((guard, watcher));
    }

    /// Ends the burst trigger once the machine is past the phases it guards.
    pub(super) fn settle_trigger(&mut self, machine: &Machine) {
        let armed = matches!(
            machine.phase(),
            Phase::Canary(_) | Phase::Switch | Phase::Watch | Phase::Hooks(HookPoint::PostSwitch)
        );
        if armed {
            return;
        }
        if let Some((guard, watcher)) = &mut self.guard {
            guard.disarm_trigger();
            if let Some(w) = watcher.take() {
                // A trip already sent stays in the channel; the machine decides on it.
                if !guard.has_tripped() {
                    w.abort();
                }
            }
        }
    }

    /// The deployment is over: keep the shield while the previous release stays warm
    /// after a success, remove it otherwise. A trip that raced the watch's end (the
    /// machine succeeded first) is undone: the store says the target is live.
    pub(super) async fn settle_guard(&mut self, machine: &Machine, outcome: DeploymentOutcome) {
        let Some((guard, watcher)) = self.guard.take() else {
            return;
        };
        if let Some(w) = watcher {
            w.abort();
        }
        guard.disarm_trigger();
        let warm = outcome == DeploymentOutcome::Succeeded && !self.service.warm_for.is_zero();
        if outcome == DeploymentOutcome::Succeeded && guard.has_tripped() {
            tracing::warn!(service = %self.service.name, "burst trigger fired as the watch ended; the deployment succeeded, traffic stays on the new release");
            let _ = self.route(Some(machine.plan().target), None).await;
        }
        if !warm {
            self.router.unprotect(&self.service.name);
        }
    }
}
