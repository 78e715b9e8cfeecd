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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

mod effects;
mod progressive;

use super::machine::{Effect, Event, Machine, Phase};
use super::progress::Progress;
use super::switch_times::SwitchTimes;
use crate::analysis::Measurement;
use crate::checks::CheckResult;
use crate::config::ServiceConfig;
use crate::domain::stats::StatsSnapshot;
use crate::domain::{now_ms, Slot};
use crate::notify::{Notifier, NotifyEvent};
use crate::router::Router;
use crate::runtime::{RunningSlot, Runtime};
use crate::store::{CheckRecord, MeasurementRecord, SlotRecord, Store, Transition};

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
        }
    }

    /// Drives the machine until the deployment is over.
    pub async fn run(
        mut self,
        mut machine: Machine,
        tx: mpsc::Sender<Input>,
        mut rx: mpsc::Receiver<Input>,
    ) {
        let clock = Instant::now();
        let mut queue: VecDeque<Input> = VecDeque::from([Input::Event(Event::Begin)]);
        let mut watch_ends_at = None;
        loop {
            let input = match queue.pop_front() {
                Some(i) => i,
                None => match rx.recv().await {
                    Some(i) => i,
                    None => break,
                },
            };
            let mut transition = Transition {
                deployment_id: self.id,
                at: now_ms(),
                ..Default::default()
            };
            let event = match input {
                Input::Event(e) => e,
                Input::Started(Ok(running)) => {
                    self.start_in_flight = false;
                    let rec = &mut self.slots[machine.plan().target.index()];
                    rec.addr = Some(running.addr.to_string());
                    rec.handle = Some(running.handle.clone());
                    rec.version = Some(self.version.clone());
                    transition.slots.push(rec.clone());
                    Event::Started
                }
                Input::Started(Err(why)) => {
                    self.start_in_flight = false;
                    Event::StartFailed(why)
                }
                Input::Measured { phase, round } => {
                    for m in &round {
                        let rec = MeasurementRecord {
                            phase: phase.clone(),
                            metric: m.metric.clone(),
                            value: m.value,
                            verdict: m.verdict.as_str().to_string(),
                            detail: m.detail.clone(),
                            at: now_ms(),
                        };
                        if let Err(e) = self.store.record_measurement(self.id, &rec) {
                            tracing::error!(error = %e, "cannot record a measurement");
                        }
                    }
                    Event::Measured(round)
                }
                Input::Checked {
                    phase,
                    results,
                    event,
                } => {
                    for r in &results {
                        let rec = CheckRecord {
                            phase: phase.to_string(),
                            name: r.name.clone(),
                            ok: r.ok,
                            detail: r.detail.clone(),
                            duration_ms: r.duration.as_millis() as u64,
                            at: now_ms(),
                        };
                        if let Err(e) = self.store.record_check(self.id, &rec) {
                            tracing::error!(error = %e, "cannot record check result");
                        }
                    }
                    event
                }
            };
            let routed = matches!(event, Event::Routed);
            let now = clock.elapsed().as_millis() as u64;
            let effects = machine.step(now, event);
            // The decision to move traffic: the switch's clock starts here.
            let decided = Instant::now();
            if routed {
                if let Some((live, switched)) = self.pending_route.take() {
                    transition.live = live;
                    if switched && !self.switched {
                        self.switched = true;
                        transition.switched_at = Some(transition.at);
                    }
                }
            }

            // A route change takes effect before the step's transaction: it is the moment
            // traffic moves (for a rollback, the whole point), so nothing waits in front
            // of it. The store cannot end up disagreeing with the router: the live slot
            // is written only by the `Routed` step that follows, and after a crash boot
            // re-applies the stored route.
            let mut routed_early = None;
            if let Some(&Effect::Route {
                live,
                preview,
                switched,
            }) = effects.iter().find(|e| matches!(e, Effect::Route { .. }))
            {
                let result = self.route(live, preview).await;
                if result.is_ok() && switched {
                    self.switch_times
                        .record(&self.service.name, decided.elapsed());
                }
                routed_early = Some(result);
            }

            // Then persistence, in one transaction.
            let mut finish = None;
            for e in &effects {
                match e {
                    Effect::Enter { phase, result } => {
                        transition.enter_phase = Some(phase.label());
                        transition.phase_result = result.clone();
                        if *phase == Phase::Watch {
                            let d = machine
                                .plan()
                                .watch
                                .as_ref()
                                .map(|w| w.duration)
                                .unwrap_or_default();
                            watch_ends_at = Some(now_ms() + d.as_millis() as i64);
                        }
                    }
                    Effect::SlotState {
                        slot,
                        state,
                        until_after,
                    } => {
                        let rec = &mut self.slots[slot.index()];
                        rec.state = *state;
                        rec.standby_until = until_after.map(|d| now_ms() + d.as_millis() as i64);
                        transition.slots.retain(|s| s.slot != *slot);
                        transition.slots.push(rec.clone());
                    }
                    Effect::Log(msg) => transition.event = Some(("deployment".into(), msg.clone())),
                    Effect::Finish { outcome, reason } => finish = Some((*outcome, reason.clone())),
                    _ => {}
                }
            }
            if transition
                != (Transition {
                    deployment_id: self.id,
                    at: transition.at,
                    ..Default::default()
                })
            {
                self.persist(&transition);
            }
            self.publish(&machine, watch_ends_at);

            // Then the actions, in order.
            for e in effects {
                match e {
                    Effect::StartTarget => self.spawn_start(machine.plan().target, &tx),
                    Effect::CheckHealth => {
                        self.spawn_health(machine.plan().target, machine.phase(), &tx)
                    }
                    Effect::RunSmoke => self.spawn_smoke(machine.plan().target, &tx),
                    Effect::Route {
                        live,
                        preview,
                        switched,
                    } => {
                        let result = match routed_early.take() {
                            Some(done) => done,
                            None => self.route(live, preview).await,
                        };
                        queue.push_back(Input::Event(match result {
                            Ok(()) => {
                                self.pending_route = Some((Some(live), switched));
                                if switched {
                                    self.measure_base = self.snapshots(&machine).await;
                                }
                                Event::Routed
                            }
                            Err(e) => Event::RouteFailed(e),
                        }));
                    }
                    Effect::Split { canary_percent } => {
                        let result = self.split(&machine, canary_percent).await;
                        queue.push_back(Input::Event(match result {
                            Ok(()) => {
                                // Normal traffic stays on `from` as far as the store's
                                // live slot goes; the deployment has switched partly.
                                self.pending_route = Some((None, true));
                                self.measure_base = self.snapshots(&machine).await;
                                Event::Routed
                            }
                            Err(e) => Event::RouteFailed(e),
                        }));
                    }
                    Effect::Measure => self.spawn_measure(&machine, &tx).await,
                    Effect::Mirror(on) => {
                        if let Err(e) = self.mirror(&machine, on).await {
                            if on {
                                queue.push_back(Input::Event(Event::RouteFailed(e)));
                            } else {
                                tracing::warn!(service = %self.service.name, error = %e, "cannot stop mirroring");
                            }
                        }
                    }
                    Effect::CheckMirror => {
                        let report = self.router.mirror_report(&self.service.name).await;
                        queue.push_back(Input::Event(Event::MirrorReport(report)));
                    }
                    Effect::Notify { event, message } => {
                        self.notifier.send(NotifyEvent {
                            event: event.to_string(),
                            service: self.service.name.clone(),
                            deployment_id: self.id,
                            version: self.version.clone(),
                            message,
                            at: now_ms(),
                        });
                    }
                    Effect::SampleStats => {
                        let target = machine.plan().target;
                        let stats = self
                            .router
                            .stats(&self.service.name, target)
                            .await
                            .unwrap_or_default();
                        let status = self.runtime.status(&self.service.name, target).await;
                        let exited = self.exit_or_restart(status);
                        queue.push_back(Input::Event(Event::Sample {
                            stats: Box::new(stats),
                            exited,
                        }));
                    }
                    Effect::Schedule { after, timer } => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = tx.send(Input::Event(Event::Timer(timer))).await;
                        });
                    }
                    Effect::Stop { slot } => self.stop(slot).await,
                    Effect::Enter { .. }
                    | Effect::SlotState { .. }
                    | Effect::Log(_)
                    | Effect::Finish { .. } => {}
                }
            }

            if let Some((outcome, reason)) = finish {
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
                // A start still in flight after an abort must not leave a process behind.
                self.drain_late_starts(&mut machine, &mut rx).await;
                break;
            }
        }
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
