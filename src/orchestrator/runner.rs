//! The runner: carries out one deployment's effects and feeds the results back to the
//! state machine. The only part of the control plane that does I/O or reads the clock.
//!
//! Each state-machine step's persistence effects (phase entered, slot states, event
//! line) are written in one store transaction *before* its actions run, with one
//! exception: a route change is applied first, since moving traffic is what must not
//! wait (the live slot itself is persisted by the `Routed` step after it); the final
//! outcome is written *after* them, so the store's one-deployment-per-service lock is
//! held until the old or failed slot has been drained and stopped.
//! Slow actions (start, checks, timers) run as tasks that answer through a channel, so an
//! `abort` or `rollback` is handled while they are in flight.
//!
//! # Layout
//! One turn of [`Runner::run`] is receive → step → persist → perform:
//! - `runner/step.rs`: *receive* (an input becomes an event; the started slot's row,
//!   check results and measurements it carries are recorded) and *persist* (the route
//!   change first, then the step's one transaction);
//! - `runner/perform.rs`: *perform*, the step's actions in order;
//! - `runner/effects.rs` and `runner/progressive.rs`: the helpers those actions call;
//! - `runner/hooks.rs`: running a point's hooks as one task (commands; HTTP calls in
//!   `runner/hooks/http.rs`);
//! - `runner/database.rs`: the database phase as one task (backup, lint, rehearsal,
//!   compatibility proof, migrations).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

mod database;
mod database_down;
mod effects;
pub mod fault;
pub(crate) mod hooks;
mod perform;
mod progressive;
mod step;

use super::machine::{Effect, Event, Machine, Phase};
use super::progress::Progress;
use super::switch_times::SwitchTimes;
use crate::analysis::Measurement;
use crate::checks::CheckResult;
use crate::config::ServiceConfig;
use crate::domain::stats::StatsSnapshot;
use crate::domain::{now_ms, Slot};
use crate::notify::Notifier;
use crate::router::Router;
use crate::runtime::{RunningSlot, Runtime};
use crate::store::{DeploymentOutcome, SlotRecord, Store, Transition};

/// Messages into a running deployment.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    /// The target's release started here.
    Started(Result<RunningSlot, String>),
    /// Analysis measurements to record (taken in `phase`), then `Event::Measured`.
    Measured {
        phase: String,
        round: Vec<Measurement>,
    },
    /// Check results to record, then the event they produced.
    Checked {
        phase: &'static str,
        results: Vec<CheckResult>,
        event: Event,
    },
}

pub struct Runner {
    pub id: i64,
    pub service: Arc<ServiceConfig>,
    pub version: String,
    pub store: Arc<Store>,
    pub runtime: Arc<dyn Runtime>,
    pub router: Arc<dyn Router>,
    pub drain_timeout: Duration,
    /// The service's slot rows as this runner last wrote them.
    pub slots: [SlotRecord; 2],
    pub progress: Arc<Mutex<std::collections::HashMap<String, Progress>>>,
    /// The last route applied, persisted with the `Routed` step: (the store's new live
    /// slot, if it changes; whether traffic moved to the target).
    pending_route: Option<(Option<Option<Slot>>, bool)>,
    start_in_flight: bool,
    /// The target's restart count at the first watch sample (container runtimes).
    restart_baseline: Option<u32>,
    pub notifier: Arc<Notifier>,
    /// Traffic moved (fully or partly) to the target; `switched_at` is written once.
    switched: bool,
    /// Statistics at the previous measurement: (canary, stable, when).
    measure_base: Option<(StatsSnapshot, Option<StatsSnapshot>, Instant)>,
    switch_times: Arc<SwitchTimes>,
    /// Unix ms when the watch passes (set when the watch begins), for progress.
    watch_ends_at: Option<i64>,
    /// The hooks running, and their point (killed when the machine leaves it).
    hooks_task: Option<(crate::config::HookPoint, tokio::task::JoinHandle<()>)>,
    /// The first store write that failed since the machine was last told (see
    /// [`Runner::store_failed`]).
    store_failure: std::sync::Mutex<Option<String>>,
    /// The database phase's task (aborted when the machine leaves the phase).
    database_task: Option<tokio::task::JoinHandle<()>>,
    /// The daemon's state directory (default home of the backups).
    pub state_dir: std::path::PathBuf,
}

