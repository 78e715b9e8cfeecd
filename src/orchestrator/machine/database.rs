//! The database phase: after the `before_start` hooks, before the new release starts.
//!
//! Why there: the new release usually needs the migrated schema to start, and nothing
//! of the deployment has touched the world yet. The runner does the whole phase as one
//! task (backup → lint → rehearse → prove → migrate, `runner/database.rs`); the machine
//! only hears how it ended. A failure fails the deployment with traffic untouched and
//! nothing started: the gate refuses *before* the live database is touched, and a
//! failed migration leaves the file's transaction rolled back (the backup stays for a
//! restore). An abort stops the task (its connections close, so PostgreSQL rolls the
//! running file back).
//!
//! Same rules as the rest of the machine: no I/O, no clock.

use super::{Effect, Event, Machine, Phase};
use crate::config::DownOnRollback;
use crate::orchestrator::policy::Ms;
use crate::store::{DeploymentKind, DeploymentOutcome};

impl Machine {
    /// Enters the database phase if the plan has one, else starts the target.
    pub(super) fn database_or_start(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        if self.plan.database {
            self.enter(now, Phase::Database, None, fx);
            fx.push(Effect::RunDatabase);
        } else {
            self.start_target(now, fx);
        }
    }

    pub(super) fn on_database(&mut self, now: Ms, event: Event, fx: &mut Vec<Effect>) {
        match event {
            Event::Database { failure: None } => self.start_target(now, fx),
            Event::Database { failure: Some(why) } => {
                let why = format!("database: {why}");
                self.finish(now, DeploymentOutcome::Failed, why, fx);
            }
            Event::Abort { by } => {
                let why = format!("aborted by {by} before the switch (during the database phase)");
                self.finish(now, DeploymentOutcome::Aborted, why, fx);
            }
            _ => {}
        }
    }
}

/// Traffic going back to the previous release and the database: with
/// `down_on_rollback`, once traffic is back (and the `on_rollback` hooks ran) the
/// down-migrations take the database back to its version before the deployment. Never
/// before traffic is back (the new release needs the new schema while it serves), and
/// for a watch-window trigger only with `"always"`. A failure cannot undo the traffic
/// move: it is added to the reason, and a rollback deployment ends `failed`.
impl Machine {
    fn wants_database_down(&self) -> bool {
        match self.plan.database_down {
            DownOnRollback::Never => false,
            DownOnRollback::Manual => {
                self.plan.kind == DeploymentKind::Rollback || self.back_by_person
            }
            DownOnRollback::Always => true,
        }
    }

    /// Enters the down phase if this rollback wants it; returns whether it did.
    pub(super) fn database_down_first(&mut self, now: Ms, fx: &mut Vec<Effect>) -> bool {
        let back = match self.plan.kind {
            // A deploy switched back (`back_reason` is set), not one that succeeded.
            DeploymentKind::Deploy => self.back_reason.is_some(),
            DeploymentKind::Rollback => self.back_reason.is_none(),
        };
        if !back || !self.wants_database_down() {
            return false;
        }
        self.enter(now, Phase::DatabaseDown, None, fx);
        fx.push(Effect::RunDatabaseDown);
        true
    }

    /// A deploy's traffic is back on the previous slot (and its hooks ran).
    pub(super) fn after_switched_back(&mut self, now: Ms, fx: &mut Vec<Effect>) {
        if !self.database_down_first(now, fx) {
            self.finish_switched_back(now, fx);
        }
    }

