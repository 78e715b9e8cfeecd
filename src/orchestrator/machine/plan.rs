//! [`Plan::new`]: the one place a deployment's plan is built from its service's config.
//!
//! Why one place: a deploy and a rollback differ in a few decisions (a rollback runs no
//! smoke tests, no watch, no canary, no mirror, and only its `before_start` and
//! `on_rollback` hooks), and those decisions must not drift apart between two struct
//! literals. Pure, like the rest of the machine.

use super::Plan;
use crate::config::{HookPoint, ServiceConfig, Strategy};
use crate::domain::Slot;
use crate::store::DeploymentKind;

impl Plan {
    /// The plan for bringing `target` live, replacing `from` (`None` on a first
    /// deploy). `target_running`: the target's release already runs (a warm standby a
    /// rollback returns to) and only needs checking.
    pub fn new(
        kind: DeploymentKind,
        cfg: &ServiceConfig,
        target: Slot,
        from: Option<Slot>,
        target_running: bool,
    ) -> Plan {
        let deploy = kind == DeploymentKind::Deploy;
        Plan {
            kind,
            target,
            from,
            target_running,
            healthy_threshold: cfg.health.healthy_threshold,
            unhealthy_threshold: cfg.health.unhealthy_threshold,
            health_interval: cfg.health.interval,
            health_deadline: cfg.health.deadline,
            run_smoke: deploy && !cfg.smoke.steps.is_empty(),
            watch: deploy.then(|| cfg.watch.clone()),
            warm_for: cfg.warm_for,
            canary: match &cfg.strategy {
                Strategy::Canary(c) if deploy => c.steps.clone(),
                _ => Vec::new(),
            },
            analysis: cfg.analysis.clone().filter(|_| deploy),
            mirror: cfg.mirror.clone().filter(|_| deploy),
            hooks: hook_points(cfg, kind),
            // A rollback returns to a release that already worked with this database;
            // undoing migrations is a separate decision (`cutover db down|restore`).
            database: deploy && cfg.database.is_some(),
            database_down: cfg
                .database
                .as_ref()
                .map(|d| d.down_on_rollback)
                .unwrap_or_default(),
        }
    }
}

/// The points of `cfg` that have hooks, for a deployment of `kind`. A rollback runs
/// only `before_start` (when it must start the previous release again) and
/// `on_rollback`: the other points belong to bringing a new release live (a
/// `pre_switch` migration must not run again on the way back).
fn hook_points(cfg: &ServiceConfig, kind: DeploymentKind) -> Vec<HookPoint> {
    let mut points: Vec<HookPoint> = cfg
        .hooks
        .iter()
        .map(|h| h.at)
        .filter(|p| {
            kind == DeploymentKind::Deploy
                || matches!(p, HookPoint::BeforeStart | HookPoint::OnRollback)
        })
        .collect();
    points.sort();
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn web() -> ServiceConfig {
        let text = include_str!("../../../examples/cutover.toml");
        let config: Config = crate::config::parse(text, None).expect("the example config parses");
        config.services["web"].clone()
    }

    #[test]
    fn a_deploy_plan_takes_every_check_and_strategy_of_the_service() {
        let cfg = web();
        let p = Plan::new(
            DeploymentKind::Deploy,
            &cfg,
            Slot::Green,
            Some(Slot::Blue),
            false,
        );
        assert_eq!(
            (p.target, p.from, p.target_running),
            (Slot::Green, Some(Slot::Blue), false)
        );
        assert_eq!(p.run_smoke, !cfg.smoke.steps.is_empty());
        assert_eq!(p.watch.as_ref(), Some(&cfg.watch));
        assert_eq!(p.health_deadline, cfg.health.deadline);
        assert_eq!(p.analysis, cfg.analysis);
        assert_eq!(p.mirror, cfg.mirror);
    }

    #[test]
    fn a_rollback_plan_has_no_smoke_watch_canary_mirror_or_new_release_hooks() {
        let cfg = web();
        let p = Plan::new(
            DeploymentKind::Rollback,
            &cfg,
            Slot::Blue,
            Some(Slot::Green),
            true,
        );
        assert!(!p.run_smoke && p.watch.is_none());
        assert!(p.canary.is_empty() && p.analysis.is_none() && p.mirror.is_none());
        assert!(p
            .hooks
            .iter()
            .all(|h| matches!(h, HookPoint::BeforeStart | HookPoint::OnRollback)));
        assert_eq!(p.warm_for, cfg.warm_for);
    }
}
