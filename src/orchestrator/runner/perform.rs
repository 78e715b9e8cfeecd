//! The runner's *perform* stage: a step's actions, in the order the machine gave them.
//! Quick ones (routing, statistics, notifications) answer by pushing an input onto the
//! runner's queue; slow ones (start, checks, measurements, timers) run as tasks that
//! answer through the channel, so an `abort` is handled while they are in flight.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::{Input, Runner};
use crate::domain::now_ms;
use crate::notify::NotifyEvent;
use crate::orchestrator::machine::{Effect, Event, Machine};

impl Runner {
    /// Carries out the step's actions. `routed_early` is the result of the route change
    /// `persist_step` already applied (the step's one `Route`).
    pub(super) async fn perform(
        &mut self,
        machine: &Machine,
        effects: Vec<Effect>,
        mut routed_early: Option<Result<(), String>>,
        queue: &mut VecDeque<Input>,
        tx: &mpsc::Sender<Input>,
    ) {
        for e in effects {
            match e {
                Effect::StartTarget => self.spawn_start(machine.plan().target, tx),
                Effect::CheckHealth => {
                    self.spawn_health(machine.plan().target, machine.phase(), tx)
                }
                Effect::RunSmoke => self.spawn_smoke(machine.plan().target, tx),
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
                                self.measure_base = self.snapshots(machine).await;
                            }
                            Event::Routed
                        }
                        Err(e) => Event::RouteFailed(e),
                    }));
                }
                Effect::Split { canary_percent } => {
                    let result = self.split(machine, canary_percent).await;
                    queue.push_back(Input::Event(match result {
                        Ok(()) => {
                            // Normal traffic stays on `from` as far as the store's
                            // live slot goes; the deployment has switched partly.
                            self.pending_route = Some((None, true));
                            self.measure_base = self.snapshots(machine).await;
                            Event::Routed
                        }
                        Err(e) => Event::RouteFailed(e),
                    }));
                }
                Effect::Measure => self.spawn_measure(machine, tx).await,
                Effect::Mirror(on) => {
                    if let Err(e) = self.mirror(machine, on).await {
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
                Effect::RunHooks(point) => self.spawn_hooks(machine, point, tx),
                Effect::RunDatabase => self.spawn_database(machine, tx),
                Effect::RunDatabaseDown => self.spawn_database_down(machine, tx),
                Effect::Enter { .. }
                | Effect::SlotState { .. }
                | Effect::Log(_)
                | Effect::Finish { .. } => {}
            }
        }
    }
}
