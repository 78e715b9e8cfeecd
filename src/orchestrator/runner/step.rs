//! The runner's bookkeeping around one machine step: *receive* (an input becomes an
//! event; what it carries — the started slot's row, check results, measurements — is
//! recorded) and *persist* (the route change first, then the step's one transaction).
//!
//! The ordering is the module invariant of `runner.rs`: a route change is applied
//! before the transaction (moving traffic waits for nothing), the live slot is written
//! only by the `Routed` step after it, and the outcome is left for after the actions.

use tokio::time::Instant;

use super::{Input, Runner};
use crate::domain::now_ms;
use crate::orchestrator::machine::{Effect, Event, Machine, Phase, Plan};
use crate::store::{CheckRecord, DeploymentOutcome, MeasurementRecord, Transition};

/// What persisting a step leaves for the rest of it.
pub(super) struct Persisted {
    /// The result of the route change applied ahead of the transaction, if the step
    /// asked for one.
    pub routed_early: Option<Result<(), String>>,
    /// The outcome to write once the step's actions are done.
    pub finish: Option<(DeploymentOutcome, String)>,
}

impl Runner {
    /// Turns an input into the event for the machine, recording what it carries; the
    /// returned transition holds the rows the step must write with its own.
    pub(super) fn receive(&mut self, input: Input, plan: &Plan) -> (Event, Transition) {
        let mut transition = Transition {
            deployment_id: self.id,
            at: now_ms(),
            ..Default::default()
        };
        let event = match input {
            Input::Event(e) => e,
            Input::Started(Ok(running)) => {
                self.start_in_flight = false;
                let rec = &mut self.slots[plan.target.index()];
                rec.set_running(&running.endpoint, &running.handle, &running.identity);
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
                        self.store_failed("a measurement", &e);
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
                        self.store_failed("a check result", &e);
                    }
                }
                event
            }
        };
        (event, transition)
    }

    /// Applies the step's route change (if any), then writes its persistence effects in
    /// one transaction and publishes the progress. `routed`: the step was fed `Routed`,
    /// so the route applied before it is persisted now.
    pub(super) async fn persist_step(
        &mut self,
        machine: &Machine,
        routed: bool,
        decided: Instant,
        effects: &[Effect],
        mut transition: Transition,
    ) -> Persisted {
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
            if switched {
                // Guarded from the first request that reaches the target.
                self.arm_guard(machine);
            }
            let result = self.route(live, preview).await;
            if result.is_ok() && switched {
                self.switch_times
                    .record(&self.service.name, decided.elapsed());
            }
            routed_early = Some(result);
        }

        // Then persistence, in one transaction.
        let mut finish = None;
        for e in effects {
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
                        self.watch_ends_at = Some(now_ms() + d.as_millis() as i64);
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
        self.publish(machine, self.watch_ends_at);
        Persisted {
            routed_early,
            finish,
        }
    }
}
