//! Retention: old deployments (with their phases, checks and measurements) and old
//! events are deleted so the store does not grow forever.
//!
//! What is never deleted, whatever the policy says:
//! - a deployment in progress (no outcome yet), and every event of it;
//! - for each slot that holds a release, the newest succeeded deployment that put
//!   that release in that slot: `Store::previous_release` reads its `from_version` to
//!   know where a rollback goes, and the history shows how the live release got there.
//!
//! Everything else goes when it is older than `max_age`, or when it is not among the
//! service's newest `keep_deployments`. Events outside deployments (boot, standby
//! stopped, supervision) go by age only. One transaction per run: a reader never sees a
//! deployment without its phases.

use rusqlite::{params, Connection};

use super::{DeploymentOutcome, Store, StoreError};
use crate::domain::UnixMillis;

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Finished deployments kept per service, newest first (at least 1).
    pub keep_deployments: usize,
    /// Deployments finished and events written longer ago than this go (ms).
    pub max_age_ms: i64,
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deployments: usize,
    pub events: usize,
}

impl Store {
    /// Deletes what `policy` does not keep, as of `now`.
    pub fn prune(&self, policy: &PrunePolicy, now: UnixMillis) -> Result<Pruned, StoreError> {
        let cutoff = now.saturating_sub(policy.max_age_ms);
        let keep = policy.keep_deployments.max(1) as i64;
        self.write(|c| {
            c.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS prune_ids (id INTEGER PRIMARY KEY);
                 DELETE FROM prune_ids;",
            )?;
            // Candidates: finished, and either too old or beyond the newest `keep`.
            c.execute(
                "INSERT INTO prune_ids (id)
                 SELECT id FROM (
                     SELECT id, finished_at,
                            ROW_NUMBER() OVER (PARTITION BY service ORDER BY id DESC) AS rank
                     FROM deployments WHERE outcome IS NOT NULL
                 ) WHERE rank > ?1 OR finished_at < ?2",
                params![keep, cutoff],
            )?;
            // Never the deployment a slot's release came from (rollback needs it).
            c.execute(
                "DELETE FROM prune_ids WHERE id IN (
                     SELECT (SELECT MAX(d.id) FROM deployments d
                             WHERE d.service = s.service AND d.target_slot = s.slot
                               AND d.version = s.version AND d.outcome = ?1)
                     FROM slots s WHERE s.version IS NOT NULL)",
                params![DeploymentOutcome::Succeeded],
            )?;
            let deployments = delete_deployments(c)?;
            let events = c.execute(
                "DELETE FROM events WHERE at < ?1 AND (deployment_id IS NULL OR deployment_id IN
                     (SELECT id FROM deployments WHERE outcome IS NOT NULL))",
                params![cutoff],
            )?;
            c.execute("DELETE FROM prune_ids", [])?;
            Ok(Pruned {
                deployments,
                events,
            })
        })
    }
}

