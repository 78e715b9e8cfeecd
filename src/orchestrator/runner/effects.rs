//! The runner's effect helpers: persistence, progress, starting, checking, routing and
//! stopping a slot. Each carries out one effect of the state machine.

use tokio::sync::mpsc;

use super::{Input, Runner};
use crate::checks::{self, ProbeTarget};
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::Target;
use crate::domain::{now_ms, Slot};
use crate::orchestrator::machine::{Event, Machine, Phase};
use crate::orchestrator::progress::Progress;
use crate::runtime::{RuntimeHealth, SlotSpec, SlotStatus};
use crate::store::{SlotState, Transition};

impl Runner {
    pub(super) fn persist(&self, t: &Transition) {
        if let Err(e) = self.store.apply(t) {
            self.store_failed("the deployment's step", &e);
        }
    }

    /// Records that a store write failed: logged, and (once per failure) fed to the
    /// machine as `StoreFailed`, which stops the deployment safely. "Persisted before
    /// acting" holds only if a write that did not happen stops what depends on it.
    pub(super) fn store_failed(&self, what: &str, e: &crate::store::StoreError) {
        tracing::error!(service = %self.service.name, id = self.id, error = %e, "cannot record {what}");
        self.store_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| format!("cannot record {what}: {e}"));
    }

    /// Records the watch window as the latest sample left it, as a `watch` event of the
    /// live feed (what `cutover deploy` prints while it waits).
    pub(super) fn record_watch_sample(&self, machine: &Machine, watch_ends_at: Option<i64>) {
        let Some(w) = machine.watch_view() else {
            return;
        };
        let at = now_ms();
        let p95_ms = w.p95.map(|d| d.as_millis() as u64);
        let left_ms = watch_ends_at.map(|end| (end - at).max(0));
        let message = format!(
            "{} requests · {:.1}% errors · p95 {}",
            w.requests,
            w.error_rate * 100.0,
            p95_ms.map_or_else(|| "-".to_string(), |ms| format!("≤{ms}ms")),
        );
        let data = serde_json::json!({
            "requests": w.requests,
            "errors": w.errors,
            "error_rate": w.error_rate,
            "p95_ms": p95_ms,
            "left_ms": left_ms,
        });
        let name = &self.service.name;
        if let Err(e) =
            self.store
                .append_event(name, Some(self.id), "watch", &message, Some(&data), at)
        {
            self.store_failed("a watch sample", &e);
        }
    }

    pub(super) fn publish(&self, machine: &Machine, watch_ends_at: Option<i64>) {
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
    pub(super) fn exit_or_restart(&mut self, status: SlotStatus) -> Option<String> {
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

    /// Where the slot's release answers (an address or a `host:port`) while it runs.
    pub(super) fn addr_of(&self, slot: Slot) -> Option<Endpoint> {
        self.slots[slot.index()].endpoint()
    }

    /// The slot's routing target (endpoint and identity) while its release runs.
    pub(super) fn target_of_slot(&self, slot: Slot) -> Option<Target> {
        self.slots[slot.index()].target(&self.service.name)
    }

    pub(super) fn probe_target(&self, slot: Slot) -> Option<ProbeTarget> {
        ProbeTarget::of_slot(&self.service.name, &self.slots[slot.index()])
            .map(|t| t.with_tls(self.service.upstream_tls.clone()))
    }

    pub(super) fn spawn_start(&mut self, slot: Slot, tx: &mpsc::Sender<Input>) {
        self.start_in_flight = true;
        let spec = SlotSpec {
            service: self.service.name.clone(),
            slot,
            version: self.version.clone(),
            deployment: Some(self.id),
            env: crate::database::release_env(Some(&self.service), slot),
        };
        let runtime = self.runtime.clone();
        let router = self.router.clone();
        let drain_timeout = self.drain_timeout;
        let tx = tx.clone();
        tokio::spawn(async move {
            // The slot may still hold a release (a warm standby) with requests in flight
            // from when it was live: they finish (up to the drain timeout) before the
            // runtime replaces it.
            if matches!(
                runtime.status(&spec.service, slot).await,
                SlotStatus::Running { .. }
            ) {
                match router.drain(&spec.service, slot, drain_timeout).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(service = %spec.service, %slot, in_flight = n, "drain timeout; replacing the release anyway")
                    }
                    Err(e) => {
                        tracing::warn!(service = %spec.service, %slot, error = %e, "cannot drain")
                    }
                }
            }
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

    pub(super) fn spawn_health(&self, slot: Slot, phase: Phase, tx: &mpsc::Sender<Input>) {
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
            // Health rounds run only once the release was started: a slot that no longer
            // runs at all was stopped under the deployment (or vanished), which is as
            // final as an exit and must not wait for the health deadline.
            let gone = match runtime.status(&target.service, slot).await {
                SlotStatus::Exited { detail } => Some(detail),
                SlotStatus::NotRunning => Some("it is not running any more".to_string()),
                SlotStatus::Running { .. } => None,
            };
            if let Some(detail) = gone {
                let tail = runtime.log_tail(&target.service, slot, 10).await;
                let _ = tx
                    .send(Input::Event(Event::Exited(with_tail(detail, &tail))))
                    .await;
                return;
            }
            // Out of our own descriptors, a round says nothing about the release (not
            // unhealthy, not healthy): it is run again after an interval, and only a
            // conclusive one is answered (the machine schedules the next round on the
            // answer, and the health deadline runs on its own timer meanwhile).
            let mut results = loop {
                let results = checks::health_round(&cfg, &target).await;
                if !checks::inconclusive(&results) {
                    break results;
                }
                tracing::warn!(service = %target.service, %slot, "health round not counted: cutover is out of file descriptors");
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(cfg.interval).await;
            };
            // The runtime's own verdict (Docker's HEALTHCHECK) is one more check.
            let verdict = runtime.health(&target.service, slot).await;
            let judging = matches!(verdict, Some(RuntimeHealth::Starting(_)));
            // The runtime calling the release failing (a crash loop, an image that
            // cannot be pulled) is an answer even when nothing accepts connections.
            let failing = matches!(verdict, Some(RuntimeHealth::Unhealthy(_)));
            results.extend(verdict.map(|v| v.into_check(runtime.kind())));
            let ok = results.iter().all(|r| r.ok);
            // "Answered" = the release accepts connections at all; until it does, failures
            // only count against the deadline (a slow starter is not unhealthy).
            let answered = ok
                || failing
                || !judging && target.endpoint.connect_within(cfg.timeout).await.is_ok();
            let detail = checks::summarize(&results);
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

    pub(super) fn spawn_smoke(&self, slot: Slot, tx: &mpsc::Sender<Input>) {
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

    pub(super) async fn route(
        &self,
        live: Option<Slot>,
        preview: Option<Slot>,
    ) -> Result<(), String> {
        let target = |slot: Option<Slot>| -> Result<Option<Target>, String> {
            match slot {
                None => Ok(None),
                Some(slot) => match self.target_of_slot(slot) {
                    Some(t) => Ok(Some(t)),
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

    pub(super) async fn stop(&mut self, slot: Slot) {
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
        rec.clear_running();
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

/// Appends the release's last log lines to a failure reason.
fn with_tail(reason: String, tail: &[String]) -> String {
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; last log lines: {}", tail.join(" | "))
    }
}
