//! Rules for `[notifications]`: the webhooks that hear about deployments.
//!
//! The event names are checked here, against the list the notifier sends, so a typo
//! (`rollback` for `rolled_back`) is a config error instead of a silent webhook.

use super::client_tls::client_tls;
use super::delivery::{NotificationsConfig, WebhookConfig, WebhookFormat};
use super::raw::{RawNotifications, RawWebhook};
use super::read::{read, read_opt, Problems, Sub};
use super::rules::{duration, headers, http_url, int_range, positive};

pub(super) fn notifications(
    sub: Option<&Sub<RawNotifications>>,
    p: &mut Problems,
) -> Option<NotificationsConfig> {
    let r = read_opt(sub, "notifications", p)?;
    let before = p.count();
    let mut webhooks = Vec::new();
    for (i, sub) in r.raw.webhooks.iter().flatten().enumerate() {
        let at = format!("{}[{i}]", r.key("webhooks"));
        if let Some(w) = webhook(&at, sub, p) {
            webhooks.push(w);
        }
    }
    (p.count() == before).then_some(NotificationsConfig { webhooks })
}

fn webhook(at: &str, sub: &Sub<RawWebhook>, p: &mut Problems) -> Option<WebhookConfig> {
    let r = read::<RawWebhook>(sub.value(), at, p)?;
    let url = r
        .required(
            "url",
            r.raw.url.as_deref(),
            "a URL like \"http://127.0.0.1:9000/hook\"",
            p,
        )
        .and_then(|u| http_url(p, r.key("url"), u))
        .map(str::to_string);
    let format = r
        .or("format", r.raw.format.as_deref(), "json")
        .and_then(|f| match f {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            other => {
                p.add(
                    r.key("format"),
                    format!("expected \"json\" or \"slack\", got {other:?}"),
                );
                None
            }
        });
    let events = r.optional("events", r.raw.events.as_ref(), |events| {
        let before = p.count();
        for (i, e) in events.iter().enumerate() {
            if !WebhookConfig::EVENTS.contains(&e.as_str()) {
                p.add(
                    format!("{}[{i}]", r.key("events")),
                    format!(
                        "unknown event {e:?}, expected one of: {}",
                        WebhookConfig::EVENTS.join(", ")
                    ),
                );
            }
        }
        (p.count() == before).then(|| events.clone())
    });
    let headers = r.optional("headers", r.raw.headers.clone(), |h| {
        headers(p, &r.key("headers"), h)
    });
    let attempts = r
        .or(
            "attempts",
            r.raw.attempts,
            i64::from(WebhookConfig::DEFAULT_ATTEMPTS),
        )
        .and_then(|v| int_range(p, r.key("attempts"), v, 1, 20))
        .map(|v| v as u32);
    let timeout = duration(&r, "timeout", r.raw.timeout, WebhookConfig::DEFAULT_TIMEOUT)
        .and_then(|d| positive(p, r.key("timeout"), d));
    let tls = client_tls(
        &r,
        r.raw.ca_file.as_deref(),
        r.raw.tls_insecure_skip_verify,
        p,
    );
    Some(WebhookConfig {
        tls: tls?,
        url: url?,
        format: format?,
        events: events?.unwrap_or_default(),
        headers: headers?.unwrap_or_default(),
        attempts: attempts?,
        timeout: timeout?,
    })
}
