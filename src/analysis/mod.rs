//! Metric analysis: decides from measurements whether a canary step (or the watch)
//! passes, fails, or needs a human.
//!
//! Two halves, like the orchestrator: [`AnalysisRun`] is pure (rounds of measurements
//! in, a status out; no clock, no I/O) so every knob (count, failure limit,
//! consecutive errors, inconclusive) is a table-driven test; [`measure`] does the I/O
//! for one metric (the built-in proxy's statistics, a Prometheus query, a command, a
//! webhook).
//!
//! # Layout
//! - `run.rs`: the tally behind [`AnalysisRun::record`] (pure).
//! - `judge.rs`: a value against a metric's ranges → verdict and detail (pure).
//! - `providers/`: `builtin` (proxy statistics), `prometheus`, `command`, `webhook`.
//! - `http.rs`: a request to an `http://` URL (shared with `notify`).

pub(crate) mod http;
mod judge;
mod providers;
mod run;
#[cfg(test)]
mod run_tests;

use std::time::Duration;

use serde::Serialize;

use crate::config::{AnalysisConfig, MetricConfig};
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;

/// What one measurement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
    /// The metric could not be read (Prometheus down, command not found, ...).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Error => "error",
        }
    }
}

/// One metric measured once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    pub metric: String,
    pub value: Option<f64>,
    pub verdict: Verdict,
    /// For people: the value against its range, or the error.
    pub detail: String,
}

/// What `measure` may look at.
#[derive(Debug, Clone)]
pub struct MeasureContext {
    pub service: String,
    pub version: String,
    /// The slot being judged (the new release).
    pub canary: Slot,
    /// The slot serving the rest of the traffic, if any.
    pub stable: Option<Slot>,
    /// The canary's requests during the measurement interval (a delta).
    pub canary_stats: StatsSnapshot,
    /// The stable slot's requests during the same interval (a delta).
    pub stable_stats: Option<StatsSnapshot>,
    /// Length of the interval the deltas cover.
    pub interval: Duration,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Needs more rounds.
    Running,
    /// `count` rounds done within the limits.
    Passed,
    /// A limit was exceeded; the reason names the metric and its value.
    Failed(String),
    /// Too many inconclusive measurements: pause for a human.
    Inconclusive(String),
}

/// Tallies rounds of measurements against the analysis knobs. Pure.
///
/// The rules, in the order they are checked after each round (see `run.rs`):
/// 1. `Fail` measurements over the whole run > `failure_limit` → `Failed`;
/// 2. a metric that errored in `consecutive_error_limit` consecutive rounds → `Failed`;
/// 3. `Inconclusive` measurements (not counting "not enough data") ≥
///    `inconclusive_limit` → `Inconclusive`;
/// 4. for a step, after `count` rounds: a metric no round could judge (not enough data
///    or errors only) →
///    `Inconclusive`; otherwise `Passed`. A continuous run never passes.
///
/// Once a run has ended, it keeps answering its final status.
#[derive(Debug, Clone)]
pub struct AnalysisRun {
    cfg: AnalysisConfig,
    /// `true` for the watch: never "passes", only fails (runs until the watch ends).
    continuous: bool,
    tally: run::Tally,
}

impl AnalysisRun {
    /// A run for one canary step: passes after `cfg.count` rounds.
    pub fn for_step(cfg: &AnalysisConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            continuous: false,
            tally: run::Tally::default(),
        }
    }

    /// A run for the watch: keeps going, fails when a limit is exceeded.
    pub fn continuous(cfg: &AnalysisConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            continuous: true,
            tally: run::Tally::default(),
        }
    }

    /// Records one round (every metric measured once) and says where the run stands.
    pub fn record(&mut self, round: &[Measurement]) -> RunStatus {
        self.tally.record(&self.cfg, self.continuous, round)
    }

    /// Rounds recorded so far.
    pub fn rounds(&self) -> u32 {
        self.tally.rounds
    }
}

/// Detail prefix of a measurement that had too few requests to judge (built-in
/// signals below `min_requests`). Such a measurement is `Inconclusive`, but only ends a
/// run when the run would otherwise pass on it (rule 4 above): a quiet minute must not
/// pause a canary, and silence must not pass one.
pub const NOT_ENOUGH_DATA: &str = "not enough data";

/// Detail prefix of a webhook gate that answered non-2xx: the step waits (the gate is
/// asked again every interval) instead of failing.
pub const GATE_CLOSED: &str = "gate closed";

impl Measurement {
    /// Whether this is a closed webhook gate (hold the step, ask again).
    pub fn is_gate_closed(&self) -> bool {
        self.verdict == Verdict::Inconclusive && self.detail.starts_with(GATE_CLOSED)
    }

    /// Whether this measurement could not judge for lack of traffic.
    pub fn is_not_enough_data(&self) -> bool {
        self.verdict == Verdict::Inconclusive && self.detail.starts_with(NOT_ENOUGH_DATA)
    }
}

/// Measures one metric now. Never panics; an unreadable metric is `Verdict::Error`.
pub async fn measure(metric: &MetricConfig, ctx: &MeasureContext) -> Measurement {
    providers::measure(metric, ctx).await
}
