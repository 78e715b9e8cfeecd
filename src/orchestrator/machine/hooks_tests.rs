//! Table-driven tests of hook phases: every point with a passing hook, a failing one
//! with `abort`, a failing one with `warn` and one that timed out; and the rule that a
//! failing `pre_switch` hook never moves live traffic.
//!
//! The events are built the way the runner builds them (`runner::hooks::answer`), so a
//! `warn` failure is tested through the path that records it and answers success.

use std::path::PathBuf;
use std::time::Duration;

use super::super::{Effect, Event, Machine, Phase, Plan, Timer, TimerKind};
use crate::config::{
    CanaryStep, Hook, HookAction, HookPoint, MirrorConfig, OnFailure, Pause, WatchConfig,
};
use crate::domain::routing::MirrorReport;
use crate::domain::Slot;
use crate::orchestrator::policy::Ms;
use crate::orchestrator::runner::hooks::{answer, HookRun};
use crate::store::{DeploymentKind, DeploymentOutcome};

fn plan(hooks: &[HookPoint]) -> Plan {
    Plan {
        kind: DeploymentKind::Deploy,
        target: Slot::Green,
        from: Some(Slot::Blue),
        target_running: false,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
        health_interval: Duration::from_millis(500),
        health_deadline: Duration::from_secs(30),
        run_smoke: true,
        watch: Some(WatchConfig::default()),
        warm_for: Duration::from_secs(300),
        canary: Vec::new(),
        analysis: None,
        mirror: None,
        hooks: hooks.to_vec(),
        database: false,
        database_down: Default::default(),
    }
}

fn hook(at: HookPoint, on_failure: OnFailure) -> Hook {
    Hook {
        name: "h".into(),
        at,
        action: HookAction::Command {
            argv: vec!["./h".into()],
            dir: PathBuf::new(),
        },
        timeout: Duration::from_secs(30),
        on_failure,
    }
}

fn healthy() -> Event {
    Event::HealthRound {
        ok: true,
        answered: true,
        detail: "ok".into(),
    }
}

fn smoke_passed() -> Event {
    Event::Smoke {
        passed: true,
        failure: None,
    }
}

fn timer(m: &Machine, kind: TimerKind) -> Event {
    Event::Timer(Timer {
        kind,
        epoch: m.epoch,
    })
}