    pub(super) fn on_database_down(&mut self, now: Ms, event: Event, fx: &mut Vec<Effect>) {
        match event {
            Event::Database { failure } => {
                if let Some(why) = failure {
                    fx.push(Effect::Log(format!(
                        "database down-migrations failed: {why}"
                    )));
                    self.down_failure = Some(format!(
                        "the database was NOT taken back (down-migrations failed: {why}); see `cutover db status`"
                    ));
                }
                match self.plan.kind {
                    DeploymentKind::Deploy => self.finish_switched_back(now, fx),
                    DeploymentKind::Rollback => self.complete_success(now, fx),
                }
            }
            Event::Abort { by } | Event::Rollback { by } => fx.push(Effect::Log(format!(
                "{by} ignored: traffic is already back; the down-migrations are running"
            ))),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::domain::Slot;

    fn plan(database: bool) -> Plan {
        let text = include_str!("../../../examples/cutover.toml");
        let config = crate::config::parse(text, None).expect("the example config parses");
        let mut cfg = config.services["web"].clone();
        cfg.hooks.clear();
        let mut p = Plan::new(
            DeploymentKind::Deploy,
            &cfg,
            Slot::Green,
            Some(Slot::Blue),
            false,
        );
        p.database = database;
        p
    }

    #[test]
    fn the_database_phase_runs_before_the_new_release_starts() {
        let mut m = Machine::new(plan(true));
        let fx = m.step(0, Event::Begin);
        assert_eq!(m.phase(), Phase::Database);
        assert!(fx.contains(&Effect::RunDatabase));
        assert!(!fx.contains(&Effect::StartTarget));
        let fx = m.step(10, Event::Database { failure: None });
        assert_eq!(m.phase(), Phase::Start);
        assert!(fx.contains(&Effect::StartTarget));
    }

    #[test]
    fn a_refused_migration_fails_the_deployment_with_nothing_started_or_routed() {
        let mut m = Machine::new(plan(true));
        m.step(0, Event::Begin);
        let fx = m.step(
            10,
            Event::Database {
                failure: Some("lint: ban-drop-column".into()),
            },
        );
        assert_eq!(m.outcome(), Some(DeploymentOutcome::Failed));
        assert!(fx.iter().all(|e| !matches!(
            e,
            Effect::StartTarget | Effect::Route { .. } | Effect::Stop { .. }
        )));
        assert!(fx.contains(&Effect::Finish {
            outcome: DeploymentOutcome::Failed,
            reason: "database: lint: ban-drop-column".into()
        }));
    }

    #[test]
    fn an_abort_during_the_database_phase_stops_the_deployment() {
        let mut m = Machine::new(plan(true));
        m.step(0, Event::Begin);
        m.step(5, Event::Abort { by: "ops".into() });
        assert_eq!(m.outcome(), Some(DeploymentOutcome::Aborted));
    }

    /// A deploy of `plan(true)` with `down` driven to its watch.
    fn watching(down: DownOnRollback) -> Machine {
        let mut p = plan(true);
        p.database_down = down;
        p.hooks.clear();
        p.run_smoke = false;
        p.canary.clear();
        p.mirror = None;
        p.analysis = None;
        let mut m = Machine::new(p);
        m.step(0, Event::Begin);
        m.step(1, Event::Database { failure: None });
        m.step(2, Event::Started);
        for t in 0..m.plan.healthy_threshold {
            m.step(
                3 + t as u64,
                Event::HealthRound {
                    ok: true,
                    answered: true,
                    detail: String::new(),
                },
            );
        }
        m.step(20, Event::Routed);
        assert_eq!(m.phase(), Phase::Watch, "{m:?}");
        m
    }

    #[test]
    fn down_migrations_run_after_traffic_is_back_for_a_person_and_for_a_trigger_only_when_always() {
        let trigger = Event::Exited("exit 1".into());
        let person = Event::Rollback { by: "ops".into() };
        for (down, event, runs) in [
            (DownOnRollback::Never, person.clone(), false),
            (DownOnRollback::Manual, person.clone(), true),
            (DownOnRollback::Manual, trigger.clone(), false),
            (DownOnRollback::Always, trigger.clone(), true),
            (DownOnRollback::Always, person.clone(), true),
        ] {
            let mut m = watching(down);
            let fx = m.step(30, event.clone());
            assert_eq!(m.phase(), Phase::SwitchBack, "{down:?} {event:?}");
            assert!(!fx.contains(&Effect::RunDatabaseDown), "traffic first");
            let fx = m.step(31, Event::Routed);
            assert_eq!(
                fx.contains(&Effect::RunDatabaseDown),
                runs,
                "{down:?} {event:?}: {fx:?}"
            );
            if !runs {
                assert_eq!(m.outcome(), Some(DeploymentOutcome::RolledBack));
                continue;
            }
            assert_eq!(m.phase(), Phase::DatabaseDown);
            assert!(m
                .step(32, Event::Abort { by: "x".into() })
                .iter()
                .all(|e| matches!(e, Effect::Log(_))));
            let fx = m.step(
                33,
                Event::Database {
                    failure: Some("004_x: boom".into()),
                },
            );
            assert_eq!(m.outcome(), Some(DeploymentOutcome::RolledBack));
            assert!(fx.iter().any(|e| matches!(e, Effect::Finish { reason, .. } if reason.contains("down-migrations failed: 004_x: boom"))), "{fx:?}");
        }
    }

    #[test]
    fn a_rollback_deployment_runs_the_down_migrations_after_its_switch_with_manual() {
        let mut p = plan(false);
        p.kind = DeploymentKind::Rollback;
        p.target_running = true;
        p.watch = None;
        p.run_smoke = false;
        p.hooks.clear();
        p.canary.clear();
        p.mirror = None;
        p.analysis = None;
        p.database_down = DownOnRollback::Manual;
        let mut m = Machine::new(p);
        m.step(0, Event::Begin);
        for t in 0..m.plan.healthy_threshold {
            m.step(
                1 + t as u64,
                Event::HealthRound {
                    ok: true,
                    answered: true,
                    detail: String::new(),
                },
            );
        }
        let fx = m.step(10, Event::Routed);
        assert_eq!(m.phase(), Phase::DatabaseDown, "{fx:?}");
        assert!(fx.contains(&Effect::RunDatabaseDown));
        let fx = m.step(11, Event::Database { failure: None });
        assert_eq!(m.outcome(), Some(DeploymentOutcome::Succeeded), "{fx:?}");
    }

    #[test]
    fn without_a_database_the_release_starts_at_once() {
        let mut m = Machine::new(plan(false));
        m.step(0, Event::Begin);
        assert_eq!(m.phase(), Phase::Start);
    }
}
