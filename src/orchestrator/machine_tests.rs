//! Table-driven tests of the deployment state machine: every phase with success,
//! failure, timeout and abort; rollback triggers at and around their thresholds.

use std::time::Duration;

use super::*;
use crate::config::{ErrorRateTrigger, LatencyTrigger, WatchConfig};
use crate::domain::stats::StatsSnapshot;

fn watch_cfg() -> WatchConfig {
    WatchConfig {
        duration: Duration::from_secs(30),
        interval: Duration::from_secs(1),
        window: Duration::from_secs(10),
        error_rate: Some(ErrorRateTrigger {
            max: 0.05,
            for_: Duration::from_secs(2),
            min_requests: 20,
        }),
        p95_latency: Some(LatencyTrigger {
            max: Duration::from_millis(500),
            for_: Duration::from_secs(2),
            min_requests: 20,
        }),
        health_failures: 3,
    }
}

fn deploy_plan() -> Plan {
    Plan {
        kind: DeploymentKind::Deploy,
        target: Slot::Green,
        from: Some(Slot::Blue),
        target_running: false,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        health_interval: Duration::from_millis(500),
        health_deadline: Duration::from_secs(30),
        run_smoke: true,
        watch: Some(watch_cfg()),
        warm_for: Duration::from_secs(300),
        canary: Vec::new(),
        analysis: None,
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

fn unhealthy() -> Event {
    Event::HealthRound {
        ok: false,
        answered: true,
        detail: "503".into(),
    }
}

fn refused() -> Event {
    Event::HealthRound {
        ok: false,
        answered: false,
        detail: "connection refused".into(),
    }
}

/// Cumulative counters: `requests` total of which `errors` were 5xx, every latency in
/// the bucket bounded by `latency_us`.
fn snap(requests: u64, errors: u64, latency_us: u64) -> StatsSnapshot {
    let mut s = StatsSnapshot {
        requests,
        ..Default::default()
    };
    s.status_class[1] = requests - errors;
    s.status_class[4] = errors;
    let bucket = crate::domain::stats::LATENCY_BOUNDS_US.partition_point(|&b| b < latency_us);
    s.latency_buckets[bucket] = requests;
    s
}

fn sample(requests: u64, errors: u64) -> Event {
    Event::Sample {
        stats: Box::new(snap(requests, errors, 1_000)),
        exited: None,
    }
}

fn timer(m: &Machine, kind: TimerKind) -> Event {
    Event::Timer(Timer {
        kind,
        epoch: m.epoch,
    })
}

/// Feeds events in order at the given times; returns every effect produced.
fn drive(m: &mut Machine, events: Vec<(Ms, Event)>) -> Vec<Effect> {
    events
        .into_iter()
        .flat_map(|(now, e)| m.step(now, e))
        .collect()
}

/// A machine that has just switched traffic and is watching.
fn watching() -> Machine {
    let mut m = Machine::new(deploy_plan());
    drive(
        &mut m,
        vec![
            (0, Event::Begin),
            (10, Event::Started),
            (20, healthy()),
            (30, healthy()),
        ],
    );
    drive(
        &mut m,
        vec![
            (
                40,
                Event::Smoke {
                    passed: true,
                    failure: None,
                },
            ),
            (50, Event::Routed),
        ],
    );
    assert_eq!(m.phase(), Phase::Watch);
    m
}

fn finish_of(fx: &[Effect]) -> Option<(DeploymentOutcome, String)> {
    fx.iter().find_map(|e| match e {
        Effect::Finish { outcome, reason } => Some((*outcome, reason.clone())),
        _ => None,
    })
}

/// Whether any effect would send normal traffic somewhere other than `slot`.
fn moves_live_away_from(fx: &[Effect], slot: Option<Slot>) -> bool {
    fx.iter()
        .any(|e| matches!(e, Effect::Route { live, .. } if *live != slot))
}

#[test]
fn a_healthy_release_goes_through_every_phase_and_keeps_the_old_slot_warm() {
    let mut m = Machine::new(deploy_plan());
    let fx = m.step(0, Event::Begin);
    assert_eq!(
        fx,
        vec![
            Effect::Notify {
                event: "started",
                message: "deploying to green".into(),
            },
            Effect::Enter {
                phase: Phase::Start,
                result: None
            },
            Effect::SlotState {
                slot: Slot::Green,
                state: SlotState::Starting,
                until_after: None
            },
            Effect::StartTarget,
        ]
    );
    let fx = m.step(100, Event::Started);
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    assert!(fx.contains(&Effect::CheckHealth));
    assert_eq!(m.phase(), Phase::WaitHealthy);

    let fx = m.step(200, healthy());
    assert_eq!(
        m.phase(),
        Phase::WaitHealthy,
        "one passing round is below the healthy threshold"
    );
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Schedule {
            timer: Timer {
                kind: TimerKind::NextHealth,
                ..
            },
            ..
        }
    )));
    m.step(700, timer(&m, TimerKind::NextHealth));
    let fx = m.step(710, healthy());
    assert_eq!(m.phase(), Phase::Smoke);
    assert!(fx.contains(&Effect::RunSmoke));

    let fx = m.step(
        800,
        Event::Smoke {
            passed: true,
            failure: None,
        },
    );
    assert_eq!(m.phase(), Phase::Switch);
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Green),
        preview: Some(Slot::Blue),
        switched: true
    }));

    let fx = m.step(810, Event::Routed);
    assert_eq!(m.phase(), Phase::Watch);
    assert!(fx.contains(&Effect::SlotState {
        slot: Slot::Green,
        state: SlotState::Live,
        until_after: None
    }));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Stop { .. })),
        "the old slot is not stopped during the watch"
    );

    let fx = m.step(30_810, timer(&m, TimerKind::WatchEnd));
    assert_eq!(m.outcome(), Some(DeploymentOutcome::Succeeded));
    assert!(fx.contains(&Effect::SlotState {
        slot: Slot::Blue,
        state: SlotState::Standby,
        until_after: Some(Duration::from_secs(300)),
    }));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Stop { .. })));
}

