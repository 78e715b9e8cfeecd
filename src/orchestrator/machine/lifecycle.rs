//! The phase handlers before and after the switch: health checks and smoke results,
//! the switch itself, the watch, success, switching back and finishing a deployment.
//!
//! Kept apart from `machine.rs` (types and the `step` dispatch) so each file stays short;
//! same rules as the rest of the machine: no I/O, no clock.

use std::time::Duration;

use super::{Effect, Machine, Phase, TimerKind};
use crate::config::HookPoint;
use crate::orchestrator::policy::{fmt_dur, Ms};
use crate::store::{DeploymentKind, DeploymentOutcome, SlotState};

impl Machine {
    pub(super) fn sample_interval(&self) -> Duration {
        self.plan
            .watch
            .as_ref()
            .map(|w| w.interval)
            .unwrap_or(Duration::from_secs(1))
    }

    /// Starts the target's release (after the `before_start` hooks, if any).
    pub(super) fn start_target(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        self.enter(now, Phase::Start, None, fx);
        fx.push(Effect::SlotState {
            slot: self.plan.target,
            state: SlotState::Starting,
            until_after: None,
        });
        fx.push(Effect::StartTarget);
    }

    pub(super) fn begin_health(&mut self, fx: &mut Vec<Effect>) {
        self.healthy_streak = 0;
        self.unhealthy_streak = 0;
        fx.push(self.schedule(TimerKind::HealthDeadline, self.plan.health_deadline));
        fx.push(Effect::CheckHealth);
    }

    pub(super) fn on_health_before_switch(
        &mut self,
        now: Ms,
        ok: bool,
        answered: bool,
        detail: String,
        fx: &mut Vec<Effect>,
    ) {
        if ok {
            self.healthy_streak += 1;
            self.unhealthy_streak = 0;
            if self.healthy_streak >= self.plan.healthy_threshold {
                fx.push(Effect::SlotState {
                    slot: self.plan.target,
                    state: SlotState::Ready,
                    until_after: None,
                });
                if self.plan.run_smoke {
                    self.enter(now, Phase::Smoke, None, fx);
                    fx.push(Effect::RunSmoke);
                } else {
                    self.after_checks(now, fx);
                }
                return;
            }
        } else {
            self.healthy_streak = 0;
            if answered {
                self.unhealthy_streak += 1;
                if self.unhealthy_streak >= self.plan.unhealthy_threshold {
                    let why = format!(
                        "unhealthy {} times in a row: {detail}",
                        self.unhealthy_streak
                    );
                    self.fail_before_switch(now, why, fx);
                    return;
                }
            }
        }
        fx.push(self.schedule(TimerKind::NextHealth, self.plan.health_interval));
    }

    pub(super) fn switch(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        self.enter(now, Phase::Switch, None, fx);
        fx.push(Effect::Route {
            live: Some(self.plan.target),
            preview: self.plan.from,
            switched: true,
        });
    }

    pub(super) fn after_switch(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        let target = self.plan.target;
        fx.push(Effect::SlotState {
            slot: target,
            state: SlotState::Live,
            until_after: None,
        });
        fx.push(Effect::Log(format!("traffic switched to {target}")));
        fx.push(Effect::Notify {
            event: "switched",
            message: format!("all traffic on {target}"),
        });
        let point = match self.plan.kind {
            DeploymentKind::Deploy => HookPoint::PostSwitch,
            // A rollback's switch is the moment traffic is back on the previous release.
            DeploymentKind::Rollback => HookPoint::OnRollback,
        };
        if self.plan.hooks.contains(&point) {
            if let (Some(from), HookPoint::PostSwitch) = (self.plan.from, point) {
                // Kept running while the hooks run, for an instant switch back.
                fx.push(Effect::SlotState {
                    slot: from,
                    state: SlotState::Standby,
                    until_after: None,
                });
            }
            self.hooks_first(now, point, fx);
        } else {
            self.watch_or_succeed(now, fx);
        }
    }

    /// After the switch (and its hooks): the watch, or success when there is none.
    pub(super) fn watch_or_succeed(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        match self.plan.watch.as_ref().filter(|w| !w.duration.is_zero()) {
            Some(w) => {
                let duration = w.duration;
                if let Some(from) = self.plan.from {
                    // Kept running (not stopped) through the watch for instant switch-back.
                    fx.push(Effect::SlotState {
                        slot: from,
                        state: SlotState::Standby,
                        until_after: None,
                    });
                }
                self.enter(now, Phase::Watch, None, fx);
                fx.push(self.schedule(TimerKind::WatchEnd, duration));
                fx.push(Effect::SampleStats);
                fx.push(self.schedule(TimerKind::NextHealth, self.plan.health_interval));
                self.begin_watch_analysis(fx);
            }
            None => self.succeed(now, fx),
        }
    }

    /// The deployment succeeded: its `after_success` hooks run first (a deploy's only),
    /// then it finishes.
    pub(super) fn succeed(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        let hooks = self.plan.kind == DeploymentKind::Deploy
            && self.hooks_first(now, HookPoint::AfterSuccess, fx);
        // A rollback deployment's traffic is back: its down-migrations, if configured.
        if !hooks && !self.database_down_first(now, fx) {
            self.complete_success(now, fx);
        }
    }

