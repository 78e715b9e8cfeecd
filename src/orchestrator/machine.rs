//! The deployment state machine: phases, events in, effects out.
//!
//! Architecture invariant: this file does no I/O and never reads the clock. Time comes
//! in with every event (`now`, milliseconds on the runner's monotonic clock) and the
//! machine asks to be woken with [`Effect::Schedule`]. The runner (`runner.rs`) carries
//! out effects and feeds their results back as events. This is what makes every
//! rollback rule a table-driven unit test.
//!
//! Phases of a deploy: lock → [hooks_before_start] → [database] → start → wait_healthy → smoke →
//! [mirror] → [hooks_pre_switch] → [canary steps] → switch → [hooks_post_switch] → watch
//! → [hooks_after_success] → done; a switch back is followed by [hooks_on_rollback].
//! Mirroring and canary steps (with their analysis, pauses and `promote`) live in
//! `machine/progressive.rs`; the handlers around the switch (health gate, switch, watch
//! outcome, switch back, finish) in `machine/lifecycle.rs`; hook phases (entered only
//! when the point has hooks) in `machine/hooks.rs`.
//! A rollback (traffic back to the previous release) is the same machine with
//! `start` skipped when that release still runs, and no smoke or watch.
//!
//! Safety rules encoded here (mostly in `machine/lifecycle.rs`):
//! - nothing before `switch` ever changes the live route (a failed `pre_switch` hook
//!   included);
//! - a failure before the switch stops the new slot and leaves traffic untouched;
//! - a trigger during the watch switches back to the previous slot at once;
//! - the previous slot is never stopped before the watch passed.

use std::time::Duration;

mod database;
mod hooks;
mod lifecycle;
mod plan;
mod progressive;

pub use progressive::CanaryView;

use super::policy::{fmt_dur, Ms, WatchPolicy};
use crate::analysis::Measurement;
use crate::config::{
    AnalysisConfig, CanaryStep, DownOnRollback, HookPoint, MirrorConfig, WatchConfig,
};
use crate::domain::routing::MirrorReport;
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;
use crate::store::{DeploymentKind, DeploymentOutcome, SlotState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Lock,
    Start,
    WaitHealthy,
    Smoke,
    /// Live traffic copied to the new slot, responses compared.
    Mirror,
    /// Canary step `n` (0-based): part of the traffic on the new slot.
    Canary(usize),
    Switch,
    Watch,
    /// Switching traffic back to the previous slot after a trigger, abort or rollback.
    SwitchBack,
    /// The hooks of one point run (only entered when the point has hooks).
    Hooks(HookPoint),
    /// Backup, lint, rehearsal, compatibility proof and migrations (only entered when
    /// the service has a database); before anything starts or moves.
    Database,
    /// The down-migrations that take the database back to its version before the
    /// deployment, once traffic is back (only with `down_on_rollback`).
    DatabaseDown,
    Done,
}

