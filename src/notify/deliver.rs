//! One webhook's delivery task: takes events from its queue in order, renders the
//! payload in the webhook's format and posts it, retrying with exponential backoff.
//! Every failure is logged; none is returned to anyone.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::NotifyEvent;
use crate::analysis::http::request;
use crate::config::{WebhookConfig, WebhookFormat};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(super) async fn run(
    hook: WebhookConfig,
    mut rx: mpsc::Receiver<NotifyEvent>,
    backoff: Duration,
) {
    while let Some(event) = rx.recv().await {
        deliver(&hook, &event, backoff).await;
    }
}

/// Posts one event, retrying; returns once it was accepted or given up on.
pub(super) async fn deliver(hook: &WebhookConfig, event: &NotifyEvent, backoff: Duration) {
    let body = Bytes::from(payload(hook.format, event).to_string());
    let mut delay = backoff;
    for attempt in 1..=hook.attempts.max(1) {
        let result = request(
            "POST",
            &hook.url,
            &hook.headers,
            Some(body.clone()),
            &hook.tls,
            hook.timeout,
        )
        .await;
        let (retry, why) = match result {
            Ok(resp) if resp.status.is_success() => {
                tracing::debug!(url = %hook.url, event = %event.event, attempt, "notification delivered");
                return;
            }
            Ok(resp) => {
                let code = resp.status.as_u16();
                let retry = !(400..500).contains(&code) || code == 408 || code == 429;
                (retry, format!("answered {}", resp.status_line()))
            }
            Err(e) => (true, e),
        };
        if !retry || attempt == hook.attempts {
            tracing::error!(
                url = %hook.url, event = %event.event, deployment = event.deployment_id, attempt,
                "notification not delivered, giving up: {why}"
            );
            return;
        }
        tracing::warn!(
            url = %hook.url, event = %event.event, attempt,
            "notification attempt failed ({why}), retrying in {}", humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// The body for `format`: the event itself as JSON, or Slack's `{"text": ...}`.
pub(super) fn payload(format: WebhookFormat, event: &NotifyEvent) -> serde_json::Value {
    match format {
        WebhookFormat::Json => serde_json::to_value(event).unwrap_or_default(),
        WebhookFormat::Slack => serde_json::json!({ "text": slack_text(event) }),
    }
}

/// `[cutover] web #12 (v2): rolled back: error rate 0.12 > max 0.05`.
fn slack_text(e: &NotifyEvent) -> String {
    let what = e.event.replace('_', " ");
    let mut text = format!(
        "[cutover] {} #{} ({}): {what}",
        e.service, e.deployment_id, e.version
    );
    if !e.message.is_empty() {
        text.push_str(": ");
        text.push_str(&e.message);
    }
    text
}
