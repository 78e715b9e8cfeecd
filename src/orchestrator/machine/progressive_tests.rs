//! Table-driven tests of canary steps, pauses, promote, mirroring and analysis.

use std::time::Duration;

use super::super::{Effect, Event, Machine, Phase, Plan, Timer, TimerKind};
use crate::analysis::{Measurement, Verdict};
use crate::config::{
    AnalysisConfig, CanaryStep, MetricConfig, MetricProvider, MirrorConfig, Pause, Range,
    WatchConfig,
};
use crate::domain::routing::MirrorReport;
use crate::domain::Slot;
use crate::orchestrator::policy::Ms;
use crate::store::{DeploymentKind, DeploymentOutcome};

fn step(weight: u8, pause: Pause, analyze: bool) -> CanaryStep {
    CanaryStep {
        weight,
        pause,
        analyze,
    }
}

fn analysis() -> AnalysisConfig {
    AnalysisConfig {
        interval: Duration::from_secs(10),
        count: 2,
        failure_limit: 0,
        consecutive_error_limit: 2,
        inconclusive_limit: 1,
        metrics: vec![MetricConfig {
            name: "error-rate".into(),
            provider: MetricProvider::Builtin {
                signal: crate::config::BuiltinSignal::ErrorRate,
                min_requests: 1,
            },
            pass: Range {
                min: None,
                max: Some(0.05),
            },
            inconclusive: None,
            max_increase_over_stable: None,
        }],
    }
}

fn plan(steps: Vec<CanaryStep>) -> Plan {
    Plan {
        kind: DeploymentKind::Deploy,
        target: Slot::Green,
        from: Some(Slot::Blue),
        target_running: false,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
        health_interval: Duration::from_millis(500),
        health_deadline: Duration::from_secs(30),
        run_smoke: false,
        watch: Some(WatchConfig {
            duration: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            window: Duration::from_secs(10),
            error_rate: None,
            p95_latency: None,
            health_failures: 3,
        }),
        warm_for: Duration::from_secs(60),
        canary: steps,
        analysis: Some(analysis()),
        mirror: None,
        hooks: Vec::new(),
        database: false,
        database_down: Default::default(),
    }
}

fn healthy() -> Event {
    Event::HealthRound {
        ok: true,
        answered: true,
        detail: "ok".into(),
    }
}

fn timer(m: &Machine, kind: TimerKind) -> Event {
    Event::Timer(Timer {
        kind,
        epoch: m.epoch,
    })
}

fn round(verdict: Verdict, value: f64) -> Event {
    Event::Measured(vec![Measurement {
        metric: "error-rate".into(),
        value: Some(value),
        verdict,
        detail: format!("{value}"),
    }])
}

/// Runs a machine to just after its health checks (no smoke): the first traffic move.
fn healthy_machine(p: Plan) -> (Machine, Vec<Effect>) {
    let mut m = Machine::new(p);
    let mut fx = m.step(0, Event::Begin);
    fx.extend(m.step(10, Event::Started));
    fx.extend(m.step(20, healthy()));
    (m, fx)
}

fn splits(fx: &[Effect]) -> Vec<u8> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Split { canary_percent } => Some(*canary_percent),
            _ => None,
        })
        .collect()
}

fn finish_of(fx: &[Effect]) -> Option<(DeploymentOutcome, String)> {
    fx.iter().find_map(|e| match e {
        Effect::Finish { outcome, reason } => Some((*outcome, reason.clone())),
        _ => None,
    })
}

fn switched_fully(fx: &[Effect]) -> bool {
    fx.iter().any(|e| {
        matches!(
            e,
            Effect::Route {
                live: Some(Slot::Green),
                switched: true,
                ..
            }
        )
    })
}

#[test]
fn steps_without_analysis_or_pauses_walk_up_the_weights_then_switch() {
    let (mut m, fx) = healthy_machine(plan(vec![
        step(10, Pause::None, false),
        step(50, Pause::None, false),
    ]));
    assert_eq!(splits(&fx), vec![10]);
    assert_eq!(m.phase(), Phase::Canary(0));
    let fx = m.step(30, Event::Routed);
    assert_eq!(splits(&fx), vec![50]);
    assert_eq!(m.phase(), Phase::Canary(1));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Notify { event: "step", .. })));
    let fx = m.step(40, Event::Routed);
    assert!(switched_fully(&fx));
    let fx = m.step(50, Event::Routed);
    assert_eq!(m.phase(), Phase::Watch);
    assert!(
        fx.contains(&Effect::Measure)
            || fx.iter().any(|e| matches!(
                e,
                Effect::Schedule {
                    timer: Timer {
                        kind: TimerKind::NextMeasure,
                        ..
                    },
                    ..
                }
            ))
    );
}

