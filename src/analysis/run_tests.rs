//! Table-driven tests of [`AnalysisRun`]: rounds of verdicts in, statuses out. No clock:
//! a round is a step of the table.

use std::time::Duration;

use super::*;
use crate::config::{AnalysisConfig, MetricProvider, Range};

fn cfg(
    count: u32,
    failure_limit: u32,
    consecutive_error_limit: u32,
    inconclusive_limit: u32,
) -> AnalysisConfig {
    AnalysisConfig {
        interval: Duration::from_secs(10),
        count,
        failure_limit,
        consecutive_error_limit,
        inconclusive_limit,
        metrics: vec![MetricConfig {
            name: "p95".into(),
            provider: MetricProvider::Command {
                argv: vec!["true".into()],
                numeric: true,
            },
            pass: Range {
                min: None,
                max: Some(0.5),
            },
            inconclusive: None,
            max_increase_over_stable: None,
        }],
    }
}

/// A one-letter verdict for metric `p95` (`P`ass, `F`ail, `I`nconclusive, `E`rror,
/// `N`ot enough data), or `a:X` for another metric `a`.
fn m(code: &str) -> Measurement {
    let (metric, v) = match code.split_once(':') {
        Some((name, v)) => (name, v),
        None => ("p95", code),
    };
    let (verdict, value, detail) = match v {
        "P" => (Verdict::Pass, Some(0.3), "0.3 <= max 0.5".to_string()),
        "F" => (Verdict::Fail, Some(0.72), "0.72 > max 0.5".to_string()),
        "I" => (
            Verdict::Inconclusive,
            Some(0.6),
            "0.6 > max 0.5 (inconclusive range)".to_string(),
        ),
        "E" => (Verdict::Error, None, "connection refused".to_string()),
        "N" => (
            Verdict::Inconclusive,
            None,
            format!("{NOT_ENOUGH_DATA}: 3 requests < min_requests 20"),
        ),
        "G" => (
            Verdict::Inconclusive,
            None,
            format!("{GATE_CLOSED}: POST http://ci/approve answered 503 Service Unavailable"),
        ),
        other => panic!("unknown code {other}"),
    };
    Measurement {
        metric: metric.into(),
        value,
        verdict,
        detail,
    }
}

fn running() -> RunStatus {
    RunStatus::Running
}
fn failed(s: &str) -> RunStatus {
    RunStatus::Failed(s.into())
}
fn inconclusive(s: &str) -> RunStatus {
    RunStatus::Inconclusive(s.into())
}

/// Feeds `rounds` (each a space-separated list of codes) and checks the status after
/// each one.
fn check(name: &str, mut run: AnalysisRun, rounds: &[(&str, RunStatus)]) {
    for (i, (round, want)) in rounds.iter().enumerate() {
        let measurements: Vec<Measurement> = round.split_whitespace().map(m).collect();
        let got = run.record(&measurements);
        assert_eq!(&got, want, "case `{name}`, round {}", i + 1);
    }
}

/// (name, run, rounds with the status expected after each).
type Case = (&'static str, AnalysisRun, Vec<(&'static str, RunStatus)>);