/// Everything a runner needs, from the controller.
pub struct RunnerParts {
    pub id: i64,
    pub service: Arc<ServiceConfig>,
    pub version: String,
    pub store: Arc<Store>,
    pub runtime: Arc<dyn Runtime>,
    pub router: Arc<dyn Router>,
    pub drain_timeout: Duration,
    pub slots: [SlotRecord; 2],
    pub progress: Arc<Mutex<std::collections::HashMap<String, Progress>>>,
    pub notifier: Arc<Notifier>,
    pub switch_times: Arc<SwitchTimes>,
    pub state_dir: std::path::PathBuf,
}

impl Runner {
    pub fn new(p: RunnerParts) -> Self {
        Self {
            id: p.id,
            service: p.service,
            version: p.version,
            store: p.store,
            runtime: p.runtime,
            router: p.router,
            drain_timeout: p.drain_timeout,
            slots: p.slots,
            progress: p.progress,
            pending_route: None,
            start_in_flight: false,
            restart_baseline: None,
            notifier: p.notifier,
            switch_times: p.switch_times,
            switched: false,
            measure_base: None,
            watch_ends_at: None,
            store_failure: Default::default(),
            hooks_task: None,
            database_task: None,
            state_dir: p.state_dir,
        }
    }

    /// Drives the machine until the deployment is over: *receive* an input (record what
    /// it carries, turn it into an event), *step* the machine, *persist* the step (the
    /// route change first, then one transaction), *perform* its actions in order.
    pub async fn run(
        mut self,
        mut machine: Machine,
        tx: mpsc::Sender<Input>,
        mut rx: mpsc::Receiver<Input>,
    ) {
        let clock = Instant::now();
        let mut queue: VecDeque<Input> = VecDeque::from([Input::Event(Event::Begin)]);
        loop {
            let input = match queue.pop_front() {
                Some(i) => i,
                None => match rx.recv().await {
                    Some(i) => i,
                    None => break,
                },
            };
            let (event, transition) = self.receive(input, machine.plan());
            let routed = matches!(event, Event::Routed);
            let sampled = matches!(event, Event::Sample { .. });
            let now = clock.elapsed().as_millis() as u64;
            let effects = machine.step(now, event);
            self.cancel_stale_hooks(&machine);
            self.cancel_stale_database(&machine);
            // The decision to move traffic: the switch's clock starts here.
            let decided = Instant::now();
            let step = self
                .persist_step(&machine, routed, decided, &effects, transition)
                .await;
            for e in &effects {
                if let Effect::Enter { phase, .. } = e {
                    fault::pause_at(&phase.label()).await;
                }
            }
            if sampled && machine.phase() == Phase::Watch {
                self.record_watch_sample(&machine, self.watch_ends_at);
            }
            self.perform(&machine, effects, step.routed_early, &mut queue, &tx)
                .await;
            // A write that failed stops the deployment next (before anything queued).
            let failure = self
                .store_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(why) = failure {
                queue.push_front(Input::Event(Event::StoreFailed(why)));
            }
            if let Some((outcome, reason)) = step.finish {
                fault::pause_at("finish").await;
                self.finish(outcome, reason);
                // A start still in flight after an abort must not leave a process behind.
                self.drain_late_starts(&mut machine, &mut rx).await;
                break;
            }
        }
    }

    /// Writes the outcome (after the step's actions: the lock is held until then).
    fn finish(&mut self, outcome: DeploymentOutcome, reason: String) {
        let t = Transition {
            deployment_id: self.id,
            at: now_ms(),
            finish: Some((outcome, reason.clone())),
            event: Some((format!("deployment_{}", outcome.as_str()), reason.clone())),
            ..Default::default()
        };
        self.persist(&t);
        tracing::info!(service = %self.service.name, id = self.id, outcome = outcome.as_str(), %reason, "deployment finished");
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.service.name);
    }

    /// After the outcome, waits briefly for a start that was still in flight, and stops it.
    async fn drain_late_starts(&mut self, machine: &mut Machine, rx: &mut mpsc::Receiver<Input>) {
        if !self.start_in_flight {
            return;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                msg = rx.recv() => match msg {
                    Some(Input::Started(Ok(_))) => {
                        for e in machine.step(0, Event::Started) {
                            if let Effect::Stop { slot } = e {
                                self.stop(slot).await;
                            }
                        }
                        return;
                    }
                    Some(Input::Started(Err(_))) | None => return,
                    Some(_) => {}
                }
            }
        }
    }
}