#[test]
fn a_timed_pause_holds_the_step_until_it_elapses() {
    let (mut m, _) = healthy_machine(plan(vec![
        step(10, Pause::For(Duration::from_secs(60)), false),
        step(50, Pause::None, false),
    ]));
    let fx = m.step(30, Event::Routed);
    assert!(splits(&fx).is_empty(), "the pause holds the first step");
    assert!(fx.iter().any(|e| matches!(e, Effect::Schedule { after, timer: Timer { kind: TimerKind::StepPause, .. } } if *after == Duration::from_secs(60))));
    let fx = m.step(60_030, timer(&m, TimerKind::StepPause));
    assert_eq!(splits(&fx), vec![50]);
}

#[test]
fn an_indefinite_pause_waits_for_promote_and_promote_full_goes_to_all_traffic() {
    let (mut m, _) = healthy_machine(plan(vec![
        step(10, Pause::UntilPromoted, false),
        step(50, Pause::UntilPromoted, false),
        step(75, Pause::None, false),
    ]));
    m.step(30, Event::Routed);
    assert_eq!(m.phase(), Phase::Canary(0));
    let fx = m.step(
        1_000_000,
        Event::Promote {
            full: false,
            by: "alice".into(),
        },
    );
    assert_eq!(splits(&fx), vec![50]);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Notify {
            event: "promoted",
            ..
        }
    )));
    m.step(1_000_010, Event::Routed);
    let fx = m.step(
        1_000_020,
        Event::Promote {
            full: true,
            by: "alice".into(),
        },
    );
    assert!(
        switched_fully(&fx),
        "promote --full skips the remaining steps"
    );
    assert!(splits(&fx).is_empty());
}

#[test]
fn pause_holds_a_step_whose_conditions_are_met_and_resume_lets_it_go_on() {
    let (mut m, _) = healthy_machine(plan(vec![
        step(10, Pause::For(Duration::from_secs(5)), false),
        step(50, Pause::None, false),
    ]));
    m.step(30, Event::Routed);
    m.step(40, Event::Pause { by: "bob".into() });
    let fx = m.step(5_030, timer(&m, TimerKind::StepPause));
    assert!(splits(&fx).is_empty(), "held by the operator");
    assert_eq!(m.canary_view().held.as_deref(), Some("paused by bob"));
    let fx = m.step(9_000, Event::Resume { by: "bob".into() });
    assert_eq!(splits(&fx), vec![50]);
}

#[test]
fn abort_and_rollback_during_a_step_send_all_traffic_back_to_the_stable_slot() {
    for (event, outcome) in [
        (
            Event::Abort { by: "ops".into() },
            DeploymentOutcome::Aborted,
        ),
        (
            Event::Rollback { by: "ops".into() },
            DeploymentOutcome::RolledBack,
        ),
        (
            Event::Exited("exit status: 1".into()),
            DeploymentOutcome::RolledBack,
        ),
    ] {
        let (mut m, _) = healthy_machine(plan(vec![step(25, Pause::UntilPromoted, false)]));
        m.step(30, Event::Routed);
        let fx = m.step(40, event.clone());
        assert!(
            fx.contains(&Effect::Route {
                live: Some(Slot::Blue),
                preview: Some(Slot::Green),
                switched: false
            }),
            "{event:?}"
        );
        let fx = m.step(50, Event::Routed);
        assert_eq!(finish_of(&fx).map(|f| f.0), Some(outcome), "{event:?}");
        assert!(fx.contains(&Effect::Stop { slot: Slot::Green }));
    }
}

#[test]
fn a_refused_first_split_fails_before_any_traffic_moved() {
    let (mut m, _) = healthy_machine(plan(vec![step(10, Pause::None, false)]));
    let fx = m.step(30, Event::RouteFailed("weights unsupported".into()));
    let (outcome, reason) = finish_of(&fx).unwrap();
    assert_eq!(outcome, DeploymentOutcome::Failed);
    assert!(reason.contains("weights unsupported"));
}