#[test]
fn every_failure_before_the_switch_stops_the_new_slot_and_leaves_traffic_untouched() {
    struct Case {
        name: &'static str,
        events: fn(&Machine) -> Vec<(Ms, Event)>,
        outcome: DeploymentOutcome,
        reason_contains: &'static str,
    }
    let cases = [
        Case {
            name: "start fails",
            events: |_| vec![(10, Event::StartFailed("no such file".into()))],
            outcome: DeploymentOutcome::Failed,
            reason_contains: "start failed: no such file",
        },
        Case {
            name: "health deadline passes",
            events: |m| {
                vec![
                    (10, Event::Started),
                    (20, refused()),
                    (
                        30_020,
                        Event::Timer(Timer {
                            kind: TimerKind::HealthDeadline,
                            epoch: m.epoch + 1,
                        }),
                    ),
                ]
            },
            outcome: DeploymentOutcome::Failed,
            reason_contains: "not healthy within 30s",
        },
        Case {
            name: "answered unhealthy three times",
            events: |_| {
                vec![
                    (10, Event::Started),
                    (20, unhealthy()),
                    (30, unhealthy()),
                    (40, unhealthy()),
                ]
            },
            outcome: DeploymentOutcome::Failed,
            reason_contains: "unhealthy 3 times in a row: 503",
        },
        Case {
            name: "the release exits while starting up",
            events: |_| {
                vec![
                    (10, Event::Started),
                    (20, Event::Exited("exit status: 1".into())),
                ]
            },
            outcome: DeploymentOutcome::Failed,
            reason_contains: "exited: exit status: 1",
        },
        Case {
            name: "smoke tests fail",
            events: |_| {
                vec![
                    (10, Event::Started),
                    (20, healthy()),
                    (30, healthy()),
                    (
                        40,
                        Event::Smoke {
                            passed: false,
                            failure: Some("step `read`: expected status 200, got 404".into()),
                        },
                    ),
                ]
            },
            outcome: DeploymentOutcome::Failed,
            reason_contains: "smoke tests failed: step `read`",
        },
        Case {
            name: "the router refuses the switch",
            events: |_| {
                vec![
                    (10, Event::Started),
                    (20, healthy()),
                    (30, healthy()),
                    (
                        40,
                        Event::Smoke {
                            passed: true,
                            failure: None,
                        },
                    ),
                    (50, Event::RouteFailed("nginx -t failed".into())),
                ]
            },
            outcome: DeploymentOutcome::Failed,
            reason_contains: "switch failed: nginx -t failed",
        },
        Case {
            name: "abort while starting",
            events: |_| vec![(10, Event::Abort { by: "ops".into() })],
            outcome: DeploymentOutcome::Aborted,
            reason_contains: "aborted by ops before the switch",
        },
        Case {
            name: "abort while waiting for health",
            events: |_| {
                vec![
                    (10, Event::Started),
                    (20, refused()),
                    (30, Event::Abort { by: "ops".into() }),
                ]
            },
            outcome: DeploymentOutcome::Aborted,
            reason_contains: "aborted by ops",
        },
        Case {
            name: "abort during smoke tests",
            events: |_| {
                vec![
                    (10, Event::Started),
                    (20, healthy()),
                    (30, healthy()),
                    (40, Event::Abort { by: "ops".into() }),
                ]
            },
            outcome: DeploymentOutcome::Aborted,
            reason_contains: "aborted by ops",
        },
    ];
    for case in cases {
        let mut m = Machine::new(deploy_plan());
        let mut fx = m.step(0, Event::Begin);
        let events = (case.events)(&m);
        fx.extend(drive(&mut m, events));
        let (outcome, reason) =
            finish_of(&fx).unwrap_or_else(|| panic!("{}: did not finish", case.name));
        assert_eq!(outcome, case.outcome, "{}", case.name);
        assert!(
            reason.contains(case.reason_contains),
            "{}: reason was {reason:?}",
            case.name
        );
        // The last routing asked for leaves normal traffic on blue, the slot that was live.
        let last_live = fx.iter().rev().find_map(|e| match e {
            Effect::Route { live, .. } => Some(*live),
            _ => None,
        });
        assert!(
            matches!(last_live, None | Some(Some(Slot::Blue))),
            "{}: live traffic moved",
            case.name
        );
        assert!(
            fx.contains(&Effect::Stop { slot: Slot::Green }),
            "{}: new slot not stopped",
            case.name
        );
        assert!(
            !fx.contains(&Effect::Stop { slot: Slot::Blue }),
            "{}: live slot stopped",
            case.name
        );
        assert_eq!(m.phase(), Phase::Done, "{}", case.name);
    }
}

