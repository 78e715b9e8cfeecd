//! Keeping served certificates in step with their files.
//!
//! [`watch`] re-reads the files every `reload_interval` (contents compared, so a file
//! replaced with identical bytes or a touched mtime is no reload) and whenever
//! [`watch`]'s trigger fires (`SIGUSR1`, `POST /api/v1/tls/reload`). A new
//! certificate only affects handshakes that start after it; established connections
//! keep theirs. A file that fails to parse leaves the old certificate in place, logs
//! the error and shows it in `cutover status` until a good file arrives.

use std::sync::Arc;

use tokio::sync::{watch as tokio_watch, Notify};

use super::TlsEdge;

/// Reloads `edge`'s certificates on every interval tick and every `trigger`
/// notification until `stop` turns true.
pub async fn watch(
    edge: Arc<TlsEdge>,
    trigger: Arc<Notify>,
    mut stop: tokio_watch::Receiver<bool>,
) {
    let Some(interval) = edge.reload_interval() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = trigger.notified() => tracing::info!("reloading TLS certificates on request"),
            _ = stop.wait_for(|s| *s) => return,
        }
        let edge = edge.clone();
        let result = tokio::task::spawn_blocking(move || edge.reload()).await;
        if let Ok((changed, failures)) = result {
            if changed > 0 {
                tracing::info!(changed, "TLS certificates reloaded");
            }
            for f in failures {
                tracing::error!(error = %f, "cannot reload a TLS certificate; serving the previous one");
            }
        }
    }
}