/// Drives a deployment (with hooks at `point` only) until it asks for them; returns
/// every effect so far.
fn reach(point: HookPoint) -> (Machine, Vec<Effect>) {
    let mut m = Machine::new(plan(&[point]));
    let mut fx = m.step(0, Event::Begin);
    let mut feed = |m: &mut Machine, now: Ms, e: Event| fx.extend(m.step(now, e));
    if point != HookPoint::BeforeStart {
        feed(&mut m, 10, Event::Started);
        feed(&mut m, 20, healthy());
        feed(&mut m, 30, smoke_passed());
    }
    if matches!(
        point,
        HookPoint::PostSwitch | HookPoint::AfterSuccess | HookPoint::OnRollback
    ) {
        feed(&mut m, 40, Event::Routed);
    }
    match point {
        HookPoint::AfterSuccess => {
            let end = timer(&m, TimerKind::WatchEnd);
            feed(&mut m, 30_040, end);
        }
        HookPoint::OnRollback => {
            feed(&mut m, 50, Event::Rollback { by: "ops".into() });
            feed(&mut m, 60, Event::Routed);
        }
        _ => {}
    }
    assert_eq!(m.phase(), Phase::Hooks(point), "{point}: {fx:?}");
    assert_eq!(fx.last(), Some(&Effect::RunHooks(point)), "{point}");
    (m, fx)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Run {
    Passes,
    FailsWithAbort,
    FailsWithWarn,
    TimesOut,
}

/// The event the runner sends for one hook of `point` that ran as `run`.
fn hooks_event(point: HookPoint, run: Run) -> (Event, String) {
    let policy = match run {
        Run::FailsWithWarn => OnFailure::Warn,
        _ => point.default_on_failure(),
    };
    let h = hook(point, policy);
    let result = match run {
        Run::Passes => HookRun {
            ok: true,
            status: "exit 0".into(),
            output: "done".into(),
            duration: Duration::from_millis(5),
        },
        Run::FailsWithAbort | Run::FailsWithWarn => HookRun {
            ok: false,
            status: "exit 1".into(),
            output: "step 1\nboom".into(),
            duration: Duration::from_millis(5),
        },
        Run::TimesOut => HookRun {
            ok: false,
            status: "timed out after 30s".into(),
            output: "started".into(),
            duration: Duration::from_secs(30),
        },
    };
    let (event, records) = answer(point, vec![(&h, result)]);
    assert_eq!(records.len(), 1);
    (event, records[0].detail.clone())
}

enum Then {
    /// The deployment carries on into this phase.
    Continues(Phase),
    /// It finishes (after traffic is back, if it moved) with this outcome and reason.
    Finishes(DeploymentOutcome, &'static str),
}

#[test]
fn every_hook_point_passing_failing_warning_and_timing_out() {
    use DeploymentOutcome::{Failed, RolledBack, Succeeded};
    use HookPoint::*;
    use Run::*;
    let cases: Vec<(HookPoint, Run, Then)> = vec![
        (BeforeStart, Passes, Then::Continues(Phase::Start)),
        (
            BeforeStart,
            FailsWithAbort,
            Then::Finishes(Failed, "before_start hook `h` failed: exit 1: boom"),
        ),
        (BeforeStart, FailsWithWarn, Then::Continues(Phase::Start)),
        (
            BeforeStart,
            TimesOut,
            Then::Finishes(Failed, "before_start hook `h` failed: timed out after 30s"),
        ),
        (PreSwitch, Passes, Then::Continues(Phase::Switch)),
        (
            PreSwitch,
            FailsWithAbort,
            Then::Finishes(Failed, "pre_switch hook `h` failed: exit 1: boom"),
        ),
        (PreSwitch, FailsWithWarn, Then::Continues(Phase::Switch)),
        (
            PreSwitch,
            TimesOut,
            Then::Finishes(Failed, "pre_switch hook `h` failed: timed out after 30s"),
        ),
        (PostSwitch, Passes, Then::Continues(Phase::Watch)),
        (
            PostSwitch,
            FailsWithAbort,
            Then::Finishes(RolledBack, "post_switch hook `h` failed: exit 1: boom"),
        ),
        (PostSwitch, FailsWithWarn, Then::Continues(Phase::Watch)),
        (
            PostSwitch,
            TimesOut,
            Then::Finishes(
                RolledBack,
                "post_switch hook `h` failed: timed out after 30s",
            ),
        ),
        // `abort` is refused by the config at the last two points: their failures warn.
        (
            AfterSuccess,
            Passes,
            Then::Finishes(Succeeded, "watched for 30s with no trigger"),
        ),
        (
            AfterSuccess,
            FailsWithWarn,
            Then::Finishes(Succeeded, "watched for 30s with no trigger"),
        ),
        (
            AfterSuccess,
            TimesOut,
            Then::Finishes(Succeeded, "watched for 30s with no trigger"),
        ),
        (
            OnRollback,
            Passes,
            Then::Finishes(RolledBack, "rollback requested by ops"),
        ),
        (
            OnRollback,
            FailsWithWarn,
            Then::Finishes(RolledBack, "rollback requested by ops"),
        ),
        (
            OnRollback,
            TimesOut,
            Then::Finishes(RolledBack, "rollback requested by ops"),
        ),
    ];
    for (point, run, then) in cases {
        let name = format!("{point} {run:?}");
        let (mut m, mut fx) = reach(point);
        let (event, detail) = hooks_event(point, run);
        let warns = !point.can_abort() || run == FailsWithWarn;
        match (run, warns) {
            (Passes, _) => assert_eq!(detail, "exit 0\ndone", "{name}"),
            (_, true) => {
                assert_eq!(
                    event,
                    Event::Hooks {
                        point,
                        failure: None
                    },
                    "{name}: a warning is success to the machine"
                );
                assert!(
                    detail.contains("(on_failure = warn: the deployment carried on)"),
                    "{name}: {detail}"
                );
            }
            (_, false) => assert!(
                matches!(
                    &event,
                    Event::Hooks {
                        failure: Some(_),
                        ..
                    }
                ),
                "{name}: {event:?}"
            ),
        }
        let after = m.step(100_000, event);
        fx.extend(after.clone());
        match then {
            Then::Continues(phase) => {
                assert_eq!(m.phase(), phase, "{name}: {after:?}");
                assert_eq!(m.outcome(), None, "{name}");
            }
            Then::Finishes(outcome, reason) => {
                if m.phase() == Phase::SwitchBack {
                    assert!(
                        after.contains(&Effect::Route {
                            live: Some(Slot::Blue),
                            preview: Some(Slot::Green),
                            switched: false
                        }),
                        "{name}: traffic goes back to blue: {after:?}"
                    );
                    fx.extend(m.step(100_010, Event::Routed));
                }
                let finish = fx.iter().rev().find_map(|e| match e {
                    Effect::Finish { outcome, reason } => Some((*outcome, reason.clone())),
                    _ => None,
                });
                let (got, why) = finish.unwrap_or_else(|| panic!("{name}: did not finish: {fx:?}"));
                assert_eq!(got, outcome, "{name}: {why}");
                assert!(why.contains(reason), "{name}: reason was {why:?}");
            }
        }
        // Before the switch, no outcome moves live traffic to the new slot.
        if matches!(point, BeforeStart | PreSwitch) {
            assert!(
                !fx.iter().any(|e| matches!(e, Effect::Route { live: Some(Slot::Green), .. } if m.outcome().is_some())),
                "{name}: live traffic moved to green"
            );
        }
        if point == BeforeStart && m.outcome().is_some() {
            assert!(!fx.contains(&Effect::StartTarget), "{name}: started anyway");
            assert!(
                !fx.iter()
                    .any(|e| matches!(e, Effect::Route { .. } | Effect::Stop { .. })),
                "{name}: nothing was started, so nothing is routed or stopped: {fx:?}"
            );
        }
        if point == PreSwitch && m.outcome().is_some() {
            assert!(
                fx.contains(&Effect::Stop { slot: Slot::Green }),
                "{name}: new slot not stopped"
            );
            assert!(
                !fx.contains(&Effect::Stop { slot: Slot::Blue }),
                "{name}: live slot stopped"
            );
        }
    }
}

/// Every effect of a deployment with `pre_switch` hooks whose hooks end as `end` says.
/// How the `pre_switch` hooks end.
type HooksEnd = fn() -> Event;

fn deploy_with_failing_pre_switch(p: Plan, end: HooksEnd) -> Vec<Effect> {
    let mirror = p.mirror.is_some();
    let mut m = Machine::new(p);
    let mut fx = Vec::new();
    for (now, e) in [
        (0, Event::Begin),
        (10, Event::Started),
        (20, healthy()),
        (30, smoke_passed()),
    ] {
        fx.extend(m.step(now, e));
    }
    if mirror {
        fx.extend(m.step(40, timer(&m, TimerKind::MirrorEnd)));
        fx.extend(m.step(50, Event::MirrorReport(Some(MirrorReport::default()))));
    }
    assert_eq!(m.phase(), Phase::Hooks(HookPoint::PreSwitch));
    let e = end();
    fx.extend(m.step(60, e));
    // Whatever comes late must not move traffic either.
    fx.extend(m.step(70, Event::Routed));
    fx.extend(m.step(
        80,
        Event::Hooks {
            point: HookPoint::PreSwitch,
            failure: None,
        },
    ));
    assert_eq!(m.phase(), Phase::Done, "{fx:?}");
    fx
}

#[test]
fn a_failing_pre_switch_hook_never_routes_live_traffic_to_the_new_slot() {
    let blue_green = plan(&[HookPoint::PreSwitch]);
    let canary = Plan {
        canary: vec![
            CanaryStep {
                weight: 10,
                pause: Pause::None,
                analyze: false,
            },
            CanaryStep {
                weight: 50,
                pause: Pause::None,
                analyze: false,
            },
        ],
        ..plan(&[HookPoint::PreSwitch])
    };
    let mirrored = Plan {
        mirror: Some(MirrorConfig {
            percent: 100,
            methods: vec!["GET".into()],
            duration: Duration::from_secs(10),
            max_mismatch: 0.05,
            min_requests: 20,
        }),
        ..plan(&[HookPoint::PreSwitch])
    };
    let ends: [(&str, HooksEnd); 4] = [
        ("fails", || {
            hooks_event(HookPoint::PreSwitch, Run::FailsWithAbort).0
        }),
        ("times out", || {
            hooks_event(HookPoint::PreSwitch, Run::TimesOut).0
        }),
        ("aborted while running", || Event::Abort {
            by: "ops".into(),
        }),
        ("the release exits meanwhile", || {
            Event::Exited("signal 9".into())
        }),
    ];
    for (plan_name, p) in [
        ("blue-green", blue_green),
        ("canary", canary),
        ("mirror", mirrored),
    ] {
        for (end_name, end) in &ends {
            let fx = deploy_with_failing_pre_switch(p.clone(), *end);
            let name = format!("{plan_name}, hook {end_name}");
            for e in &fx {
                assert!(
                    !matches!(
                        e,
                        Effect::Route {
                            live: Some(Slot::Green),
                            ..
                        }
                    ),
                    "{name}: {e:?} routes live traffic to the new slot"
                );
                assert!(
                    !matches!(e, Effect::Split { .. }),
                    "{name}: {e:?} splits traffic"
                );
            }
            assert!(
                fx.contains(&Effect::Stop { slot: Slot::Green }),
                "{name}: new slot not stopped"
            );
        }
    }
}

#[test]
fn points_without_hooks_add_no_phase() {
    let (_, fx) = reach(HookPoint::AfterSuccess);
    let entered: Vec<Phase> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Enter { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(
        entered,
        [
            Phase::Start,
            Phase::WaitHealthy,
            Phase::Smoke,
            Phase::Switch,
            Phase::Watch,
            Phase::Hooks(HookPoint::AfterSuccess)
        ]
    );
    assert_eq!(
        Phase::Hooks(HookPoint::PreSwitch).label(),
        "hooks_pre_switch"
    );
}

#[test]
fn a_failing_post_switch_hook_switches_back_and_then_runs_the_on_rollback_hooks() {
    let mut m = Machine::new(plan(&[HookPoint::PostSwitch, HookPoint::OnRollback]));
    for (now, e) in [
        (0, Event::Begin),
        (10, Event::Started),
        (20, healthy()),
        (30, smoke_passed()),
        (40, Event::Routed),
    ] {
        m.step(now, e);
    }
    assert_eq!(m.phase(), Phase::Hooks(HookPoint::PostSwitch));
    let fx = m.step(
        50,
        hooks_event(HookPoint::PostSwitch, Run::FailsWithAbort).0,
    );
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    let fx = m.step(60, Event::Routed);
    // Traffic is back before the on_rollback hooks run.
    assert_eq!(m.phase(), Phase::Hooks(HookPoint::OnRollback));
    assert!(fx.contains(&Effect::Stop { slot: Slot::Green }));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Finish { .. })));
    // An abort now has nothing left to do.
    assert!(!m
        .step(65, Event::Abort { by: "ops".into() })
        .iter()
        .any(|e| matches!(e, Effect::Route { .. } | Effect::Finish { .. })));
    let fx = m.step(70, hooks_event(HookPoint::OnRollback, Run::FailsWithWarn).0);
    let finish = fx.iter().find_map(|e| match e {
        Effect::Finish { outcome, reason } => Some((*outcome, reason.clone())),
        _ => None,
    });
    let (outcome, reason) = finish.expect("finished");
    assert_eq!(outcome, DeploymentOutcome::RolledBack);
    assert!(reason.contains("post_switch hook `h` failed"), "{reason}");
}