#[test]
fn a_release_that_does_not_answer_yet_is_not_counted_unhealthy() {
    let mut m = Machine::new(deploy_plan());
    drive(&mut m, vec![(0, Event::Begin), (10, Event::Started)]);
    let fx = drive(&mut m, (0..10).map(|i| (20 + i, refused())).collect());
    assert!(
        finish_of(&fx).is_none(),
        "only the deadline fails a release that is still starting"
    );
    assert_eq!(m.phase(), Phase::WaitHealthy);
}

#[test]
fn a_passing_round_resets_the_unhealthy_streak() {
    let mut m = Machine::new(deploy_plan());
    drive(&mut m, vec![(0, Event::Begin), (10, Event::Started)]);
    let fx = drive(
        &mut m,
        vec![
            (20, unhealthy()),
            (30, unhealthy()),
            (40, healthy()),
            (50, unhealthy()),
            (60, unhealthy()),
        ],
    );
    assert!(finish_of(&fx).is_none());
}

#[test]
fn error_rate_trigger_fires_only_above_the_threshold_for_the_duration_with_enough_requests() {
    // (description, cumulative (requests, errors) per 1s sample, expect rollback)
    type Case = (&'static str, &'static [(u64, u64)], bool);
    let cases: [Case; 6] = [
        (
            "exactly at 5% never fires",
            &[(0, 0), (100, 5), (200, 10), (300, 15), (400, 20)],
            false,
        ),
        (
            "just above 5% for 2s fires",
            &[(0, 0), (100, 6), (200, 12), (300, 18)],
            true,
        ),
        (
            "above 5% for only 1s does not fire",
            &[(0, 0), (100, 6), (200, 12)],
            false,
        ),
        (
            "a clean second resets the streak",
            &[(0, 0), (100, 6), (200, 6), (300, 12), (400, 12)],
            false,
        ),
        (
            "below min_requests never fires",
            &[(0, 0), (5, 5), (10, 10), (15, 15), (19, 19)],
            false,
        ),
        (
            "at min_requests it fires",
            &[(0, 0), (20, 20), (40, 40), (60, 60)],
            true,
        ),
    ];
    for (name, samples, expect) in cases {
        let mut m = watching();
        let mut fx = Vec::new();
        for (i, (req, err)) in samples.iter().enumerate() {
            fx.extend(m.step(1_000 * (i as u64 + 1), sample(*req, *err)));
        }
        let rolled = fx.iter().any(|e| {
            matches!(
                e,
                Effect::Route {
                    live: Some(Slot::Blue),
                    ..
                }
            )
        });
        assert_eq!(rolled, expect, "{name}");
        if expect {
            assert_eq!(m.phase(), Phase::SwitchBack, "{name}");
            let fx = m.step(10_000, Event::Routed);
            let (outcome, reason) = finish_of(&fx).unwrap();
            assert_eq!(outcome, DeploymentOutcome::RolledBack, "{name}");
            assert!(reason.starts_with("error rate"), "{name}: {reason}");
            assert!(fx.contains(&Effect::Stop { slot: Slot::Green }), "{name}");
            assert!(fx.contains(&Effect::SlotState {
                slot: Slot::Blue,
                state: SlotState::Live,
                until_after: None
            }));
        }
    }
}

