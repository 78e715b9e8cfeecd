//! The progressive part of the state machine: mirroring before any traffic moves,
//! canary steps with analysis, pauses and `promote`, and analysis during the watch.
//!
//! Same rules as the rest of the machine: no I/O, no clock; measurements arrive as
//! `Event::Measured`, the mirror comparison as `Event::MirrorReport`.
//!
//! A canary step is done when three things hold: its weight is applied, its analysis
//! (if it asks for one) passed, and its pause is over (a duration elapsed, or
//! `promote` for an indefinite pause). A failed analysis, an exit of the new release, an
//! abort or a rollback sends all traffic back to the stable slot at once.

use serde::Serialize;

use super::{Effect, Event, Machine, Phase, TimerKind};
use crate::analysis::{AnalysisRun, Measurement, RunStatus};
use crate::config::{HookPoint, Pause};
use crate::orchestrator::policy::Ms;
use crate::store::DeploymentOutcome;

/// Canary and analysis bookkeeping held by the machine.
#[derive(Debug, Clone, Default)]
pub(super) struct Progressive {
    analysis: Option<AnalysisRun>,
    analysis_done: bool,
    pause_done: bool,
    /// Why the canary is held (manual pause, inconclusive analysis).
    held: Option<String>,
    /// The canary weight in effect (0 before the first step).
    weight: u8,
    last_round: Vec<Measurement>,
}

/// What `status` shows of a canary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryView {
    /// 1-based step in progress, if the deployment is in its canary steps.
    pub step: Option<usize>,
    pub steps: usize,
    /// Share of normal traffic on the new slot.
    pub weight: u8,
    /// Why the canary is held, if it is.
    pub held: Option<String>,
    /// The latest round of analysis measurements.
    pub analysis: Vec<Measurement>,
}

impl Machine {
    pub fn canary_view(&self) -> CanaryView {
        CanaryView {
            step: match self.phase {
                Phase::Canary(n) => Some(n + 1),
                _ => None,
            },
            steps: self.plan.canary.len(),
            weight: match self.phase {
                Phase::Canary(_) => self.progress.weight,
                Phase::Switch | Phase::Watch => 100,
                _ if self.switched => 100,
                _ => 0,
            },
            held: self.progress.held.clone(),
            analysis: self.progress.last_round.clone(),
        }
    }

    /// After health and smoke: mirror, then canary steps, then the switch.
    pub(super) fn after_checks(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        match &self.plan.mirror {
            Some(m) => {
                let duration = m.duration;
                self.enter(now, Phase::Mirror, None, fx);
                fx.push(Effect::Mirror(true));
                fx.push(self.schedule(TimerKind::MirrorEnd, duration));
            }
            None => self.begin_traffic(now, fx),
        }
    }

    /// Every check passed: the `pre_switch` hooks, then the first canary step or the
    /// switch.
    fn begin_traffic(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        if !self.hooks_first(now, HookPoint::PreSwitch, fx) {
            self.move_traffic(now, fx);
        }
    }

    /// The first canary step, or the switch.
    pub(super) fn move_traffic(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        if self.plan.canary.is_empty() || self.plan.from.is_none() {
            self.switch(now, fx);
        } else {
            self.enter_step(now, 0, fx);
        }
    }

