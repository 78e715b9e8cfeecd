//! Hook phases: the operator's commands and HTTP calls at named points of a deployment.
//!
//! A point with hooks is a phase of its own (`hooks_pre_switch`, ...): the machine asks
//! for `Effect::RunHooks(point)` and waits for `Event::Hooks`, whose `failure` is set
//! only when a hook with `on_failure = "abort"` failed (or timed out). What happens then
//! depends on where the point is:
//! - `before_start`: nothing was started and traffic never moved, so the deployment
//!   just fails;
//! - `pre_switch`: like any failed check before the switch (the new slot is stopped,
//!   the live route never changes);
//! - `post_switch`: like a watch trigger (traffic switches back to the previous slot);
//! - `after_success` and `on_rollback` cannot abort (the config refuses it).
//!
//! An `abort` (or `rollback`) that arrives while hooks run is handled as in the phase
//! around them: before the switch the deployment stops, after it traffic switches
//! back. The runner then kills the hook still running (its whole process group): an
//! aborted deployment must not leave a half-run hook behind while the next deployment
//! starts. While `on_rollback` hooks run, traffic is already back and there is
//! nothing left to abort, so they finish.
//!
//! Same rules as the rest of the machine: no I/O, no clock.

use super::{Effect, Event, Machine, Phase};
use crate::config::HookPoint;
use crate::orchestrator::policy::Ms;
use crate::store::DeploymentOutcome;

impl Machine {
    /// Enters the hook phase of `point` and asks for its hooks, if it has any; returns
    /// whether it did (else the caller goes on at once: no phase, no delay).
    pub(super) fn hooks_first(&mut self, now: Ms, point: HookPoint, fx: &mut Vec<Effect>) -> bool {
        if !self.plan.hooks.contains(&point) {
            return false;
        }
        self.enter(now, Phase::Hooks(point), None, fx);
        fx.push(Effect::RunHooks(point));
        true
    }

    pub(super) fn on_hooks(
        &mut self,
        now: Ms,
        point: HookPoint,
        event: Event,
        fx: &mut Vec<Effect>,
    ) {
        match event {
            Event::Hooks { point: p, failure } if p == point => match failure {
                None => self.after_hooks(now, point, fx),
                Some(why) => self.hooks_failed(now, point, why, fx),
            },
            Event::Abort { by } => match point {
                HookPoint::BeforeStart => {
                    // Nothing was started: there is nothing to stop.
                    let why = format!("aborted by {by} before the switch");
                    self.finish(now, DeploymentOutcome::Aborted, why, fx);
                }
                HookPoint::PreSwitch => {
                    let why = format!("aborted by {by} before the switch");
                    self.finish_before_switch(now, DeploymentOutcome::Aborted, why, fx);
                }
                HookPoint::PostSwitch | HookPoint::AfterSuccess => {
                    let why = format!("aborted by {by} during the {point} hooks");
                    self.switch_back(now, DeploymentOutcome::Aborted, why, fx);
                }
                HookPoint::OnRollback => fx.push(Effect::Log(format!(
                    "abort by {by} ignored: traffic is already back on the previous release"
                ))),
            },
            Event::Rollback { by } => match point {
                HookPoint::PostSwitch | HookPoint::AfterSuccess => {
                    let why = format!("rollback requested by {by} during the {point} hooks");
                    self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
                }
                _ => {}
            },
            Event::Exited(why) => match point {
                HookPoint::PreSwitch => {
                    self.fail_before_switch(now, format!("the new release exited: {why}"), fx)
                }
                HookPoint::PostSwitch | HookPoint::AfterSuccess => {
                    let why = format!("the new release exited: {why}");
                    self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
                }
                _ => {}
            },
            // Stale timers and late results of the phase before.
            _ => {}
        }
    }

    /// The hooks of `point` passed (or failed with `warn`): go on where they were.
    fn after_hooks(&mut self, now: Ms, point: HookPoint, fx: &mut Vec<Effect>) {
        match point {
            HookPoint::BeforeStart => self.database_or_start(now, fx),
            HookPoint::PreSwitch => self.move_traffic(now, fx),
            HookPoint::PostSwitch => self.watch_or_succeed(now, fx),
            HookPoint::AfterSuccess => self.complete_success(now, fx),
            HookPoint::OnRollback => match self.back_reason {
                Some(_) => self.after_switched_back(now, fx),
                // A rollback deployment's own switch.
                None => self.watch_or_succeed(now, fx),
            },
        }
    }

    /// A hook with `on_failure = "abort"` failed.
    fn hooks_failed(&mut self, now: Ms, point: HookPoint, why: String, fx: &mut Vec<Effect>) {
        let why = format!("{point} hook {why}");
        match point {
            // Nothing started, traffic untouched: nothing to undo.
            HookPoint::BeforeStart => self.finish(now, DeploymentOutcome::Failed, why, fx),
            HookPoint::PreSwitch => self.fail_before_switch(now, why, fx),
            HookPoint::PostSwitch => self.switch_back(now, DeploymentOutcome::RolledBack, why, fx),
            // Cannot abort (the config refuses it); carry on as after a warning.
            HookPoint::AfterSuccess | HookPoint::OnRollback => {
                fx.push(Effect::Log(why));
                self.after_hooks(now, point, fx);
            }
        }
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
