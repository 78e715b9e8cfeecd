//! Housekeeping while the daemon runs: the store pruned by `[retention]` (at start,
//! then every `interval`) and slot log files rotated by size (every few seconds: a
//! chatty release can write megabytes a second).
//!
//! Both run on blocking threads (SQLite deletes, file copies) so they never hold up
//! the runtime's workers, and a failure is logged and retried next round: losing a
//! round of housekeeping is never worth stopping the daemon.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::store::{PrunePolicy, Store};

/// How often slot logs are checked against `slot_log_max_bytes`.
pub const ROTATE_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn run(store: Arc<Store>, config: Arc<Config>) {
    let r = config.retention.clone();
    let policy = PrunePolicy {
        keep_deployments: r.keep_deployments,
        max_age_ms: i64::try_from(r.max_age.as_millis()).unwrap_or(i64::MAX),
    };
    let logs = config.daemon.state_dir.join("logs");
    let mut prune = tokio::time::interval(r.interval);
    let mut rotate = tokio::time::interval(ROTATE_EVERY);
    loop {
        tokio::select! {
            _ = prune.tick() => {
                let store = store.clone();
                let done = tokio::task::spawn_blocking(move || {
                    store.prune(&policy, crate::domain::now_ms())
                })
                .await;
                match done {
                    Ok(Ok(p)) if p.deployments + p.events > 0 => tracing::info!(
                        deployments = p.deployments,
                        events = p.events,
                        "retention: pruned old history"
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "retention: pruning failed; trying again next round"),
                    Err(e) => tracing::warn!(error = %e, "retention: pruning task failed"),
                }
            }
            _ = rotate.tick() => {
                let dir = logs.clone();
                let (max, keep) = (r.slot_log_max_bytes, r.slot_log_files);
                let done = tokio::task::spawn_blocking(move || {
                    crate::runtime::log_files::rotate_dir(&dir, max, keep)
                })
                .await;
                match done {
                    Ok(Ok(rotated)) => {
                        for path in rotated {
                            tracing::info!(log = %path.display(), "rotated a slot log");
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot rotate slot logs"),
                    Err(e) => tracing::warn!(error = %e, "slot log rotation task failed"),
                }
            }
        }
    }
}