    pub(super) fn complete_success(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        // The release traffic left stays warm (deploy and rollback alike), so the next
        // rollback is instant too.
        if let Some(from) = self.plan.from {
            match self.plan.warm_for.is_zero() {
                false => fx.push(Effect::SlotState {
                    slot: from,
                    state: SlotState::Standby,
                    until_after: Some(self.plan.warm_for),
                }),
                true => {
                    fx.push(Effect::SlotState {
                        slot: from,
                        state: SlotState::Stopped,
                        until_after: None,
                    });
                    fx.push(Effect::Stop { slot: from });
                }
            }
        }
        let why = match self.plan.kind {
            DeploymentKind::Deploy => match &self.plan.watch {
                Some(w) if !w.duration.is_zero() => {
                    format!("live; watched for {} with no trigger", fmt_dur(w.duration))
                }
                _ => "live".to_string(),
            },
            DeploymentKind::Rollback => "traffic is back on the previous release".to_string(),
        };
        match self.down_failure.take() {
            // Traffic is back, the database is not: say so, and fail (exit 1).
            Some(down) => {
                let why = format!("{why}; {down}");
                self.finish(now, DeploymentOutcome::Failed, why, fx);
            }
            None => self.finish(now, DeploymentOutcome::Succeeded, why, fx),
        }
    }

    pub(super) fn switch_back(
        &mut self,
        now: Ms,
        outcome: DeploymentOutcome,
        why: String,
        fx: &mut Vec<Effect>,
    ) {
        match self.plan.from {
            Some(from) => {
                fx.push(Effect::Log(format!(
                    "switching traffic back to {from}: {why}"
                )));
                self.back_reason = Some((outcome, why.clone()));
                self.enter(now, Phase::SwitchBack, Some(why), fx);
                fx.push(Effect::Route {
                    live: Some(from),
                    preview: Some(self.plan.target),
                    switched: false,
                });
            }
            None => {
                let why = format!(
                    "{why}; there is no previous release to return to, so traffic stays on {}",
                    self.plan.target
                );
                self.finish(now, DeploymentOutcome::Failed, why, fx);
            }
        }
    }

    /// Traffic is back on the previous slot (and its hooks ran): finish with the
    /// reason traffic was sent back.
    pub(super) fn finish_switched_back(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        let (outcome, why) = self
            .back_reason
            .take()
            .unwrap_or((DeploymentOutcome::RolledBack, "rolled back".into()));
        let why = match self.down_failure.take() {
            Some(down) => format!("{why}; {down}"),
            None => why,
        };
        self.finish(now, outcome, why, fx);
    }

    pub(super) fn fail_before_switch(&mut self, now: Ms, why: String, fx: &mut Vec<Effect>) {
        self.finish_before_switch(now, DeploymentOutcome::Failed, why, fx)
    }

    pub(super) fn finish_before_switch(
        &mut self,
        now: Ms,
        outcome: DeploymentOutcome,
        why: String,
        fx: &mut Vec<Effect>,
    ) {
        let target = self.plan.target;
        if self.phase == Phase::Mirror {
            fx.push(Effect::Mirror(false));
        }
        // Stop what this deployment started (a warm standby a rollback merely checked
        // stays as it was).
        if self.plan.kind == DeploymentKind::Deploy || !self.plan.target_running {
            // Take the failed release off the preview route and stop it.
            fx.push(Effect::Route {
                live: self.plan.from,
                preview: None,
                switched: false,
            });
            let state = if outcome == DeploymentOutcome::Failed {
                SlotState::Failed
            } else {
                SlotState::Stopped
            };
            fx.push(Effect::SlotState {
                slot: target,
                state,
                until_after: None,
            });
            fx.push(Effect::Stop { slot: target });
        }
        self.finish(now, outcome, why, fx);
    }

    pub(super) fn finish(
        &mut self,
        now: Ms,
        outcome: DeploymentOutcome,
        why: String,
        fx: &mut Vec<Effect>,
    ) {
        let (outcome, why) = match (&self.store_failure, outcome) {
            (Some(cause), DeploymentOutcome::Aborted) => (
                DeploymentOutcome::Failed,
                format!("the store failed ({cause}); {why}"),
            ),
            _ => (outcome, why),
        };
        self.phase = Phase::Done;
        self.epoch += 1;
        self.phase_started = now;
        self.outcome = Some(outcome);
        let event = match outcome {
            DeploymentOutcome::Succeeded => "succeeded",
            DeploymentOutcome::Failed | DeploymentOutcome::Interrupted => "failed",
            DeploymentOutcome::RolledBack => "rolled_back",
            DeploymentOutcome::Aborted => "aborted",
        };
        fx.push(Effect::Notify {
            event,
            message: why.clone(),
        });
        fx.push(Effect::Finish {
            outcome,
            reason: why,
        });
    }
}
