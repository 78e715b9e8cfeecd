//! Tests of `sqlite.rs`.
use std::sync::{Arc, Barrier};

use super::*;

fn deploy(service: &str, version: &str, at: UnixMillis) -> NewDeployment {
    NewDeployment {
        service: service.to_string(),
        kind: DeploymentKind::Deploy,
        version: version.to_string(),
        target_slot: Slot::Green,
        from_slot: Some(Slot::Blue),
        from_version: Some("v1".to_string()),
        triggered_by: "test".to_string(),
        at,
    }
}

fn finish(id: i64, outcome: DeploymentOutcome, at: UnixMillis) -> Transition {
    Transition {
        deployment_id: id,
        at,
        finish: Some((outcome, format!("{outcome} for the test"))),
        ..Transition::default()
    }
}

fn running(slot: Slot, version: &str) -> SlotRecord {
    SlotRecord {
        slot,
        state: SlotState::Live,
        version: Some(version.to_string()),
        addr: Some("127.0.0.1:4001".to_string()),
        handle: Some("pid:4242".to_string()),
        identity: Some(format!("web-{slot}")),
        standby_until: None,
        updated_at: 0,
    }
}

fn row_count(store: &Store, table: &str) -> i64 {
    store
        .lock()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

#[test]
fn the_schema_version_is_set_and_reopening_the_file_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.db");
    let id = {
        let store = Store::open(&path).unwrap();
        store.ensure_services(&["web"]).unwrap();
        store.begin_deployment(&deploy("web", "v2", 10)).unwrap()
    };
    let store = Store::open(&path).unwrap();
    let conn = store.lock();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::latest_version());
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: bool = conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .unwrap();
    assert!(fk);
    drop(conn);
    let active = store.active_deployment("web").unwrap().unwrap();
    assert_eq!((active.id, active.version.as_str()), (id, "v2"));
    assert_eq!(store.service("web").unwrap().slots[1].slot, Slot::Green);
}

#[test]
fn a_store_written_by_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    let newer = schema::latest_version() + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = Store::open(&path).err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, .. } if found == newer),
        "{err:?}"
    );
}

#[test]
fn an_unopenable_path_is_an_open_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("cutover.db");
    let err = Store::open(&path).err().unwrap();
    match err {
        StoreError::Open { path: shown, .. } => assert!(shown.contains("no-such-dir")),
        other => panic!("expected Open, got {other:?}"),
    }
}

#[test]
fn ensure_services_creates_both_empty_slots_and_keeps_existing_rows() {
    let store = Store::open_in_memory().unwrap();
    store.ensure_services(&["web", "api"]).unwrap();
    store
        .update_slot(
            "web",
            &running(Slot::Blue, "v1"),
            Some(Some(Slot::Blue)),
            None,
            5,
        )
        .unwrap();
    store.ensure_services(&["web", "worker"]).unwrap();

    let names: Vec<String> = store
        .services()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api", "web", "worker"]);
    let api = store.service("api").unwrap();
    assert_eq!(api.live, None);
    assert_eq!(
        api.slots.each_ref().map(|s| (s.slot, s.state)),
        [
            (Slot::Blue, SlotState::Empty),
            (Slot::Green, SlotState::Empty)
        ]
    );
    let web = store.service("web").unwrap();
    assert_eq!(web.live, Some(Slot::Blue));
    assert_eq!(web.slots[0].version.as_deref(), Some("v1"));
    let err = store.service("nope").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(what) if what == "service `nope`"),
        "{err:?}"
    );
}

#[test]
fn update_slot_writes_the_slot_the_live_slot_and_an_event_without_a_deployment() {
    let store = Store::open_in_memory().unwrap();
    store.ensure_services(&["web"]).unwrap();
    let standby = SlotRecord {
        state: SlotState::Standby,
        standby_until: Some(900),
        ..running(Slot::Green, "v3")
    };
    store
        .update_slot(
            "web",
            &standby,
            Some(Some(Slot::Blue)),
            Some(("adopted", "green v3")),
            77,
        )
        .unwrap();
    let web = store.service("web").unwrap();
    assert_eq!(web.live, Some(Slot::Blue));
    assert_eq!(
        web.slots[1],
        SlotRecord {
            updated_at: 77,
            ..standby
        }
    );
    let events = store.events("web", 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].kind.as_str(),
            events[0].message.as_str(),
            events[0].deployment_id,
            events[0].at
        ),
        ("adopted", "green v3", None, 77)
    );
}

