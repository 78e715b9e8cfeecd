//! The runner: carries out one deployment's effects and feeds the results back to the
//! state machine. The only part of the control plane that does I/O or reads the clock.
//!
//! Each state-machine step's persistence effects (phase entered, slot states, event
//! line) are written in one store transaction *before* its actions run; the final
//! outcome is written *after* them, so the store's one-deployment-per-service lock is
//! held until the old or failed slot has been drained and stopped.
//! Slow actions (start, checks, timers) run as tasks that answer through a channel, so an
//! `abort` or `rollback` is handled while they are in flight.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

mod progressive;

use super::controller::Progress;
use super::machine::{Effect, Event, Machine, Phase};
use crate::analysis::Measurement;
use crate::checks::{self, CheckResult, ProbeTarget};
use crate::config::ServiceConfig;
use crate::domain::{now_ms, Slot};
use crate::notify::{Notifier, NotifyEvent};
use crate::proxy::stats::StatsSnapshot;
use crate::router::{Router, Target};
use crate::runtime::{RunningSlot, Runtime, RuntimeHealth, SlotSpec, SlotStatus};
use crate::store::{CheckRecord, MeasurementRecord, SlotRecord, SlotState, Store, Transition};

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
            if routed {
                if let Some((live, switched)) = self.pending_route.take() {
                    transition.live = live;
                    if switched && !self.switched {
                        self.switched = true;
                        transition.switched_at = Some(transition.at);
                    }
                }
            }

            // Persistence first, in one transaction.
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
                        let result = self.route(live, preview).await;
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

impl Runner {
    fn persist(&self, t: &Transition) {
        if let Err(e) = self.store.apply(t) {
            tracing::error!(service = %self.service.name, id = self.id, error = %e, "cannot persist a transition");
        }
    }