impl Phase {
    /// The name stored with the deployment: `canary_2` for the second step.
    pub fn label(self) -> String {
        match self {
            Phase::Canary(n) => format!("canary_{}", n + 1),
            other => other.as_str().to_string(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lock => "lock",
            Phase::Start => "start",
            Phase::WaitHealthy => "wait_healthy",
            Phase::Smoke => "smoke",
            Phase::Mirror => "mirror",
            Phase::Canary(_) => "canary",
            Phase::Switch => "switch",
            Phase::Watch => "watch",
            Phase::SwitchBack => "switch_back",
            Phase::Hooks(point) => match point {
                HookPoint::BeforeStart => "hooks_before_start",
                HookPoint::PreSwitch => "hooks_pre_switch",
                HookPoint::PostSwitch => "hooks_post_switch",
                HookPoint::AfterSuccess => "hooks_after_success",
                HookPoint::OnRollback => "hooks_on_rollback",
            },
            Phase::Database => "database",
            Phase::DatabaseDown => "database_down",
            Phase::Done => "done",
        }
    }
}

/// Everything fixed for one deployment.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: DeploymentKind,
    /// The slot being brought live.
    pub target: Slot,
    /// The slot live when the deployment began (`None` on a first deploy).
    pub from: Option<Slot>,
    /// The target's release is already running and only needs checking (a warm standby).
    pub target_running: bool,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub health_interval: Duration,
    pub health_deadline: Duration,
    pub run_smoke: bool,
    /// `None`: no watch (rollbacks).
    pub watch: Option<WatchConfig>,
    /// How long `from` stays running after success.
    pub warm_for: Duration,
    /// Canary steps; empty = all traffic at once (blue-green).
    pub canary: Vec<CanaryStep>,
    /// Metric analysis for canary steps and the watch.
    pub analysis: Option<AnalysisConfig>,
    /// Shadow live traffic to the new slot before any of it moves.
    pub mirror: Option<MirrorConfig>,
    /// The points that have hooks (a rollback uses only `before_start` and
    /// `on_rollback`); a point without hooks adds no phase.
    pub hooks: Vec<HookPoint>,
    /// Run the database phase (a deploy of a service with a database).
    pub database: bool,
    /// Whether traffic going back also runs the down-migrations (`down_on_rollback`).
    pub database_down: DownOnRollback,
}

/// Results and wake-ups fed to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The lock is held (the store accepted the deployment): begin.
    Begin,
    Started,
    StartFailed(String),
    /// One health round of the target. `answered`: the release responded at all (an
    /// HTTP status, a TCP connect, a command that ran); failures of a release that does
    /// not answer yet only count against the deadline.
    HealthRound {
        ok: bool,
        answered: bool,
        detail: String,
    },
    Smoke {
        passed: bool,
        failure: Option<String>,
    },
    /// The router applied the requested routing.
    Routed,
    RouteFailed(String),
    /// Cumulative statistics of the target slot, and whether its release still runs.
    Sample {
        stats: Box<StatsSnapshot>,
        exited: Option<String>,
    },
    /// The target's release exited on its own.
    Exited(String),
    Timer(Timer),
    Abort {
        by: String,
    },
    Rollback {
        by: String,
    },
    /// One round of analysis measurements (every metric once).
    Measured(Vec<Measurement>),
    /// How mirrored requests compared (`None`: the router could not say).
    MirrorReport(Option<MirrorReport>),
    /// Advance one canary step (`full`: straight to 100 %); also ends a pause.
    Promote {
        full: bool,
        by: String,
    },
    /// The runner could not write the deployment's record (a step, a check result):
    /// the deployment stops as an abort would (traffic stays on, or goes back to, the
    /// slot the store knows as live) and ends `failed` naming the cause.
    StoreFailed(String),
    /// Hold the current canary step.
    Pause {
        by: String,
    },
    Resume {
        by: String,
    },
    /// The hooks of `point` ran. `failure` is set only when a hook with
    /// `on_failure = "abort"` failed (the runner records `warn` failures and answers
    /// `None`).
    Hooks {
        point: HookPoint,
        failure: Option<String>,
    },
    /// The database phase is over; `failure` says why it stopped the deployment
    /// (nothing was started and the live database was not migrated, unless the
    /// reason says a migration failed).
    Database {
        failure: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub kind: TimerKind,
    /// Phase generation the timer was set in; stale timers are ignored.
    pub epoch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    HealthDeadline,
    NextHealth,
    NextSample,
    WatchEnd,
    NextMeasure,
    StepPause,
    MirrorEnd,
}