#[test]
fn p95_latency_trigger_fires_when_the_window_p95_stays_above_the_limit() {
    for (latency_us, expect) in [(500_000, false), (750_000, true), (250_000, false)] {
        let mut m = watching();
        let mut fx = Vec::new();
        for i in 0..4u64 {
            let stats = snap(100 * i, 0, latency_us);
            fx.extend(m.step(
                1_000 * (i + 1),
                Event::Sample {
                    stats: Box::new(stats),
                    exited: None,
                },
            ));
        }
        let rolled = finish_of(&fx).is_some() || m.phase() == Phase::SwitchBack;
        assert_eq!(rolled, expect, "latency {latency_us}us");
        if expect {
            let reason = m.back_reason.clone().unwrap().1;
            assert!(reason.starts_with("p95 latency 750ms > 500ms"), "{reason}");
        }
    }
}

#[test]
fn health_failures_during_the_watch_roll_back_after_the_configured_count() {
    let mut m = watching();
    let fx = drive(&mut m, vec![(1_000, unhealthy()), (2_000, unhealthy())]);
    assert!(!moves_live_away_from(&fx, Some(Slot::Green)));
    let fx = m.step(3_000, unhealthy());
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    assert_eq!(
        m.back_reason.as_ref().unwrap().0,
        DeploymentOutcome::RolledBack
    );
}

#[test]
fn the_new_release_exiting_during_the_watch_rolls_back_at_once() {
    let mut m = watching();
    let fx = m.step(
        1_000,
        Event::Sample {
            stats: Box::new(snap(10, 0, 1000)),
            exited: Some("signal: 9".into()),
        },
    );
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    let fx = m.step(1_010, Event::Routed);
    let (outcome, reason) = finish_of(&fx).unwrap();
    assert_eq!(outcome, DeploymentOutcome::RolledBack);
    assert!(reason.contains("exited: signal: 9"));
}

#[test]
fn manual_rollback_and_abort_during_the_watch_switch_back() {
    for (event, outcome) in [
        (
            Event::Rollback { by: "alice".into() },
            DeploymentOutcome::RolledBack,
        ),
        (
            Event::Abort { by: "alice".into() },
            DeploymentOutcome::Aborted,
        ),
    ] {
        let mut m = watching();
        let fx = m.step(1_000, event);
        assert!(fx.contains(&Effect::Route {
            live: Some(Slot::Blue),
            preview: Some(Slot::Green),
            switched: false
        }));
        let fx = m.step(1_001, Event::Routed);
        let (got, reason) = finish_of(&fx).unwrap();
        assert_eq!(got, outcome);
        assert!(reason.contains("alice"));
    }
}

#[test]
fn an_abort_that_arrives_while_the_switch_is_in_flight_switches_back_after_it() {
    let mut m = Machine::new(deploy_plan());
    drive(
        &mut m,
        vec![
            (0, Event::Begin),
            (10, Event::Started),
            (20, healthy()),
            (30, healthy()),
        ],
    );
    m.step(
        40,
        Event::Smoke {
            passed: true,
            failure: None,
        },
    );
    assert_eq!(m.phase(), Phase::Switch);
    assert!(m.step(41, Event::Abort { by: "ops".into() }).is_empty());
    let fx = m.step(42, Event::Routed);
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: false
    }));
    let fx = m.step(43, Event::Routed);
    assert_eq!(finish_of(&fx).unwrap().0, DeploymentOutcome::Aborted);
}

