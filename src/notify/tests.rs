//! Tests of the notifier against real HTTP receivers on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::{mpsc, Notify};

use super::*;
use crate::config::{WebhookConfig, WebhookFormat};

fn event(kind: &str) -> NotifyEvent {
    NotifyEvent {
        event: kind.into(),
        service: "web".into(),
        deployment_id: 7,
        version: "v2".into(),
        message: "error rate 0.12 > max 0.05".into(),
        at: 1_700_000_000_000,
    }
}

fn hook(url: String, format: WebhookFormat, events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        url,
        format,
        events: events.iter().map(|e| e.to_string()).collect(),
        headers: [("x-token".to_string(), "s3cret".to_string())].into(),
        attempts: 5,
        timeout: Duration::from_secs(2),
        tls: Default::default(),
    }
}

/// A receiver that answers 503 to the first `fail_first` requests, then 200, and
/// reports every accepted body (with its `x-token` header).
async fn receiver(
    fail_first: usize,
) -> (
    String,
    Arc<AtomicUsize>,
    mpsc::UnboundedReceiver<(serde_json::Value, String)>,
) {
    #[derive(Clone)]
    struct S {
        seen: Arc<AtomicUsize>,
        fail_first: usize,
        tx: mpsc::UnboundedSender<(serde_json::Value, String)>,
    }
    async fn hook(State(s): State<S>, headers: axum::http::HeaderMap, body: String) -> StatusCode {
        if s.seen.fetch_add(1, Ordering::SeqCst) < s.fail_first {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let token = headers
            .get("x-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let _ =
            s.tx.send((serde_json::from_str(&body).unwrap_or_default(), token));
        StatusCode::OK
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let state = S {
        seen: seen.clone(),
        fail_first,
        tx,
    };
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen, rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the receiver got nothing within 20s")
        .expect("receiver stopped")
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_event_once_after_retries() {
    let (url, seen, mut rx) = receiver(2).await;
    let cfg = NotificationsConfig {
        webhooks: vec![hook(url, WebhookFormat::Json, &[])],
    };
    let notifier = Notifier::with_backoff(&cfg, Duration::from_millis(50));
    notifier.send(event("rolled_back"));
    let (body, token) = next(&mut rx).await;
    assert_eq!(body, serde_json::to_value(event("rolled_back")).unwrap());
    assert_eq!(token, "s3cret");
    // Nothing else arrives: one accepted delivery after exactly two refusals.
    notifier.send(event("succeeded"));
    let (second, _) = next(&mut rx).await;
    assert_eq!(
        second["event"], "succeeded",
        "events arrive in order, the first only once"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn the_slack_format_has_text_and_the_events_filter_applies() {
    let (url, seen, mut rx) = receiver(0).await;
    let cfg = NotificationsConfig {
        webhooks: vec![hook(url, WebhookFormat::Slack, &["failed"])],
    };
    let notifier = Notifier::new(&cfg);
    notifier.send(event("started"));
    notifier.send(event("failed"));
    let (body, _) = next(&mut rx).await;
    assert_eq!(
        body,
        serde_json::json!({"text": "[cutover] web #7 (v2): failed: error rate 0.12 > max 0.05"})
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "`started` is not in the webhook's events"
    );
}

#[tokio::test]
async fn a_refusing_receiver_is_given_up_on_after_the_configured_attempts() {
    let (url, seen, _rx) = receiver(usize::MAX).await;
    let mut h = hook(url, WebhookFormat::Json, &[]);
    h.attempts = 3;
    deliver::deliver(&h, &event("failed"), Duration::from_millis(10)).await;
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn send_returns_at_once_while_the_receiver_hangs() {
    // Accepts connections, reads the request, never answers until released.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got_request = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (g, r) = (got_request.clone(), release.clone());
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
        g.notify_one();
        r.notified().await;
        drop(sock);
    });
    let cfg = NotificationsConfig {
        webhooks: vec![hook(url, WebhookFormat::Json, &[])],
    };
    let notifier = Notifier::new(&cfg);
    // `send` is synchronous: had it waited for the receiver, which only answers after
    // `release`, this test would never get past it.
    notifier.send(event("rolled_back"));
    notifier.send(event("failed"));
    tokio::time::timeout(Duration::from_secs(20), got_request.notified())
        .await
        .expect("the receiver got the request in the background");
    release.notify_one();
}

#[test]
fn send_outside_a_runtime_drops_the_event_without_panicking() {
    let cfg = NotificationsConfig {
        webhooks: vec![hook("http://127.0.0.1:9/".into(), WebhookFormat::Json, &[])],
    };
    Notifier::new(&cfg).send(event("started"));
}