#[test]
fn begin_deployment_creates_the_service_the_lock_phase_and_a_started_event() {
    let store = Store::open_in_memory().unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 100)).unwrap();
    let d = store.deployment(id).unwrap();
    assert_eq!(d.phase, "lock");
    assert_eq!(d.outcome, None);
    assert_eq!(
        d.phases,
        [PhaseRecord {
            phase: "lock".into(),
            started_at: 100,
            ended_at: None,
            result: None
        }]
    );
    assert_eq!(store.service("web").unwrap().live, None);
    let events = store.events("web", 10).unwrap();
    assert_eq!(events[0].kind, "deploy_started");
    assert_eq!(events[0].deployment_id, Some(id));
    assert_eq!(
        events[0].message,
        "deploying v2 into green (replacing v1 in blue)"
    );

    store
        .apply(&finish(id, DeploymentOutcome::Succeeded, 101))
        .unwrap();
    let back = NewDeployment {
        kind: DeploymentKind::Rollback,
        version: "v1".into(),
        target_slot: Slot::Blue,
        from_slot: Some(Slot::Green),
        from_version: Some("v2".into()),
        ..deploy("web", "v1", 102)
    };
    store.begin_deployment(&back).unwrap();
    let events = store.events("web", 1).unwrap();
    assert_eq!(events[0].kind, "rollback_started");
    assert_eq!(
        events[0].message,
        "rolling back to v1 in blue (from v2 in green)"
    );
}

#[test]
fn a_second_deployment_of_a_service_is_refused_naming_the_first_while_another_service_can_begin() {
    let store = Store::open_in_memory().unwrap();
    let first = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    let err = store.begin_deployment(&deploy("web", "v3", 2)).unwrap_err();
    assert!(
        matches!(&err, StoreError::DeploymentInProgress { service, id } if service == "web" && *id == first),
        "{err:?}"
    );
    let other = store.begin_deployment(&deploy("api", "v9", 3)).unwrap();
    assert_ne!(other, first);
    assert_eq!(row_count(&store, "deployments"), 2);
    let active: Vec<i64> = store
        .active_deployments()
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(active, [first, other]);
}

#[test]
fn after_a_deployment_finishes_a_new_one_can_begin() {
    let store = Store::open_in_memory().unwrap();
    let first = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    store
        .apply(&finish(first, DeploymentOutcome::Failed, 2))
        .unwrap();
    assert_eq!(store.active_deployment("web").unwrap(), None);
    let second = store.begin_deployment(&deploy("web", "v3", 3)).unwrap();
    assert_eq!(store.active_deployment("web").unwrap().unwrap().id, second);
}

