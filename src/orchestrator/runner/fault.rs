//! Fault injection for the crash tests: `CUTOVER_FAULT_PAUSE_AT=<phase>` makes every
//! deployment stop still (for an hour) right after the step that entered `<phase>` was
//! persisted — or, for `finish`, just before the outcome is written — so a test can
//! `kill -9` the daemon at exactly that point (`tests/e2e_crash_matrix.rs`).
//!
//! Why an environment variable and not a build feature: the crash tests run the real
//! binary CI builds. Unset (always, in production) it costs one lookup per deployment
//! step and changes nothing.

use std::time::Duration;

/// The variable's name.
pub const ENV: &str = "CUTOVER_FAULT_PAUSE_AT";

/// Stands still if the variable names `point`.
pub async fn pause_at(point: &str) {
    if std::env::var(ENV).is_ok_and(|p| p == point) {
        tracing::warn!(point, "fault injection: the deployment stands still here");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