#[test]
fn a_failed_analysis_round_rolls_the_canary_back_naming_the_step() {
    let (mut m, _) = healthy_machine(plan(vec![
        step(10, Pause::None, true),
        step(50, Pause::None, true),
    ]));
    m.step(30, Event::Routed);
    let fx = m.step(10_030, timer(&m, TimerKind::NextMeasure));
    assert!(fx.contains(&Effect::Measure));
    let fx = m.step(10_040, round(Verdict::Pass, 0.0));
    assert!(
        splits(&fx).is_empty(),
        "count = 2: one passing round is not enough"
    );
    m.step(20_040, timer(&m, TimerKind::NextMeasure));
    let fx = m.step(20_050, round(Verdict::Pass, 0.01));
    assert_eq!(splits(&fx), vec![50], "two passing rounds pass the step");
    m.step(20_060, Event::Routed);
    m.step(30_060, timer(&m, TimerKind::NextMeasure));
    let fx = m.step(30_070, round(Verdict::Fail, 0.2));
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    let fx = m.step(30_080, Event::Routed);
    let (outcome, reason) = finish_of(&fx).unwrap();
    assert_eq!(outcome, DeploymentOutcome::RolledBack);
    assert!(reason.contains("canary step 2 (50%)"), "{reason}");
    assert!(reason.contains("error-rate"), "{reason}");
}

#[test]
fn an_inconclusive_round_holds_the_canary_until_a_human_promotes() {
    let (mut m, _) = healthy_machine(plan(vec![
        step(10, Pause::None, true),
        step(50, Pause::None, false),
    ]));
    m.step(30, Event::Routed);
    m.step(10_030, timer(&m, TimerKind::NextMeasure));
    let fx = m.step(10_040, round(Verdict::Inconclusive, 0.04));
    assert!(splits(&fx).is_empty());
    assert!(m.canary_view().held.is_some());
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Notify {
            event: "paused",
            ..
        }
    )));
    let fx = m.step(
        99_000,
        Event::Promote {
            full: false,
            by: "carol".into(),
        },
    );
    assert_eq!(splits(&fx), vec![50]);
}

#[test]
fn mirroring_runs_before_any_traffic_moves_and_judges_mismatches() {
    let cases: [(MirrorReport, bool); 3] = [
        (
            MirrorReport {
                mirrored: 100,
                compared: 100,
                mismatched: 2,
                ..Default::default()
            },
            true,
        ),
        (
            MirrorReport {
                mirrored: 100,
                compared: 100,
                mismatched: 20,
                ..Default::default()
            },
            false,
        ),
        // Too few compared to judge: go on.
        (
            MirrorReport {
                mirrored: 5,
                compared: 5,
                mismatched: 5,
                ..Default::default()
            },
            true,
        ),
    ];
    for (report, passes) in cases {
        let mut p = plan(vec![]);
        p.mirror = Some(MirrorConfig {
            percent: 50,
            methods: vec!["GET".into()],
            duration: Duration::from_secs(20),
            max_mismatch: 0.05,
            min_requests: 20,
        });
        let (mut m, fx) = healthy_machine(p);
        assert_eq!(m.phase(), Phase::Mirror);
        assert!(fx.contains(&Effect::Mirror(true)));
        assert!(!switched_fully(&fx));
        let fx = m.step(20_020, timer(&m, TimerKind::MirrorEnd));
        assert_eq!(fx, vec![Effect::CheckMirror]);
        let fx = m.step(20_030, Event::MirrorReport(Some(report)));
        assert!(fx.contains(&Effect::Mirror(false)));
        assert_eq!(switched_fully(&fx), passes, "{report:?}");
        if !passes {
            let (outcome, reason) = finish_of(&fx).unwrap();
            assert_eq!(outcome, DeploymentOutcome::Failed);
            assert!(reason.contains("mirrored traffic disagreed"), "{reason}");
        }
    }
}

#[test]
fn the_watch_runs_continuous_analysis_and_rolls_back_on_failure() {
    let mut p = plan(vec![]);
    p.analysis = Some(analysis());
    let (mut m, fx) = healthy_machine(p);
    assert!(switched_fully(&fx));
    let fx = m.step(30, Event::Routed);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Schedule {
            timer: Timer {
                kind: TimerKind::NextMeasure,
                ..
            },
            ..
        }
    )));
    m.step(10_030, timer(&m, TimerKind::NextMeasure));
    let fx = m.step(10_040, round(Verdict::Pass, 0.0));
    assert!(finish_of(&fx).is_none());
    let fx = m.step(20_040, round(Verdict::Fail, 0.5));
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    let _: Ms = 0;
}
