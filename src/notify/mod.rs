//! Notifications: deployment events sent to webhooks (generic JSON or Slack-compatible),
//! delivered in the background with retries and backoff.
//!
//! Architecture invariant: sending never blocks or fails the caller; a rollback never
//! waits for a webhook.
//!
//! Each webhook has its own queue and delivery task (started on first use), so events
//! reach a receiver in the order they happened ("started" before "rolled_back"), and a
//! slow or dead receiver only delays its own queue. The queue is bounded: when a
//! receiver is down long enough to fill it, new events for it are dropped with a
//! warning rather than held in memory without limit. A failed attempt is retried after
//! 0.5s, 1s, 2s, ... (at most 30s) up to the webhook's `attempts`; a 4xx answer other
//! than 408/429 is not retried (the receiver refuses the request itself).

mod deliver;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::NotificationsConfig;
use crate::domain::UnixMillis;

/// Something that happened to a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotifyEvent {
    /// `started`, `switched`, `step`, `promoted`, `rolled_back`, `failed`,
    /// `succeeded`, `aborted`.
    pub event: String,
    pub service: String,
    pub deployment_id: i64,
    pub version: String,
    /// One line for people.
    pub message: String,
    pub at: UnixMillis,
}

/// Events waiting per webhook before new ones are dropped.
const QUEUE: usize = 256;

/// Sends events to the configured webhooks.
pub struct Notifier {
    cfg: NotificationsConfig,
    /// One sender per webhook, created with its delivery task on first use (a runtime
    /// is needed to spawn it, and `new` may run outside one).
    queues: Mutex<Vec<Option<mpsc::Sender<NotifyEvent>>>>,
    /// First retry delay; doubled per attempt.
    backoff: Duration,
}

impl Notifier {
    pub fn new(cfg: &NotificationsConfig) -> Arc<Self> {
        Self::with_backoff(cfg, Duration::from_millis(500))
    }

    /// [`Notifier::new`] with another first retry delay (tests).
    pub fn with_backoff(cfg: &NotificationsConfig, backoff: Duration) -> Arc<Self> {
        Arc::new(Self {
            cfg: cfg.clone(),
            queues: Mutex::new(vec![None; cfg.webhooks.len()]),
            backoff,
        })
    }

    /// Queues the event for every webhook that wants it and returns at once.
    pub fn send(&self, event: NotifyEvent) {
        if self.cfg.webhooks.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(event = %event.event, "notification dropped: no async runtime to deliver it");
            return;
        };
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for (hook, queue) in self.cfg.webhooks.iter().zip(queues.iter_mut()) {
            if !hook.wants(&event.event) {
                continue;
            }
            let tx = queue.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                runtime.spawn(deliver::run(hook.clone(), rx, self.backoff));
                tx
            });
            if let Err(e) = tx.try_send(event.clone()) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "its queue is full (the receiver is down or slow)"
                    }
                    mpsc::error::TrySendError::Closed(_) => "its delivery task stopped",
                };
                tracing::warn!(url = %hook.url, event = %event.event, "notification dropped: {why}");
            }
        }
    }
}