#[test]
fn a_failing_post_switch_hook_of_a_first_deploy_fails_and_traffic_stays() {
    let mut p = plan(&[HookPoint::PostSwitch]);
    p.from = None;
    p.target = Slot::Blue;
    let mut m = Machine::new(p);
    for (now, e) in [
        (0, Event::Begin),
        (10, Event::Started),
        (20, healthy()),
        (30, smoke_passed()),
        (40, Event::Routed),
    ] {
        m.step(now, e);
    }
    let fx = m.step(
        50,
        hooks_event(HookPoint::PostSwitch, Run::FailsWithAbort).0,
    );
    assert_eq!(m.outcome(), Some(DeploymentOutcome::Failed));
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Route { .. } | Effect::Stop { .. })),
        "{fx:?}"
    );
}

#[test]
fn an_abort_during_post_switch_hooks_switches_back() {
    let (mut m, _) = reach(HookPoint::PostSwitch);
    let fx = m.step(100, Event::Abort { by: "ops".into() });
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    // The hooks' late answer means nothing now.
    assert!(m
        .step(
            101,
            Event::Hooks {
                point: HookPoint::PostSwitch,
                failure: None
            }
        )
        .is_empty());
    let fx = m.step(102, Event::Routed);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Finish {
            outcome: DeploymentOutcome::Aborted,
            ..
        }
    )));
}

#[test]
fn a_rollback_runs_its_on_rollback_hooks_after_its_switch() {
    let p = Plan {
        kind: DeploymentKind::Rollback,
        target: Slot::Blue,
        from: Some(Slot::Green),
        target_running: true,
        run_smoke: false,
        watch: None,
        ..plan(&[HookPoint::OnRollback])
    };
    let mut m = Machine::new(p);
    m.step(0, Event::Begin);
    let fx = m.step(10, healthy());
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: true
    }));
    let fx = m.step(20, Event::Routed);
    assert_eq!(m.phase(), Phase::Hooks(HookPoint::OnRollback));
    assert_eq!(fx.last(), Some(&Effect::RunHooks(HookPoint::OnRollback)));
    let fx = m.step(
        30,
        Event::Hooks {
            point: HookPoint::OnRollback,
            failure: None,
        },
    );
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Finish {
            outcome: DeploymentOutcome::Succeeded,
            ..
        }
    )));
}
