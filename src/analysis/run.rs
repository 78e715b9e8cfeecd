//! The tally behind [`AnalysisRun::record`](super::AnalysisRun::record): counters over
//! the rounds of one run and the rules that turn them into a status. Pure: no clock,
//! no I/O; time is "round n".

use std::collections::BTreeMap;

use super::{Measurement, RunStatus, Verdict};
use crate::config::AnalysisConfig;

#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    pub rounds: u32,
    failures: u32,
    inconclusive: u32,
    /// Per metric: errors in a row, up to this round.
    consecutive_errors: BTreeMap<String, u32>,
    /// Per metric: whether any round judged it (pass or fail), and the detail of its
    /// last round that could not ("not enough data", or an error).
    judged: BTreeMap<String, bool>,
    last_unjudged: BTreeMap<String, String>,
    /// Per webhook gate: whether its latest answer kept it closed.
    gate_closed: BTreeMap<String, bool>,
    /// Set once the run has ended; answered from then on.
    ended: Option<RunStatus>,
}

impl Tally {
    pub fn record(
        &mut self,
        cfg: &AnalysisConfig,
        continuous: bool,
        round: &[Measurement],
    ) -> RunStatus {
        if let Some(done) = &self.ended {
            return done.clone();
        }
        self.rounds += 1;
        let n = self.rounds;
        let mut failed: Option<String> = None;
        let mut inconclusive: Option<String> = None;
        for m in round {
            let errors = self.consecutive_errors.entry(m.metric.clone()).or_default();
            if m.verdict == Verdict::Error {
                self.last_unjudged
                    .insert(m.metric.clone(), m.detail.clone());
                *errors += 1;
                if *errors >= cfg.consecutive_error_limit && failed.is_none() {
                    failed = Some(format!(
                        "metric `{}`: could not be measured {} time{} in a row: {} (round {n})",
                        m.metric,
                        errors,
                        if *errors == 1 { "" } else { "s" },
                        m.detail
                    ));
                }
            } else {
                *errors = 0;
            }
            if m.is_gate_closed() {
                self.gate_closed.insert(m.metric.clone(), true);
                continue;
            }
            self.gate_closed.remove(&m.metric);
            let judged = self.judged.entry(m.metric.clone()).or_default();
            match m.verdict {
                Verdict::Pass => *judged = true,
                Verdict::Fail => {
                    *judged = true;
                    self.failures += 1;
                    if self.failures > cfg.failure_limit && failed.is_none() {
                        failed = Some(format!("metric `{}`: {} (round {n})", m.metric, m.detail));
                    }
                }
                Verdict::Inconclusive if m.is_not_enough_data() => {
                    self.last_unjudged
                        .insert(m.metric.clone(), m.detail.clone());
                }
                Verdict::Inconclusive => {
                    self.inconclusive += 1;
                    if self.inconclusive >= cfg.inconclusive_limit && inconclusive.is_none() {
                        inconclusive =
                            Some(format!("metric `{}`: {} (round {n})", m.metric, m.detail));
                    }
                }
                Verdict::Error => {}
            }
        }
        let status = if let Some(reason) = failed {
            RunStatus::Failed(reason)
        } else if let Some(reason) = inconclusive {
            RunStatus::Inconclusive(reason)
        } else if !continuous && n >= cfg.count && self.gate_closed.is_empty() {
            // A closed gate holds the step past `count`: it is asked again each round.
            match self.never_judged() {
                Some((metric, detail)) => RunStatus::Inconclusive(format!(
                    "metric `{metric}`: no round could judge it in {n} rounds (last: {detail})"
                )),
                None => RunStatus::Passed,
            }
        } else {
            RunStatus::Running
        };
        if status != RunStatus::Running {
            self.ended = Some(status.clone());
        }
        status
    }

    /// The first metric no round could judge (never passed nor failed): a step must
    /// not pass on silence or on a broken metric.
    fn never_judged(&self) -> Option<(&str, &str)> {
        self.last_unjudged
            .iter()
            .find(|(metric, _)| !self.judged.get(*metric).copied().unwrap_or(false))
            .map(|(m, d)| (m.as_str(), d.as_str()))
    }
}