    pub(super) fn on_mirror(&mut self, now: Ms, event: Event, fx: &mut Vec<Effect>) {
        let Some(cfg) = self.plan.mirror.clone() else {
            return;
        };
        match event {
            Event::Timer(t) if t.epoch == self.epoch && t.kind == TimerKind::MirrorEnd => {
                fx.push(Effect::CheckMirror);
            }
            Event::MirrorReport(report) => {
                fx.push(Effect::Mirror(false));
                let r = report.unwrap_or_default();
                let rate = match r.compared {
                    0 => 0.0,
                    n => r.mismatched as f64 / n as f64,
                };
                let summary = format!(
                    "{} mirrored, {} compared, {} with another status class ({:.1}%), {} failed, {} dropped",
                    r.mirrored,
                    r.compared,
                    r.mismatched,
                    rate * 100.0,
                    r.failed,
                    r.dropped
                );
                fx.push(Effect::Log(format!("mirror: {summary}")));
                if r.compared >= cfg.min_requests && rate > cfg.max_mismatch {
                    let why = format!(
                        "mirrored traffic disagreed: {summary} (max {:.1}%)",
                        cfg.max_mismatch * 100.0
                    );
                    self.fail_before_switch(now, why, fx);
                } else {
                    self.begin_traffic(now, fx);
                }
            }
            Event::RouteFailed(why) => {
                fx.push(Effect::Mirror(false));
                self.fail_before_switch(now, format!("cannot mirror traffic: {why}"), fx);
            }
            Event::Exited(why) => {
                self.fail_before_switch(now, format!("the new release exited: {why}"), fx)
            }
            Event::Abort { by } => {
                let why = format!("aborted by {by} before the switch");
                self.finish_before_switch(now, DeploymentOutcome::Aborted, why, fx);
            }
            _ => {}
        }
    }

    fn enter_step(&mut self, now: Ms, n: usize, fx: &mut Vec<Effect>) {
        let step = self.plan.canary[n].clone();
        self.enter(now, Phase::Canary(n), None, fx);
        self.progress.analysis_done = false;
        self.progress.pause_done = false;
        self.progress.analysis = None;
        fx.push(Effect::Split {
            canary_percent: step.weight,
        });
    }

    pub(super) fn on_canary(&mut self, now: Ms, event: Event, fx: &mut Vec<Effect>) {
        let Phase::Canary(n) = self.phase else { return };
        let step = self.plan.canary[n].clone();
        match event {
            Event::Routed => {
                self.switched = true;
                self.progress.weight = step.weight;
                let total = self.plan.canary.len();
                let msg = format!(
                    "canary step {}/{total}: {}% of traffic on {}",
                    n + 1,
                    step.weight,
                    self.plan.target
                );
                fx.push(Effect::Log(msg.clone()));
                fx.push(Effect::Notify {
                    event: "step",
                    message: msg,
                });
                if let Some(by) = self.pending_abort.take() {
                    let why = format!("aborted by {by} during canary step {}", n + 1);
                    return self.switch_back(now, DeploymentOutcome::Aborted, why, fx);
                }
                match (&self.plan.analysis, step.analyze) {
                    (Some(cfg), true) => {
                        self.progress.analysis = Some(AnalysisRun::for_step(cfg));
                        fx.push(self.schedule(TimerKind::NextMeasure, cfg.interval));
                    }
                    _ => self.progress.analysis_done = true,
                }
                match step.pause {
                    Pause::None => self.progress.pause_done = true,
                    Pause::For(d) => fx.push(self.schedule(TimerKind::StepPause, d)),
                    Pause::UntilPromoted => {
                        fx.push(Effect::Log(format!(
                            "canary step {} holds until `cutover promote`",
                            n + 1
                        )));
                    }
                }
                self.try_advance(now, fx);
            }
            Event::RouteFailed(why) => {
                // The split was refused: traffic is where it was before this step.
                let why = format!(
                    "canary step {} ({}%) failed to apply: {why}",
                    n + 1,
                    step.weight
                );
                if self.switched {
                    self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
                } else {
                    self.fail_before_switch(now, why, fx);
                }
            }
            Event::Timer(t) if t.epoch == self.epoch => match t.kind {
                TimerKind::NextMeasure => fx.push(Effect::Measure),
                TimerKind::StepPause => {
                    self.progress.pause_done = true;
                    self.try_advance(now, fx);
                }
                _ => {}
            },
            Event::Measured(round) => {
                let status = match self.progress.analysis.as_mut() {
                    Some(run) => run.record(&round),
                    None => return,
                };
                self.progress.last_round = round;
                match status {
                    RunStatus::Running => {
                        if let Some(cfg) = &self.plan.analysis {
                            fx.push(self.schedule(TimerKind::NextMeasure, cfg.interval));
                        }
                    }
                    RunStatus::Passed => {
                        self.progress.analysis_done = true;
                        self.try_advance(now, fx);
                    }
                    RunStatus::Failed(why) => {
                        let why = format!(
                            "analysis failed at canary step {} ({}%): {why}",
                            n + 1,
                            step.weight
                        );
                        self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
                    }
                    RunStatus::Inconclusive(why) => {
                        let why = format!("analysis inconclusive at canary step {}: {why}; `cutover promote` to go on or `cutover abort`", n + 1);
                        fx.push(Effect::Log(why.clone()));
                        fx.push(Effect::Notify {
                            event: "paused",
                            message: why.clone(),
                        });
                        self.progress.held = Some(why);
                        // A human decides: promote counts as a passed analysis.
                        self.progress.analysis = None;
                    }
                }
            }
            Event::Promote { full, by } => {
                fx.push(Effect::Log(format!(
                    "promoted by {by}{}",
                    if full { " to 100%" } else { "" }
                )));
                fx.push(Effect::Notify {
                    event: "promoted",
                    message: format!("promoted by {by} at canary step {}", n + 1),
                });
                self.progress.held = None;
                if full {
                    self.switch(now, fx);
                } else {
                    self.next_step(now, fx);
                }
            }
            Event::Pause { by } => {
                let why = format!("paused by {by}");
                fx.push(Effect::Log(why.clone()));
                self.progress.held = Some(why);
            }
            Event::Resume { by } => {
                fx.push(Effect::Log(format!("resumed by {by}")));
                self.progress.held = None;
                self.try_advance(now, fx);
            }
            Event::Exited(why) => {
                let why = format!("the new release exited during canary step {}: {why}", n + 1);
                self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
            }
            Event::Abort { by } => {
                let why = format!("aborted by {by} during canary step {}", n + 1);
                self.switch_back(now, DeploymentOutcome::Aborted, why, fx);
            }
            Event::Rollback { by } => {
                let why = format!("rollback requested by {by} during canary step {}", n + 1);
                self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
            }
            Event::Tripped(why) => {
                let why = format!("{why} during canary step {}", n + 1);
                self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
            }
            _ => {}
        }
    }