#[test]
fn apply_writes_phases_slots_live_slot_switch_finish_and_event_together() {
    let store = Store::open_in_memory().unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 100)).unwrap();
    store
        .apply(&Transition {
            deployment_id: id,
            at: 110,
            enter_phase: Some("start".into()),
            slots: vec![SlotRecord {
                state: SlotState::Starting,
                ..running(Slot::Green, "v2")
            }],
            ..Transition::default()
        })
        .unwrap();
    store
        .record_check(
            id,
            &CheckRecord {
                phase: "wait_healthy".into(),
                name: "http /health".into(),
                ok: false,
                detail: "503".into(),
                duration_ms: 12,
                at: 115,
            },
        )
        .unwrap();
    store
        .record_check(
            id,
            &CheckRecord {
                phase: "wait_healthy".into(),
                name: "http /health".into(),
                ok: true,
                detail: "200".into(),
                duration_ms: 3,
                at: 118,
            },
        )
        .unwrap();
    let standby = SlotRecord {
        state: SlotState::Standby,
        standby_until: Some(5_000),
        ..running(Slot::Blue, "v1")
    };
    store
        .apply(&Transition {
            deployment_id: id,
            at: 120,
            enter_phase: Some("switch".into()),
            slots: vec![running(Slot::Green, "v2"), standby.clone()],
            live: Some(Some(Slot::Green)),
            switched_at: Some(120),
            event: Some(("switched".into(), "traffic on green".into())),
            ..Transition::default()
        })
        .unwrap();
    store
        .apply(&Transition {
            phase_result: Some("watch passed".into()),
            event: Some(("deploy_succeeded".into(), "v2 is live".into())),
            ..finish(id, DeploymentOutcome::Succeeded, 130)
        })
        .unwrap();

    let d = store.deployment(id).unwrap();
    assert_eq!(d.phase, "switch");
    assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded));
    assert_eq!(d.reason.as_deref(), Some("succeeded for the test"));
    assert_eq!((d.switched_at, d.finished_at), (Some(120), Some(130)));
    let phases: Vec<_> = d
        .phases
        .iter()
        .map(|p| {
            (
                p.phase.as_str(),
                p.started_at,
                p.ended_at,
                p.result.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("lock", 100, Some(110), Some("ok")),
            ("start", 110, Some(120), Some("ok")),
            ("switch", 120, Some(130), Some("watch passed")),
        ]
    );
    let checks: Vec<_> = d
        .checks
        .iter()
        .map(|c| (c.ok, c.detail.as_str(), c.duration_ms))
        .collect();
    assert_eq!(checks, [(false, "503", 12), (true, "200", 3)]);

    let web = store.service("web").unwrap();
    assert_eq!(web.live, Some(Slot::Green));
    assert_eq!(
        web.slots,
        [
            SlotRecord {
                updated_at: 120,
                ..standby
            },
            SlotRecord {
                updated_at: 120,
                ..running(Slot::Green, "v2")
            }
        ]
    );
    let kinds: Vec<_> = store
        .events("web", 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.deployment_id))
        .collect();
    assert_eq!(
        kinds,
        [
            ("deploy_succeeded".to_string(), Some(id)),
            ("phase".to_string(), Some(id)),
            ("switched".to_string(), Some(id)),
            ("check".to_string(), Some(id)),
            ("check".to_string(), Some(id)),
            ("phase".to_string(), Some(id)),
            ("deploy_started".to_string(), Some(id)),
        ]
    );
}

#[test]
fn entering_a_phase_and_finishing_at_once_closes_both_phases() {
    let store = Store::open_in_memory().unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    store
        .apply(&Transition {
            enter_phase: Some("abort".into()),
            phase_result: Some("aborted by alice".into()),
            ..finish(id, DeploymentOutcome::Aborted, 2)
        })
        .unwrap();
    let d = store.deployment(id).unwrap();
    let results: Vec<_> = d
        .phases
        .iter()
        .map(|p| (p.phase.as_str(), p.result.as_deref(), p.ended_at))
        .collect();
    assert_eq!(
        results,
        [
            ("lock", Some("aborted by alice"), Some(2)),
            ("abort", Some("aborted"), Some(2))
        ]
    );
}