#[test]
fn stale_timers_and_late_results_are_ignored() {
    let mut m = Machine::new(deploy_plan());
    drive(&mut m, vec![(0, Event::Begin), (10, Event::Started)]);
    let old_deadline = timer(&m, TimerKind::HealthDeadline);
    drive(
        &mut m,
        vec![
            (20, healthy()),
            (30, healthy()),
            (
                40,
                Event::Smoke {
                    passed: true,
                    failure: None,
                },
            ),
            (50, Event::Routed),
        ],
    );
    assert_eq!(m.phase(), Phase::Watch);
    assert!(
        m.step(30_000, old_deadline).is_empty(),
        "a deadline from wait_healthy means nothing in watch"
    );
    assert!(m
        .step(
            30_001,
            Event::Smoke {
                passed: false,
                failure: None
            }
        )
        .is_empty());
    assert_eq!(m.phase(), Phase::Watch);
}

#[test]
fn a_start_that_completes_after_an_abort_is_stopped() {
    let mut m = Machine::new(deploy_plan());
    drive(
        &mut m,
        vec![(0, Event::Begin), (5, Event::Abort { by: "ops".into() })],
    );
    assert_eq!(m.outcome(), Some(DeploymentOutcome::Aborted));
    assert_eq!(
        m.step(10, Event::Started),
        vec![Effect::Stop { slot: Slot::Green }]
    );
}

#[test]
fn failing_to_switch_back_finishes_failed_and_says_where_traffic_is() {
    let mut m = watching();
    m.step(1_000, Event::Rollback { by: "ops".into() });
    let fx = m.step(1_001, Event::RouteFailed("unreachable".into()));
    let (outcome, reason) = finish_of(&fx).unwrap();
    assert_eq!(outcome, DeploymentOutcome::Failed);
    assert!(reason.contains("traffic stays on green"), "{reason}");
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Stop { .. })),
        "the serving slot must not be stopped"
    );
}

#[test]
fn a_first_deploy_that_trips_a_trigger_keeps_serving_because_there_is_nothing_to_return_to() {
    let mut plan = deploy_plan();
    plan.from = None;
    plan.target = Slot::Blue;
    let mut m = Machine::new(plan);
    drive(
        &mut m,
        vec![
            (0, Event::Begin),
            (10, Event::Started),
            (20, healthy()),
            (30, healthy()),
        ],
    );
    drive(
        &mut m,
        vec![
            (
                40,
                Event::Smoke {
                    passed: true,
                    failure: None,
                },
            ),
            (50, Event::Routed),
        ],
    );
    let fx = m.step(60, Event::Rollback { by: "ops".into() });
    let (outcome, reason) = finish_of(&fx).unwrap();
    assert_eq!(outcome, DeploymentOutcome::Failed);
    assert!(reason.contains("no previous release"));
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::Route { .. } | Effect::Stop { .. })));
}

#[test]
fn a_rollback_to_a_warm_standby_skips_the_start_and_keeps_the_release_it_leaves_warm() {
    let plan = Plan {
        kind: DeploymentKind::Rollback,
        target: Slot::Blue,
        from: Some(Slot::Green),
        target_running: true,
        run_smoke: false,
        watch: None,
        warm_for: Duration::from_secs(60),
        ..deploy_plan()
    };
    let mut m = Machine::new(plan);
    let fx = m.step(0, Event::Begin);
    assert!(!fx.contains(&Effect::StartTarget));
    assert_eq!(m.phase(), Phase::WaitHealthy);
    drive(&mut m, vec![(10, healthy())]);
    let fx = m.step(20, healthy());
    assert!(fx.contains(&Effect::Route {
        live: Some(Slot::Blue),
        preview: Some(Slot::Green),
        switched: true
    }));
    let fx = m.step(30, Event::Routed);
    assert_eq!(finish_of(&fx).unwrap().0, DeploymentOutcome::Succeeded);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Stop { .. })));
    assert!(fx.contains(&Effect::SlotState {
        slot: Slot::Green,
        state: SlotState::Standby,
        until_after: Some(Duration::from_secs(60)),
    }));
}

