//! The runner's side of progressive delivery: weighted splits, analysis measurements
//! and mirroring. Like the rest of the runner, each function carries out one effect
//! and answers with an event.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Input, Runner};
use crate::analysis::{self, MeasureContext};
use crate::domain::routing::{MirrorSpec, Target};
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;
use crate::orchestrator::machine::{Event, Machine};
use crate::runtime::SlotStatus;

impl Runner {
    fn target_of(&self, slot: Slot) -> Result<Target, String> {
        self.target_of_slot(slot)
            .ok_or_else(|| format!("{slot} has no running release to route to"))
    }

    /// Sends `percent` % of normal traffic to the target, the rest to `from`.
    pub(super) async fn split(&self, machine: &Machine, percent: u8) -> Result<(), String> {
        let plan = machine.plan();
        let from = plan
            .from
            .ok_or("a canary needs a live release to split with")?;
        let stable = self.target_of(from)?;
        let canary = self.target_of(plan.target)?;
        self.router
            .apply_weighted(&self.service.name, stable, canary, percent)
            .await
            .map_err(|e| e.to_string())
    }

    /// Cumulative statistics of the target and of `from`, now.
    pub(super) async fn snapshots(
        &self,
        machine: &Machine,
    ) -> Option<(StatsSnapshot, Option<StatsSnapshot>, Instant)> {
        let plan = machine.plan();
        let canary = self.router.stats(&self.service.name, plan.target).await?;
        let stable = match plan.from {
            Some(from) => self.router.stats(&self.service.name, from).await,
            None => None,
        };
        Some((canary, stable, Instant::now()))
    }

    /// Measures every metric once, in the background; answers `Input::Measured` (or
    /// `Event::Exited` when the new release is gone).
    pub(super) async fn spawn_measure(&mut self, machine: &Machine, tx: &mpsc::Sender<Input>) {
        let Some(cfg) = machine.plan().analysis.clone() else {
            return;
        };
        let plan = machine.plan();
        let now = self.snapshots(machine).await;
        let (canary_stats, stable_stats, interval) = match (&self.measure_base, &now) {
            (Some((c0, s0, t0)), Some((c1, s1, t1))) => (
                c1.since(c0),
                s1.as_ref().zip(s0.as_ref()).map(|(a, b)| a.since(b)),
                t1.duration_since(*t0),
            ),
            (_, Some((c1, s1, _))) => (*c1, *s1, cfg.interval),
            _ => (StatsSnapshot::default(), None, cfg.interval),
        };
        self.measure_base = now;
        let ctx = MeasureContext {
            service: self.service.name.clone(),
            version: self.version.clone(),
            canary: plan.target,
            stable: plan.from,
            canary_stats,
            stable_stats,
            interval,
        };
        let view = machine.canary_view();
        let phase = match view.step {
            Some(step) => format!("canary_{step} ({}%)", view.weight),
            None => "watch".to_string(),
        };
        let runtime = self.runtime.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let SlotStatus::Exited { detail } = runtime.status(&ctx.service, ctx.canary).await {
                let _ = tx.send(Input::Event(Event::Exited(detail))).await;
                return;
            }
            let round = futures_util::future::join_all(
                cfg.metrics.iter().map(|m| analysis::measure(m, &ctx)),
            )
            .await;
            let _ = tx.send(Input::Measured { phase, round }).await;
        });
    }

    /// Starts or stops copying live traffic to the target.
    pub(super) async fn mirror(&self, machine: &Machine, on: bool) -> Result<(), String> {
        let spec = match (on, &machine.plan().mirror) {
            (true, Some(m)) => Some(MirrorSpec {
                target: self.target_of(machine.plan().target)?,
                percent: m.percent,
                methods: m.methods.clone(),
            }),
            _ => None,
        };
        self.router
            .mirror(&self.service.name, spec)
            .await
            .map_err(|e| e.to_string())
    }
}