    /// Moves on when the step's weight, analysis and pause are all done.
    fn try_advance(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        let Phase::Canary(n) = self.phase else { return };
        let waiting_for_promote = matches!(self.plan.canary[n].pause, Pause::UntilPromoted);
        let p = &self.progress;
        if p.held.is_none() && p.analysis_done && p.pause_done && !waiting_for_promote {
            self.next_step(now, fx);
        }
    }

    fn next_step(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        let Phase::Canary(n) = self.phase else { return };
        if n + 1 < self.plan.canary.len() {
            self.enter_step(now, n + 1, fx);
        } else {
            self.switch(now, fx);
        }
    }

    /// Continuous analysis during the watch, if the service has one.
    pub(super) fn begin_watch_analysis(&mut self, fx: &mut Vec<Effect>) {
        if let Some(cfg) = &self.plan.analysis {
            self.progress.analysis = Some(AnalysisRun::continuous(cfg));
            fx.push(self.schedule(TimerKind::NextMeasure, cfg.interval));
        }
    }

    pub(super) fn on_watch_round(
        &mut self,
        now: Ms,
        round: Vec<Measurement>,
        fx: &mut Vec<Effect>,
    ) {
        let status = match self.progress.analysis.as_mut() {
            Some(run) => run.record(&round),
            None => return,
        };
        self.progress.last_round = round;
        match status {
            RunStatus::Failed(why) => {
                let why = format!("analysis failed during the watch: {why}");
                self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
            }
            RunStatus::Inconclusive(why) => {
                // The watch does not wait for people: note it and keep measuring.
                fx.push(Effect::Log(format!(
                    "analysis inconclusive during the watch: {why}"
                )));
                if let Some(cfg) = &self.plan.analysis {
                    fx.push(self.schedule(TimerKind::NextMeasure, cfg.interval));
                }
            }
            RunStatus::Running | RunStatus::Passed => {
                if let Some(cfg) = &self.plan.analysis {
                    fx.push(self.schedule(TimerKind::NextMeasure, cfg.interval));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "progressive_tests.rs"]
mod tests;