#[test]
fn apply_on_an_unknown_deployment_is_not_found_and_changes_nothing() {
    let store = Store::open_in_memory().unwrap();
    store.ensure_services(&["web"]).unwrap();
    let before = store.service("web").unwrap();
    let err = store
        .apply(&Transition {
            slots: vec![running(Slot::Blue, "v1")],
            live: Some(Some(Slot::Blue)),
            event: Some(("x".into(), "y".into())),
            ..finish(42, DeploymentOutcome::Succeeded, 5)
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(what) if what == "deployment #42"),
        "{err:?}"
    );
    assert_eq!(store.service("web").unwrap(), before);
    assert_eq!(row_count(&store, "events"), 0);
    assert!(matches!(store.deployment(42), Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.record_check(
            42,
            &CheckRecord {
                phase: "smoke".into(),
                name: "n".into(),
                ok: true,
                detail: String::new(),
                duration_ms: 0,
                at: 0
            }
        ),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.append_event("web", Some(42), "k", "m", None, 0),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_transition_that_fails_at_its_last_statement_leaves_no_trace() {
    let store = Store::open_in_memory().unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    let before = (store.deployment(id).unwrap(), store.service("web").unwrap());
    // Make the event insert, the last statement of `apply`, fail.
    store
        .lock()
        .execute_batch(
            "CREATE TRIGGER no_events BEFORE INSERT ON events
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
        )
        .unwrap();
    let err = store
        .apply(&Transition {
            deployment_id: id,
            at: 9,
            enter_phase: Some("switch".into()),
            slots: vec![running(Slot::Green, "v2")],
            live: Some(Some(Slot::Green)),
            switched_at: Some(9),
            finish: Some((DeploymentOutcome::Succeeded, "done".into())),
            event: Some(("switched".into(), "traffic on green".into())),
            ..Transition::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    assert_eq!(
        (store.deployment(id).unwrap(), store.service("web").unwrap()),
        before
    );
}

#[test]
fn a_finished_deployment_cannot_change_phase_or_finish_again() {
    let store = Store::open_in_memory().unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    store
        .apply(&finish(id, DeploymentOutcome::RolledBack, 2))
        .unwrap();
    let err = store
        .apply(&finish(id, DeploymentOutcome::Succeeded, 3))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyFinished { id: i, outcome: DeploymentOutcome::RolledBack } if i == id),
        "{err:?}"
    );
    let d = store.deployment(id).unwrap();
    assert_eq!(
        (d.outcome, d.finished_at),
        (Some(DeploymentOutcome::RolledBack), Some(2))
    );
}

#[test]
fn history_is_newest_first_and_limited_to_the_service() {
    let store = Store::open_in_memory().unwrap();
    let mut ids = Vec::new();
    for (n, version) in ["v1", "v2", "v3", "v4"].into_iter().enumerate() {
        let id = store
            .begin_deployment(&deploy("web", version, n as i64))
            .unwrap();
        store
            .apply(&finish(id, DeploymentOutcome::Succeeded, n as i64))
            .unwrap();
        ids.push(id);
        store
            .begin_deployment(&deploy(&format!("other{n}"), version, 0))
            .unwrap();
    }
    let versions: Vec<_> = store
        .history("web", 3)
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.version))
        .collect();
    assert_eq!(
        versions,
        [
            (ids[3], "v4".to_string()),
            (ids[2], "v3".to_string()),
            (ids[1], "v2".to_string())
        ]
    );
    assert_eq!(store.history("web", 100).unwrap().len(), 4);
    assert!(store.history("web", 0).unwrap().is_empty());
    assert_eq!(store.history("web", 1).unwrap()[0].phases.len(), 1);
}

#[test]
fn events_are_newest_first_limited_and_per_service() {
    let store = Store::open_in_memory().unwrap();
    for n in 0..5 {
        store
            .append_event("web", None, "note", &format!("web {n}"), None, n)
            .unwrap();
        store
            .append_event("api", None, "note", &format!("api {n}"), None, n)
            .unwrap();
    }
    let messages: Vec<_> = store
        .events("web", 2)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(messages, ["web 4", "web 3"]);
}

#[test]
fn outcome_counts_group_finished_deployments_by_service_and_outcome() {
    let store = Store::open_in_memory().unwrap();
    let runs = [
        ("web", Some(DeploymentOutcome::Succeeded)),
        ("web", Some(DeploymentOutcome::Succeeded)),
        ("web", Some(DeploymentOutcome::RolledBack)),
        ("api", Some(DeploymentOutcome::Failed)),
        ("api", None),
    ];
    for (n, (service, outcome)) in runs.into_iter().enumerate() {
        let id = store
            .begin_deployment(&deploy(service, "v", n as i64))
            .unwrap();
        if let Some(outcome) = outcome {
            store.apply(&finish(id, outcome, n as i64)).unwrap();
        }
    }
    let counts: Vec<_> = store
        .outcome_counts()
        .unwrap()
        .into_iter()
        .map(|c| (c.service, c.outcome, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("api".to_string(), DeploymentOutcome::Failed, 1),
            ("web".to_string(), DeploymentOutcome::RolledBack, 1),
            ("web".to_string(), DeploymentOutcome::Succeeded, 2),
        ]
    );
}

#[test]
fn an_unknown_stored_name_is_a_read_error_not_a_panic() {
    let store = Store::open_in_memory().unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    store
        .lock()
        .execute_batch(
            "UPDATE slots SET state = 'exploded' WHERE slot = 'green';
             UPDATE deployments SET outcome = 'meh';",
        )
        .unwrap();
    assert!(matches!(store.service("web"), Err(StoreError::Sqlite(_))));
    assert!(matches!(store.deployment(id), Err(StoreError::Sqlite(_))));
    assert!(matches!(store.outcome_counts(), Err(StoreError::Sqlite(_))));
}

#[test]
fn concurrent_begins_from_two_handles_on_one_file_yield_exactly_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.db");
    let stores = [Store::open(&path).unwrap(), Store::open(&path).unwrap()];
    let barrier = Arc::new(Barrier::new(stores.len()));
    let results: Vec<Result<i64, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    store.begin_deployment(&deploy("web", &format!("v{n}"), n as i64))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        matches!(loser, StoreError::DeploymentInProgress { id, .. } if *id == winners[0]),
        "{loser:?}"
    );
    assert_eq!(stores[1].active_deployments().unwrap().len(), 1);
}