    fn publish(&self, machine: &Machine, watch_ends_at: Option<i64>) {
        let p = Progress {
            deployment_id: self.id,
            phase: machine.phase().label(),
            watch_ends_at: (machine.phase() == Phase::Watch)
                .then_some(watch_ends_at)
                .flatten(),
            window: machine.watch_view().cloned(),
            canary: (!machine.plan().canary.is_empty() || machine.plan().analysis.is_some())
                .then(|| machine.canary_view()),
        };
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.service.name.clone(), p);
    }

    /// Why the watched release should count as gone: it exited, or its runtime
    /// restarted it since the watch began (a crash loop under a restart policy).
    fn exit_or_restart(&mut self, status: SlotStatus) -> Option<String> {
        match status {
            SlotStatus::Exited { detail } => Some(detail),
            SlotStatus::NotRunning => Some("not running".into()),
            SlotStatus::Running { restarts } => {
                let base = *self.restart_baseline.get_or_insert(restarts);
                (restarts > base)
                    .then(|| format!("restarted {} time(s) during the watch", restarts - base))
            }
        }
    }

    fn addr_of(&self, slot: Slot) -> Option<SocketAddr> {
        self.slots[slot.index()]
            .addr
            .as_deref()
            .and_then(|a| a.parse().ok())
    }

    fn probe_target(&self, slot: Slot) -> Option<ProbeTarget> {
        Some(ProbeTarget {
            addr: self.addr_of(slot)?,
            service: self.service.name.clone(),
            slot,
            version: self.slots[slot.index()].version.clone().unwrap_or_default(),
        })
    }

    fn spawn_start(&mut self, slot: Slot, tx: &mpsc::Sender<Input>) {
        self.start_in_flight = true;
        let spec = SlotSpec {
            service: self.service.name.clone(),
            slot,
            version: self.version.clone(),
            deployment: Some(self.id),
        };
        let runtime = self.runtime.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = match runtime.start(&spec).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    let tail = runtime.log_tail(&spec.service, slot, 10).await;
                    Err(with_tail(e.to_string(), &tail))
                }
            };
            let _ = tx.send(Input::Started(result)).await;
        });
    }

    fn spawn_health(&self, slot: Slot, phase: Phase, tx: &mpsc::Sender<Input>) {
        let tx = tx.clone();
        let Some(target) = self.probe_target(slot) else {
            let event = Event::HealthRound {
                ok: false,
                answered: false,
                detail: format!("{slot} has no address"),
            };
            tokio::spawn(async move { tx.send(Input::Event(event)).await });
            return;
        };
        let runtime = self.runtime.clone();
        let cfg = self.service.health.clone();
        let label = if phase == Phase::Watch {
            "watch"
        } else {
            "wait_healthy"
        };
        tokio::spawn(async move {
            if let SlotStatus::Exited { detail } = runtime.status(&target.service, slot).await {
                let tail = runtime.log_tail(&target.service, slot, 10).await;
                let _ = tx
                    .send(Input::Event(Event::Exited(with_tail(detail, &tail))))
                    .await;
                return;
            }
            let mut results = checks::health_round(&cfg, &target).await;
            // The runtime's own verdict (Docker's HEALTHCHECK) is one more check.
            let verdict = runtime.health(&target.service, slot).await;
            let judging = matches!(verdict, Some(RuntimeHealth::Starting(_)));
            results.extend(verdict.map(|v| v.into_check(runtime.kind())));
            let ok = results.iter().all(|r| r.ok);
            // "Answered" = the release accepts connections at all; until it does, failures
            // only count against the deadline (a slow starter is not unhealthy).
            let answered = ok
                || !judging
                    && tokio::time::timeout(
                        cfg.timeout,
                        tokio::net::TcpStream::connect(target.addr),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok());
            let detail = summarize(&results);
            let event = Event::HealthRound {
                ok,
                answered,
                detail,
            };
            let _ = tx
                .send(Input::Checked {
                    phase: label,
                    results,
                    event,
                })
                .await;
        });
    }

    fn spawn_smoke(&self, slot: Slot, tx: &mpsc::Sender<Input>) {
        let tx = tx.clone();
        let Some(target) = self.probe_target(slot) else {
            let event = Event::Smoke {
                passed: false,
                failure: Some(format!("{slot} has no address")),
            };
            tokio::spawn(async move { tx.send(Input::Event(event)).await });
            return;
        };
        let cfg = self.service.smoke.clone();
        tokio::spawn(async move {
            let report = checks::smoke(&cfg, &target).await;
            let event = Event::Smoke {
                passed: report.passed,
                failure: report.failure.clone(),
            };
            let _ = tx
                .send(Input::Checked {
                    phase: "smoke",
                    results: report.results,
                    event,
                })
                .await;
        });
    }

    async fn route(&self, live: Option<Slot>, preview: Option<Slot>) -> Result<(), String> {
        let target = |slot: Option<Slot>| -> Result<Option<Target>, String> {
            match slot {
                None => Ok(None),
                Some(slot) => match self.addr_of(slot) {
                    Some(addr) => Ok(Some(Target { slot, addr })),
                    None => Err(format!("{slot} has no running release to route to")),
                },
            }
        };
        let live = target(live)?;
        // A preview slot without an address (stopped) is simply not previewed.
        let preview = target(preview).ok().flatten();
        self.router
            .apply(&self.service.name, live, preview)
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop(&mut self, slot: Slot) {
        let name = self.service.name.clone();
        match self.router.drain(&name, slot, self.drain_timeout).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(service = %name, %slot, in_flight = n, "drain timeout; stopping anyway")
            }
            Err(e) => tracing::warn!(service = %name, %slot, error = %e, "cannot drain"),
        }
        if let Err(e) = self.runtime.stop(&name, slot).await {
            tracing::error!(service = %name, %slot, error = %e, "cannot stop");
        }
        let rec = &mut self.slots[slot.index()];
        rec.addr = None;
        rec.handle = None;
        if !matches!(rec.state, SlotState::Failed) {
            rec.state = SlotState::Stopped;
        }
        let t = Transition {
            deployment_id: self.id,
            at: now_ms(),
            slots: vec![rec.clone()],
            ..Default::default()
        };
        self.persist(&t);
    }
}

/// One line for a round: every failure's detail, or "ok".
fn summarize(results: &[CheckResult]) -> String {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.name, r.detail))
        .collect();
    if failed.is_empty() {
        "ok".into()
    } else {
        failed.join("; ")
    }
}

/// Appends the release's last log lines to a failure reason.
fn with_tail(reason: String, tail: &[String]) -> String {
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; last log lines: {}", tail.join(" | "))
    }
}
