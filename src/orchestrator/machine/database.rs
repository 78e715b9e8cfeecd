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
use crate::orchestrator::policy::Ms;
use crate::store::DeploymentOutcome;

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

    #[test]
    fn without_a_database_the_release_starts_at_once() {
        let mut m = Machine::new(plan(false));
        m.step(0, Event::Begin);
        assert_eq!(m.phase(), Phase::Start);
    }
}