#[test]
fn two_processes_opening_a_fresh_file_at_once_both_get_a_migrated_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let barrier = Barrier::new(2);
    let opened: Vec<Result<Store, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    Store::open(&path)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in opened {
        let store = store.unwrap();
        store.ensure_services(&["web"]).unwrap();
        assert_eq!(store.services().unwrap().len(), 1);
    }
}

fn measurement(
    phase: &str,
    metric: &str,
    value: Option<f64>,
    verdict: &str,
    at: UnixMillis,
) -> MeasurementRecord {
    MeasurementRecord {
        phase: phase.to_string(),
        metric: metric.to_string(),
        value,
        verdict: verdict.to_string(),
        detail: format!("{metric} {verdict}"),
        at,
    }
}

#[test]
fn measurements_are_stored_with_the_deployment_and_loaded_in_order() {
    let store = Store::open_in_memory().unwrap();
    store.ensure_services(&["web"]).unwrap();
    let id = store.begin_deployment(&deploy("web", "v2", 10)).unwrap();
    let recorded = vec![
        measurement("step 1 (10%)", "error-rate", Some(0.01), "pass", 20),
        measurement("step 1 (10%)", "gate", None, "fail", 21),
        measurement("watch", "p95", Some(f64::NAN), "error", 30),
    ];
    for m in &recorded {
        store.record_measurement(id, m).unwrap();
    }
    let loaded = store.deployment(id).unwrap().measurements;
    assert_eq!(loaded[..2], recorded[..2]);
    assert_eq!(loaded[2].value, None, "a NaN is stored as no value");
    assert_eq!(loaded[2].metric, "p95");
    let in_history = &store.history("web", 10).unwrap()[0];
    assert_eq!(in_history.measurements.len(), 3);
    assert!(matches!(
        store.record_measurement(id + 100, &recorded[0]),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_version_1_database_is_migrated_on_open_and_keeps_its_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(super::schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO services (name, live_slot, updated_at) VALUES ('web', 'blue', 1);
             INSERT INTO deployments (service, kind, version, target_slot, phase, outcome,
                 triggered_by, started_at, finished_at)
             VALUES ('web', 'deploy', 'v1', 'blue', 'done', 'succeeded', 'test', 1, 2);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let version: i64 = store
        .lock()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, super::schema::latest_version());
    let old = &store.history("web", 10).unwrap()[0];
    assert_eq!(old.version, "v1");
    assert!(old.measurements.is_empty());
    store
        .record_measurement(old.id, &measurement("watch", "p95", Some(0.2), "pass", 3))
        .unwrap();
    assert_eq!(store.deployment(old.id).unwrap().measurements.len(), 1);
}

#[test]
fn a_slot_endpoint_given_by_host_name_and_its_identity_are_stored_and_read_back() {
    let store = Store::open_in_memory().unwrap();
    store.ensure_services(&["web"]).unwrap();
    let mut rec = running(Slot::Blue, "v1");
    let endpoint: crate::domain::endpoint::Endpoint =
        "web-blue.prod.svc.cluster.local:8080".parse().unwrap();
    rec.set_running(&endpoint, "deploy/web-blue", "cutover-web-blue");
    store.update_slot("web", &rec, None, None, 5).unwrap();
    let back = &store.service("web").unwrap().slots[0];
    assert_eq!(
        back,
        &SlotRecord {
            updated_at: 5,
            ..rec
        }
    );
    assert_eq!(back.endpoint(), Some(endpoint.clone()));
    let target = back.target("web").unwrap();
    assert_eq!(
        (target.slot, target.endpoint, target.identity.as_str()),
        (Slot::Blue, endpoint, "cutover-web-blue")
    );

    let mut stopped = back.clone();
    stopped.clear_running();
    store.update_slot("web", &stopped, None, None, 6).unwrap();
    let back = &store.service("web").unwrap().slots[0];
    assert_eq!(
        (&back.addr, &back.handle, &back.identity),
        (&None, &None, &None)
    );
    assert_eq!(back.version.as_deref(), Some("v1"), "the version stays");
}

#[test]
fn a_version_3_slot_row_without_identity_reads_back_with_the_default_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for m in &super::schema::MIGRATIONS[..3] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO services (name, live_slot, updated_at) VALUES ('web', 'blue', 1);
             INSERT INTO slots (service, slot, state, version, addr, handle, updated_at)
             VALUES ('web', 'blue', 'live', 'v1', '127.0.0.1:4001', '4242:99', 1),
                    ('web', 'green', 'stopped', 'v0', NULL, NULL, 1);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let web = store.service("web").unwrap();
    let blue = &web.slots[0];
    assert_eq!(blue.addr.as_deref(), Some("127.0.0.1:4001"), "unchanged");
    assert_eq!(blue.identity.as_deref(), Some("web-blue"));
    assert_eq!(
        blue.endpoint(),
        Some("127.0.0.1:4001".parse().unwrap()),
        "an old address is an endpoint"
    );
    assert_eq!(web.slots[1].identity, None, "a stopped slot has none");
}

#[test]
fn previous_release_is_where_the_newest_succeeded_deployment_into_the_live_slot_came_from() {
    let store = Store::open_in_memory().unwrap();
    let run = |version: &str, target: Slot, from: Option<&str>, outcome, at| {
        let new = NewDeployment {
            target_slot: target,
            from_slot: Some(target.other()),
            from_version: from.map(str::to_string),
            ..deploy("web", version, at)
        };
        let id = store.begin_deployment(&new).unwrap();
        store.apply(&finish(id, outcome, at)).unwrap();
    };
    // v1 → blue, v2 → green, a failed v2 → green, then v1 → blue again from v2.
    run("v1", Slot::Blue, None, DeploymentOutcome::Succeeded, 1);
    run(
        "v2",
        Slot::Green,
        Some("v1"),
        DeploymentOutcome::Succeeded,
        2,
    );
    assert_eq!(
        store.previous_release("web", Slot::Green, "v2").unwrap(),
        Some("v1".to_string())
    );
    run("v2", Slot::Green, Some("v9"), DeploymentOutcome::Failed, 3);
    assert_eq!(
        store.previous_release("web", Slot::Green, "v2").unwrap(),
        Some("v1".to_string()),
        "a failed deployment of the same release into the same slot does not count"
    );
    run(
        "v1",
        Slot::Blue,
        Some("v2"),
        DeploymentOutcome::Succeeded,
        4,
    );
    assert_eq!(
        store.previous_release("web", Slot::Blue, "v1").unwrap(),
        Some("v2".to_string()),
        "the newest deployment that made blue/v1 live, not the first"
    );
    assert_eq!(
        store.previous_release("web", Slot::Green, "v9").unwrap(),
        None
    );
    assert_eq!(
        store.previous_release("other", Slot::Blue, "v1").unwrap(),
        None
    );
}

/// Everything the receiver holds now.
fn drain(rx: &mut tokio::sync::broadcast::Receiver<Arc<EventRecord>>) -> Vec<EventRecord> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(EventRecord::clone(&e));
    }
    out
}