/// What the runner must do. Effects are executed in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Persist: the deployment entered this phase (the previous one closes with `result`).
    Enter {
        phase: Phase,
        result: Option<String>,
    },
    /// Persist: a slot's state changed. `until` is set for `Standby`.
    SlotState {
        slot: Slot,
        state: SlotState,
        until_after: Option<Duration>,
    },
    /// Start the target slot's release; answer `Started`/`StartFailed`.
    StartTarget,
    /// Run one health round on the target; answer `HealthRound`.
    CheckHealth,
    /// Run the smoke tests on the target; answer `Smoke`.
    RunSmoke,
    /// Point normal traffic at `live` and preview traffic at `preview`; answer
    /// `Routed`/`RouteFailed`. `switched` marks the moment traffic moved to the target.
    Route {
        live: Option<Slot>,
        preview: Option<Slot>,
        switched: bool,
    },
    /// Sample the target's statistics; answer `Sample`.
    SampleStats,
    Schedule {
        after: Duration,
        timer: Timer,
    },
    /// Wait for in-flight requests on `slot` (bounded by the drain timeout), then stop it.
    Stop {
        slot: Slot,
    },
    /// Persist: the deployment is over.
    Finish {
        outcome: DeploymentOutcome,
        reason: String,
    },
    /// Persist: an event-log line.
    Log(String),
    /// Send `canary_percent` % of normal traffic to the target, the rest to `from`;
    /// answer `Routed`/`RouteFailed`.
    Split {
        canary_percent: u8,
    },
    /// Measure every analysis metric once; answer `Measured`.
    Measure,
    /// Start (`true`) or stop mirroring live traffic to the target; a failure to start
    /// answers `RouteFailed`.
    Mirror(bool),
    /// Read how mirrored requests compared; answer `MirrorReport`.
    CheckMirror,
    /// Run the hooks of a point in config order (each recorded like a check); answer
    /// `Hooks`.
    RunHooks(HookPoint),
    /// Back up, lint, rehearse, prove and migrate the service's database (each step
    /// recorded like a check, phase `db:<step>`); answer `Database`.
    RunDatabase,
    /// Run the down-migrations of the deployment being undone, back to the version
    /// recorded before it (each recorded, phase `db:down`); answer `Database`.
    RunDatabaseDown,
    /// Tell the webhooks (never waited on).
    Notify {
        event: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Machine {
    plan: Plan,
    phase: Phase,
    epoch: u32,
    phase_started: Ms,
    healthy_streak: u32,
    unhealthy_streak: u32,
    watch: Option<WatchPolicy>,
    /// Set when the switch happened (traffic on the target).
    switched: bool,
    /// Why traffic is being switched back (becomes the final reason).
    back_reason: Option<(DeploymentOutcome, String)>,
    /// An abort arrived while a route change was in flight.
    pending_abort: Option<String>,
    outcome: Option<DeploymentOutcome>,
    /// Canary and analysis progress (see `progressive.rs`).
    progress: progressive::Progressive,
    /// Why the store failed, when it did: the abort it caused ends `failed` with it.
    store_failure: Option<String>,
    /// Traffic is going back because a person asked (a rollback or an abort), not
    /// because a trigger fired: decides `down_on_rollback = "manual"`.
    back_by_person: bool,
    /// Why the down-migrations after a rollback failed, when they did.
    down_failure: Option<String>,
}

impl Machine {
    pub fn new(plan: Plan) -> Self {
        let watch = plan.watch.clone().map(WatchPolicy::new);
        Self {
            plan,
            phase: Phase::Lock,
            epoch: 0,
            phase_started: 0,
            healthy_streak: 0,
            unhealthy_streak: 0,
            watch,
            switched: false,
            back_reason: None,
            pending_abort: None,
            outcome: None,
            progress: Default::default(),
            store_failure: None,
            back_by_person: false,
            down_failure: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn outcome(&self) -> Option<DeploymentOutcome> {
        self.outcome
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The latest watch window evaluation, for progress display.
    pub fn watch_view(&self) -> Option<&super::policy::WindowView> {
        self.watch.as_ref().and_then(|w| w.last_view())
    }

    /// When the current phase began, on the runner's clock.
    pub fn phase_started(&self) -> Ms {
        self.phase_started
    }

    /// Feeds one event; returns what to do.
    pub fn step(&mut self, now: Ms, event: Event) -> Vec<Effect> {
        if let Event::StoreFailed(why) = event {
            if matches!(self.phase, Phase::Done | Phase::SwitchBack) {
                return Vec::new(); // already ending, or already going back
            }
            self.store_failure.get_or_insert(why);
            return self.step(
                now,
                Event::Abort {
                    by: "cutover".into(),
                },
            );
        }
        let mut fx = Vec::new();
        let (was, by_person) = (
            self.phase,
            // (a store failure aborts as `cutover`: not a person)
            matches!(&event, Event::Rollback { by } | Event::Abort { by } if by != "cutover"),
        );
        self.dispatch(now, event, &mut fx);
        if self.phase == Phase::SwitchBack && was != Phase::SwitchBack {
            self.back_by_person |= by_person;
        }
        fx
    }

    fn dispatch(&mut self, now: Ms, event: Event, fx: &mut Vec<Effect>) {
        match (self.phase, event) {
            (Phase::Done, Event::Started) => {
                // A start that completed after an abort: do not leave it running.
                fx.push(Effect::Stop {
                    slot: self.plan.target,
                });
            }
            (Phase::Done, _) => {}
            (Phase::Lock, Event::Begin) => {
                if self.plan.kind == DeploymentKind::Deploy {
                    fx.push(Effect::Notify {
                        event: "started",
                        message: format!("deploying to {}", self.plan.target),
                    });
                }
                if self.plan.target_running {
                    self.enter(now, Phase::WaitHealthy, None, fx);
                    self.begin_health(fx);
                } else if !self.hooks_first(now, HookPoint::BeforeStart, fx) {
                    self.database_or_start(now, fx);
                }
            }
            (Phase::Start, Event::Started) => {
                // Let people (and checks) reach the new slot through the preview route.
                fx.push(Effect::Route {
                    live: self.plan.from,
                    preview: Some(self.plan.target),
                    switched: false,
                });
                self.enter(now, Phase::WaitHealthy, None, fx);
                self.begin_health(fx);
            }
            (Phase::Start, Event::StartFailed(why)) => {
                self.fail_before_switch(now, format!("start failed: {why}"), fx)
            }
            (
                Phase::WaitHealthy,
                Event::HealthRound {
                    ok,
                    answered,
                    detail,
                },
            ) => self.on_health_before_switch(now, ok, answered, detail, fx),
            (Phase::WaitHealthy, Event::Timer(t))
                if t.epoch == self.epoch && t.kind == TimerKind::NextHealth =>
            {
                fx.push(Effect::CheckHealth);
            }
            (Phase::WaitHealthy, Event::Timer(t))
                if t.epoch == self.epoch && t.kind == TimerKind::HealthDeadline =>
            {
                let why = format!(
                    "not healthy within {} (deadline)",
                    fmt_dur(self.plan.health_deadline)
                );
                self.fail_before_switch(now, why, fx);
            }
            (Phase::Start | Phase::WaitHealthy | Phase::Smoke, Event::Exited(why)) => {
                self.fail_before_switch(now, format!("the new release exited: {why}"), fx)
            }
            (Phase::Smoke, Event::Smoke { passed, failure }) => {
                if passed {
                    self.after_checks(now, fx);
                } else {
                    let why = failure.unwrap_or_else(|| "smoke tests failed".into());
                    self.fail_before_switch(now, format!("smoke tests failed: {why}"), fx);
                }
            }
            (Phase::Mirror, event) => self.on_mirror(now, event, fx),
            (Phase::Hooks(point), event) => self.on_hooks(now, point, event, fx),
            (Phase::Database, event) => self.on_database(now, event, fx),
            (Phase::DatabaseDown, event) => self.on_database_down(now, event, fx),
            (Phase::Canary(_), event) => self.on_canary(now, event, fx),
            (Phase::Watch, Event::Measured(round)) => self.on_watch_round(now, round, fx),
            (Phase::Watch, Event::Timer(t))
                if t.epoch == self.epoch && t.kind == TimerKind::NextMeasure =>
            {
                fx.push(Effect::Measure)
            }
            (Phase::Start | Phase::WaitHealthy | Phase::Smoke, Event::Abort { by }) => {
                let why = format!("aborted by {by} before the switch");
                self.finish_before_switch(now, DeploymentOutcome::Aborted, why, fx);
            }
            (Phase::Switch, Event::Routed) => {
                self.switched = true;
                if let Some(by) = self.pending_abort.take() {
                    self.back_by_person = true;
                    self.switch_back(
                        now,
                        DeploymentOutcome::Aborted,
                        format!("aborted by {by}"),
                        fx,
                    );
                } else {
                    self.after_switch(now, fx);
                }
            }
            (Phase::Switch, Event::RouteFailed(why)) => {
                // The router refused: traffic is where it was.
                self.fail_before_switch(now, format!("switch failed: {why}"), fx);
            }
            (Phase::Switch, Event::Abort { by } | Event::Rollback { by }) => {
                self.pending_abort = Some(by);
            }
            (Phase::Watch, Event::Timer(t)) if t.epoch == self.epoch => match t.kind {
                TimerKind::NextSample => fx.push(Effect::SampleStats),
                TimerKind::NextHealth => fx.push(Effect::CheckHealth),
                TimerKind::WatchEnd => self.succeed(now, fx),
                _ => {}
            },
            (Phase::Watch, Event::Sample { stats, exited }) => {
                let reason = match exited {
                    Some(why) => Some(format!("the new release exited: {why}")),
                    None => self.watch.as_mut().and_then(|w| w.sample(now, *stats)),
                };
                match reason {
                    Some(why) => self.switch_back(now, DeploymentOutcome::RolledBack, why, fx),
                    None => fx.push(self.schedule(TimerKind::NextSample, self.sample_interval())),
                }
            }
            (Phase::Watch, Event::HealthRound { ok, detail, .. }) => {
                let reason = self.watch.as_mut().and_then(|w| w.health(ok, &detail));
                match reason {
                    Some(why) => self.switch_back(now, DeploymentOutcome::RolledBack, why, fx),
                    None => {
                        fx.push(self.schedule(TimerKind::NextHealth, self.plan.health_interval))
                    }
                }
            }
            (Phase::Watch, Event::Exited(why)) => {
                let why = format!("the new release exited: {why}");
                self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
            }
            (Phase::Watch, Event::Rollback { by }) => {
                let why = format!("rollback requested by {by} during the watch");
                self.switch_back(now, DeploymentOutcome::RolledBack, why, fx);
            }
            (Phase::Watch, Event::Abort { by }) => {
                let why = format!("aborted by {by} during the watch");
                self.switch_back(now, DeploymentOutcome::Aborted, why, fx);
            }
            (Phase::SwitchBack, Event::Routed) => {
                let target = self.plan.target;
                if let Some(from) = self.plan.from {
                    fx.push(Effect::SlotState {
                        slot: from,
                        state: SlotState::Live,
                        until_after: None,
                    });
                }
                fx.push(Effect::SlotState {
                    slot: target,
                    state: SlotState::Failed,
                    until_after: None,
                });
                fx.push(Effect::Stop { slot: target });
                // `on_rollback` hooks run once traffic is back, never before.
                let hooks = self.plan.kind == DeploymentKind::Deploy
                    && self.hooks_first(now, HookPoint::OnRollback, fx);
                if !hooks {
                    self.after_switched_back(now, fx);
                }
            }
            (Phase::SwitchBack, Event::RouteFailed(err)) => {
                // Could not move traffic back: the target keeps serving. Say so loudly.
                let why = self.back_reason.take().map(|(_, w)| w).unwrap_or_default();
                let why = format!(
                    "{why}; switching back failed ({err}): traffic stays on {}",
                    self.plan.target
                );
                self.finish(now, DeploymentOutcome::Failed, why, fx);
            }
            // Everything else (stale timers, results for a phase already left) is ignored.
            _ => {}
        }
    }

    fn enter(&mut self, now: Ms, phase: Phase, result: Option<String>, fx: &mut Vec<Effect>) {
        self.phase = phase;
        self.epoch += 1;
        self.phase_started = now;
        fx.push(Effect::Enter { phase, result });
    }

    fn schedule(&self, kind: TimerKind, after: Duration) -> Effect {
        Effect::Schedule {
            after,
            timer: Timer {
                kind,
                epoch: self.epoch,
            },
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