#[test]
fn a_rollback_to_a_stopped_release_restarts_and_checks_it_first() {
    let plan = Plan {
        kind: DeploymentKind::Rollback,
        target: Slot::Blue,
        from: Some(Slot::Green),
        target_running: false,
        run_smoke: false,
        watch: None,
        ..deploy_plan()
    };
    let mut m = Machine::new(plan);
    assert!(m.step(0, Event::Begin).contains(&Effect::StartTarget));
    let fx = drive(
        &mut m,
        vec![
            (10, Event::Started),
            (20, unhealthy()),
            (30, unhealthy()),
            (40, unhealthy()),
        ],
    );
    assert_eq!(finish_of(&fx).unwrap().0, DeploymentOutcome::Failed);
    assert!(
        !moves_live_away_from(&fx, Some(Slot::Green)),
        "traffic stays on the current release"
    );
}

#[test]
fn the_watch_passes_when_its_time_is_up_without_a_trigger() {
    let mut m = watching();
    let mut fx = Vec::new();
    for i in 1..=5u64 {
        fx.extend(m.step(1_000 * i, sample(100 * i, i)));
    }
    assert!(finish_of(&fx).is_none());
    let fx = m.step(30_050, timer(&m, TimerKind::WatchEnd));
    assert_eq!(finish_of(&fx).unwrap().0, DeploymentOutcome::Succeeded);
}

#[test]
fn a_store_failure_before_the_switch_fails_the_deployment_and_never_moves_traffic() {
    let mut m = Machine::new(deploy_plan());
    let fx = drive(
        &mut m,
        vec![
            (0, Event::Begin),
            (10, Event::Started),
            (20, healthy()),
            (
                25,
                Event::StoreFailed("cannot record a check result: disk full".into()),
            ),
        ],
    );
    assert!(!moves_live_away_from(&fx, Some(Slot::Blue)), "{fx:?}");
    assert!(fx.contains(&Effect::Stop { slot: Slot::Green }));
    let (outcome, reason) = finish_of(&fx).expect("finished");
    assert_eq!(outcome, DeploymentOutcome::Failed);
    assert!(
        reason.starts_with("the store failed (cannot record a check result: disk full)"),
        "{reason}"
    );
    // A second failure, and anything later, changes nothing.
    assert!(m.step(30, Event::StoreFailed("again".into())).is_empty());
}

#[test]
fn a_store_failure_during_the_watch_switches_back_and_ends_failed() {
    let mut m = watching();
    let fx = m.step(
        60,
        Event::StoreFailed("cannot record a watch sample: x".into()),
    );
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::Route {
                live: Some(Slot::Blue),
                ..
            }
        )),
        "traffic goes back to the slot the store knows as live: {fx:?}"
    );
    assert_eq!(m.phase(), Phase::SwitchBack);
    // Failing again while switching back does not interrupt it.
    assert!(m.step(61, Event::StoreFailed("y".into())).is_empty());
    let fx = m.step(70, Event::Routed);
    let (outcome, reason) = finish_of(&fx).expect("finished");
    assert_eq!(outcome, DeploymentOutcome::Failed);
    assert!(reason.contains("cannot record a watch sample"), "{reason}");
}

#[test]
fn a_store_failure_during_the_switch_goes_back_once_the_switch_is_confirmed() {
    let mut m = Machine::new(deploy_plan());
    drive(
        &mut m,
        vec![
            (0, Event::Begin),
            (10, Event::Started),
            (20, healthy()),
            (30, healthy()),
            (
                40,
                Event::Smoke {
                    passed: true,
                    failure: None,
                },
            ),
        ],
    );
    assert_eq!(m.phase(), Phase::Switch);
    assert!(m.step(45, Event::StoreFailed("z".into())).is_empty());
    let fx = m.step(50, Event::Routed);
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::Route {
                live: Some(Slot::Blue),
                ..
            }
        )),
        "{fx:?}"
    );
    let fx = m.step(60, Event::Routed);
    assert_eq!(finish_of(&fx).map(|f| f.0), Some(DeploymentOutcome::Failed));
}