#[test]
fn the_feed_sends_every_committed_event_once_in_id_order_as_stored() {
    let store = Store::open_in_memory().unwrap();
    let mut rx = store.subscribe();
    let id = store.begin_deployment(&deploy("web", "v2", 10)).unwrap();
    store
        .apply(&Transition {
            deployment_id: id,
            at: 11,
            enter_phase: Some("wait_healthy".into()),
            event: Some(("deployment".into(), "a log line".into())),
            ..Transition::default()
        })
        .unwrap();
    let check = CheckRecord {
        phase: "wait_healthy".into(),
        name: "http /health".into(),
        ok: true,
        detail: "200".into(),
        duration_ms: 3,
        at: 12,
    };
    store.record_check(id, &check).unwrap();
    let data = serde_json::json!({ "requests": 7 });
    store
        .append_event("web", Some(id), "watch", "7 requests", Some(&data), 13)
        .unwrap();

    let sent = drain(&mut rx);
    let kinds: Vec<&str> = sent.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["deploy_started", "deployment", "phase", "check", "watch"]
    );
    assert!(sent.windows(2).all(|w| w[0].id < w[1].id), "{sent:?}");
    assert_eq!(sent[2].message, "wait_healthy");
    assert_eq!(sent[3].data, Some(serde_json::to_value(&check).unwrap()));
    assert_eq!(sent[4].data, Some(data));
    // The feed is the log: the same rows, field for field.
    assert_eq!(
        store.events_after(&EventFilter::default(), 0, 100).unwrap(),
        sent
    );
    assert_eq!(store.last_event_id().unwrap(), sent[4].id);
    // Writes without events send nothing more.
    store.ensure_services(&["api"]).unwrap();
    assert!(drain(&mut rx).is_empty());
}