/// Deletes the deployments listed in `prune_ids` and everything that refers to them.
fn delete_deployments(c: &Connection) -> Result<usize, StoreError> {
    for table in ["events", "checks", "measurements", "phases"] {
        c.execute(
            &format!("DELETE FROM {table} WHERE deployment_id IN (SELECT id FROM prune_ids)"),
            [],
        )?;
    }
    Ok(c.execute(
        "DELETE FROM deployments WHERE id IN (SELECT id FROM prune_ids)",
        [],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Slot;
    use crate::store::{
        CheckRecord, DeploymentKind, NewDeployment, SlotRecord, SlotState, Transition,
    };

    const DAY: i64 = 86_400_000;

    /// Deploys `version` into `slot` (from the other slot's `from`), finished with
    /// `outcome` at `at`, with one check and one event; returns its id.
    fn run(
        store: &Store,
        version: &str,
        slot: Slot,
        from: Option<&str>,
        outcome: Option<DeploymentOutcome>,
        at: UnixMillis,
    ) -> i64 {
        let id = store
            .begin_deployment(&NewDeployment {
                service: "web".into(),
                kind: DeploymentKind::Deploy,
                version: version.into(),
                target_slot: slot,
                from_slot: Some(slot.other()),
                from_version: from.map(str::to_string),
                triggered_by: "test".into(),
                at,
            })
            .unwrap();
        let check = CheckRecord {
            phase: "wait_healthy".into(),
            name: "live".into(),
            ok: true,
            detail: "200".into(),
            duration_ms: 1,
            at,
        };
        store.record_check(id, &check).unwrap();
        if let Some(outcome) = outcome {
            store
                .apply(&Transition {
                    deployment_id: id,
                    at,
                    finish: Some((outcome, "test".into())),
                    ..Transition::default()
                })
                .unwrap();
        }
        id
    }

    fn live(store: &Store, slot: Slot, version: &str) {
        let rec = SlotRecord {
            state: SlotState::Live,
            version: Some(version.into()),
            ..SlotRecord::empty(slot)
        };
        store
            .update_slot("web", &rec, Some(Some(slot)), None, 0)
            .unwrap();
    }

    fn ids(store: &Store) -> Vec<i64> {
        let mut v: Vec<i64> = store
            .history("web", 1000)
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        v.sort();
        v
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store
            .read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .unwrap()
    }

    #[test]
    fn only_the_newest_deployments_are_kept_with_their_checks_and_events() {
        let store = Store::open_in_memory().unwrap();
        let all: Vec<i64> = (0..10)
            .map(|i| {
                run(
                    &store,
                    &format!("v{i}"),
                    Slot::Blue,
                    None,
                    Some(DeploymentOutcome::Failed),
                    i,
                )
            })
            .collect();
        let policy = PrunePolicy {
            keep_deployments: 3,
            max_age_ms: 365 * DAY,
        };
        let pruned = store.prune(&policy, 100).unwrap();
        assert_eq!(pruned.deployments, 7);
        assert_eq!(ids(&store), all[7..].to_vec());
        assert_eq!(
            count(&store, "SELECT count(*) FROM checks"),
            3,
            "checks went with their deployments"
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM phases WHERE deployment_id < 8"
            ),
            0
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM events WHERE deployment_id < 8"
            ),
            0,
            "their events went too"
        );
        // Pruning again deletes nothing more.
        assert_eq!(store.prune(&policy, 100).unwrap(), Pruned::default());
    }

    #[test]
    fn the_deployment_in_progress_and_the_ones_rollback_needs_are_never_pruned() {
        let store = Store::open_in_memory().unwrap();
        // v1 → blue (succeeded), v2 → green from v1 (succeeded), then failures, all
        // ancient; v1 is standby in blue, v2 live in green.
        let v1 = run(
            &store,
            "v1",
            Slot::Blue,
            None,
            Some(DeploymentOutcome::Succeeded),
            1,
        );
        let v2 = run(
            &store,
            "v2",
            Slot::Green,
            Some("v1"),
            Some(DeploymentOutcome::Succeeded),
            2,
        );
        for i in 0..5 {
            run(
                &store,
                "v3",
                Slot::Blue,
                Some("v2"),
                Some(DeploymentOutcome::Failed),
                3 + i,
            );
        }
        live(&store, Slot::Blue, "v1");
        live(&store, Slot::Green, "v2");
        // One more, in progress, also ancient.
        let running = run(&store, "v4", Slot::Blue, Some("v2"), None, 10);
        store
            .append_event(
                "web",
                None,
                "boot",
                "an old event outside deployments",
                None,
                5,
            )
            .unwrap();

        let policy = PrunePolicy {
            keep_deployments: 1,
            max_age_ms: DAY,
        };
        let pruned = store.prune(&policy, 400 * DAY).unwrap();
        assert_eq!(ids(&store), vec![v1, v2, running]);
        assert_eq!(pruned.deployments, 5);
        assert_eq!(
            store.previous_release("web", Slot::Green, "v2").unwrap(),
            Some("v1".to_string()),
            "rollback still knows where v2 came from"
        );
        assert_eq!(
            count(
                &store,
                &format!("SELECT count(*) FROM checks WHERE deployment_id = {running}")
            ),
            1
        );
        assert!(
            count(
                &store,
                &format!("SELECT count(*) FROM events WHERE deployment_id = {running}")
            ) > 0,
            "the running deployment keeps its events, however old"
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM events WHERE deployment_id IS NULL AND kind = 'boot'"
            ),
            0,
            "old events outside deployments go by age"
        );
        // The running one can still finish.
        store
            .apply(&Transition {
                deployment_id: running,
                at: 400 * DAY,
                finish: Some((DeploymentOutcome::Succeeded, "ok".into())),
                ..Transition::default()
            })
            .unwrap();
    }

    #[test]
    fn recent_deployments_within_the_count_are_kept_and_old_ones_go_by_age() {
        let store = Store::open_in_memory().unwrap();
        let old = run(
            &store,
            "v1",
            Slot::Blue,
            None,
            Some(DeploymentOutcome::Failed),
            0,
        );
        let recent = run(
            &store,
            "v2",
            Slot::Blue,
            None,
            Some(DeploymentOutcome::Failed),
            95 * DAY,
        );
        let policy = PrunePolicy {
            keep_deployments: 100,
            max_age_ms: 90 * DAY,
        };
        store.prune(&policy, 100 * DAY).unwrap();
        assert_eq!(ids(&store), vec![recent]);
        assert!(store.deployment(old).is_err());
    }
}