#[test]
fn a_step_run_follows_its_knobs() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("passes after count rounds",
         AnalysisRun::for_step(&cfg(3, 0, 4, 1)),
         vec![("P", running()), ("P", running()), ("P", RunStatus::Passed)]),
        ("one failure over a zero limit fails at once, naming value and round",
         AnalysisRun::for_step(&cfg(3, 0, 4, 1)),
         vec![("P", running()), ("F", failed("metric `p95`: 0.72 > max 0.5 (round 2)"))]),
        ("failures up to the limit are tolerated",
         AnalysisRun::for_step(&cfg(4, 1, 4, 1)),
         vec![("F", running()), ("P", running()), ("P", running()),
              ("F", failed("metric `p95`: 0.72 > max 0.5 (round 4)"))]),
        ("failure limit counts across metrics",
         AnalysisRun::for_step(&cfg(3, 1, 4, 1)),
         vec![("P a:F", running()), ("F a:P", failed("metric `p95`: 0.72 > max 0.5 (round 2)"))]),
        ("consecutive errors of one metric fail at the limit",
         AnalysisRun::for_step(&cfg(10, 0, 3, 1)),
         vec![("E", running()), ("E", running()),
              ("E", failed("metric `p95`: could not be measured 3 times in a row: connection refused (round 3)"))]),
        ("a good reading resets the error streak",
         AnalysisRun::for_step(&cfg(5, 0, 2, 1)),
         vec![("E", running()), ("P", running()), ("E", running()), ("P", running()), ("P", RunStatus::Passed)]),
        ("errors of different metrics do not add up",
         AnalysisRun::for_step(&cfg(3, 0, 2, 1)),
         vec![("E a:P", running()), ("P a:E", running()), ("P a:P", RunStatus::Passed)]),
        ("an inconclusive reading pauses at limit 1",
         AnalysisRun::for_step(&cfg(3, 0, 4, 1)),
         vec![("I", inconclusive("metric `p95`: 0.6 > max 0.5 (inconclusive range) (round 1)"))]),
        ("inconclusive readings below the limit let the run go on",
         AnalysisRun::for_step(&cfg(3, 0, 4, 2)),
         vec![("I", running()), ("P", running()),
              ("I", inconclusive("metric `p95`: 0.6 > max 0.5 (inconclusive range) (round 3)"))]),
        ("a failure outranks an inconclusive in the same round",
         AnalysisRun::for_step(&cfg(3, 0, 4, 1)),
         vec![("I a:F", failed("metric `a`: 0.72 > max 0.5 (round 1)"))]),
        ("not enough data does not pause the run while it goes on",
         AnalysisRun::for_step(&cfg(3, 0, 4, 1)),
         vec![("N", running()), ("N", running()), ("P", RunStatus::Passed)]),
        ("a metric that never had enough data makes the end inconclusive",
         AnalysisRun::for_step(&cfg(2, 0, 4, 1)),
         vec![("N a:P", running()),
              ("N a:P", inconclusive("metric `p95`: no round could judge it in 2 rounds (last: not enough data: 3 requests < min_requests 20)"))]),
        ("a metric that only ever errored cannot pass a step",
         AnalysisRun::for_step(&cfg(2, 0, 4, 1)),
         vec![("E", running()),
              ("E", inconclusive("metric `p95`: no round could judge it in 2 rounds (last: connection refused)"))]),
        ("an ended run keeps its status",
         AnalysisRun::for_step(&cfg(1, 0, 4, 1)),
         vec![("P", RunStatus::Passed), ("F", RunStatus::Passed)]),
    ];
    for (name, run, rounds) in cases {
        check(name, run, &rounds);
    }
}

#[test]
fn a_continuous_run_never_passes_but_fails_and_pauses() {
    let mut run = AnalysisRun::continuous(&cfg(2, 0, 2, 1));
    for _ in 0..10 {
        assert_eq!(run.record(&[m("P")]), RunStatus::Running);
    }
    assert_eq!(
        run.record(&[m("N")]),
        RunStatus::Running,
        "no traffic during the watch is not a verdict"
    );
    assert_eq!(run.rounds(), 11);
    assert_eq!(
        run.record(&[m("F")]),
        failed("metric `p95`: 0.72 > max 0.5 (round 12)")
    );

    let mut run = AnalysisRun::continuous(&cfg(2, 0, 2, 1));
    assert_eq!(run.record(&[m("E")]), RunStatus::Running);
    assert_eq!(
        run.record(&[m("E")]),
        failed(
            "metric `p95`: could not be measured 2 times in a row: connection refused (round 2)"
        )
    );

    let mut run = AnalysisRun::continuous(&cfg(2, 0, 2, 1));
    assert_eq!(
        run.record(&[m("I")]),
        inconclusive("metric `p95`: 0.6 > max 0.5 (inconclusive range) (round 1)")
    );
}

#[test]
fn a_closed_webhook_gate_holds_the_step_past_its_count_until_it_opens() {
    let c = cfg(2, 0, 4, 1);
    let mut run = AnalysisRun::for_step(&c);
    // The gate stays closed for four rounds: never a failure, never inconclusive, held.
    for _ in 0..4 {
        assert_eq!(run.record(&[m("P"), m("gate:G")]), RunStatus::Running);
    }
    // It opens: the step passes at once (count is long reached).
    assert_eq!(run.record(&[m("P"), m("gate:P")]), RunStatus::Passed);
}