#[test]
fn a_failed_write_sends_nothing_to_the_feed() {
    let store = Store::open_in_memory().unwrap();
    let mut rx = store.subscribe();
    assert!(store
        .append_event("web", Some(42), "note", "m", None, 0)
        .is_err());
    assert!(drain(&mut rx).is_empty());
    store
        .append_event("web", None, "note", "m", None, 0)
        .unwrap();
    assert_eq!(drain(&mut rx).len(), 1);
}

#[test]
fn a_reopened_store_feeds_only_events_written_after_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.db");
    Store::open(&path)
        .unwrap()
        .append_event("web", None, "note", "old", None, 0)
        .unwrap();
    let store = Store::open(&path).unwrap();
    let mut rx = store.subscribe();
    store
        .append_event("web", None, "note", "new", None, 1)
        .unwrap();
    let sent = drain(&mut rx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message, "new");
}

#[test]
fn events_after_keeps_the_filtered_events_after_an_id_oldest_first() {
    let store = Store::open_in_memory().unwrap();
    let web = store.begin_deployment(&deploy("web", "v2", 1)).unwrap();
    let api = store.begin_deployment(&deploy("api", "v2", 2)).unwrap();
    for n in 0..3 {
        store
            .append_event("web", Some(web), "note", &format!("web {n}"), None, n)
            .unwrap();
        store
            .append_event("api", Some(api), "note", &format!("api {n}"), None, n)
            .unwrap();
        store
            .append_event("web", None, "note", &format!("web slot {n}"), None, n)
            .unwrap();
    }
    let by_deployment = EventFilter {
        deployment_id: Some(web),
        ..EventFilter::default()
    };
    let all = store.events_after(&by_deployment, 0, 100).unwrap();
    assert_eq!(all.len(), 4, "deploy_started and three notes: {all:?}");
    assert!(all.iter().all(|e| by_deployment.matches(e)));
    let after = store.events_after(&by_deployment, all[1].id, 100).unwrap();
    assert_eq!(after, all[2..]);
    assert_eq!(store.events_after(&by_deployment, 0, 2).unwrap(), all[..2]);
    let by_service = EventFilter {
        service: Some("web".into()),
        ..EventFilter::default()
    };
    let web_events = store.events_after(&by_service, 0, 100).unwrap();
    assert_eq!(web_events.len(), 7);
    assert!(web_events.iter().all(|e| e.service == "web"));
}

#[test]
fn the_store_file_is_private_and_a_removed_one_is_written_back_whole() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.db");
    let store = Store::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let id = store.begin_deployment(&deploy("web", "v2", 10)).unwrap();

    // The file goes away under the open store (its directory removed).
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(dir.path().join("cutover.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("cutover.db-shm"));
    store.relocate(&path).unwrap();
    store
        .record_check(
            id,
            &CheckRecord {
                phase: "wait_healthy".into(),
                name: "http".into(),
                ok: true,
                detail: "200".into(),
                duration_ms: 1,
                at: 11,
            },
        )
        .unwrap();
    drop(store);

    // A restart finds everything: what was written before and after.
    let reopened = Store::open(&path).unwrap();
    let d = reopened.deployment(id).unwrap();
    assert_eq!(d.version, "v2");
    assert_eq!(d.checks.len(), 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
