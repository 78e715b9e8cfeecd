//! HTTPS as a client (issue 13, item 5): every call Cutover makes to an `https://` URL
//! goes through `cutover::tls`, against real TLS servers with a test CA made by openssl:
//! trusted with `ca_file`, refused without it (a clear "certificate not trusted" that
//! names `ca_file`), accepted with `tls_insecure_skip_verify`. The Prometheus provider
//! runs against a real Prometheus serving HTTPS (`--web.config.file`).
//!
//! Fails (never skips) when `openssl` or `prometheus` is missing: `.ci/run` installs them.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover::analysis::{measure, MeasureContext, Verdict};
use cutover::config::{
    MetricConfig, MetricProvider, NotificationsConfig, Range, WebhookConfig, WebhookFormat,
};
use cutover::domain::Slot;
use cutover::notify::{Notifier, NotifyEvent};
use cutover::tls::ClientTls;

#[path = "support/tls_client.rs"]
mod tls;
use tls::{https_server, TestCerts};

#[path = "support/prometheus.rs"]
mod prometheus;

fn ctx() -> MeasureContext {
    MeasureContext {
        service: "web".into(),
        version: "v2".into(),
        canary: Slot::Green,
        stable: None,
        canary_stats: Default::default(),
        stable_stats: None,
        interval: Duration::from_secs(2),
    }
}

fn insecure() -> ClientTls {
    ClientTls {
        insecure_skip_verify: true,
        ..ClientTls::default()
    }
}

fn gate(url: String, tls: ClientTls) -> MetricConfig {
    MetricConfig {
        name: "gate".into(),
        provider: MetricProvider::Webhook {
            url,
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: Some(r#"{"version": "{version}"}"#.into()),
            json_value: Some("score".into()),
            tls,
        },
        pass: Range {
            min: Some(0.5),
            max: None,
        },
        inconclusive: None,
        max_increase_over_stable: None,
    }
}

#[tokio::test]
async fn an_https_analysis_webhook_is_trusted_with_its_ca_file_refused_without_and_accepted_insecure(
) {
    let certs = TestCerts::new();
    let (addr, seen) = https_server(&certs, 200, r#"{"score": 0.9}"#).await;
    let url = format!("https://localhost:{}/approve", addr.port());

    let m = measure(&gate(url.clone(), certs.trusting()), &ctx()).await;
    assert_eq!(m.verdict, Verdict::Pass, "{m:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(seen.lock().unwrap()[0].1, r#"{"version": "v2"}"#);

    let m = measure(&gate(url.clone(), ClientTls::default()), &ctx()).await;
    assert_eq!(m.verdict, Verdict::Error, "{m:?}");
    assert!(
        m.detail.contains("certificate not trusted") && m.detail.contains("add ca_file"),
        "{}",
        m.detail
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "nothing is sent before the handshake"
    );

    let m = measure(&gate(url, insecure()), &ctx()).await;
    assert_eq!(m.verdict, Verdict::Pass, "{m:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_with_the_name_it_was_checked_against() {
    let certs = TestCerts::for_names("DNS:other.example");
    let (addr, _) = https_server(&certs, 200, r#"{"score": 0.9}"#).await;
    let url = format!("https://localhost:{}/approve", addr.port());
    let m = measure(&gate(url, certs.trusting()), &ctx()).await;
    assert_eq!(m.verdict, Verdict::Error, "{m:?}");
    assert!(
        m.detail.contains("not valid for the name \"localhost\""),
        "{}",
        m.detail
    );
}

#[tokio::test]
async fn a_plain_http_server_behind_an_https_url_is_a_clear_error_within_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let m = measure(
        &gate(
            format!("https://127.0.0.1:{}/", addr.port()),
            ClientTls::default(),
        ),
        &ctx(),
    )
    .await;
    assert_eq!(m.verdict, Verdict::Error, "{m:?}");
    assert!(
        m.detail.contains("TLS handshake with 127.0.0.1 failed"),
        "{}",
        m.detail
    );
}

fn webhook(url: String, tls: ClientTls) -> NotificationsConfig {
    NotificationsConfig {
        webhooks: vec![WebhookConfig {
            url,
            format: WebhookFormat::Slack,
            events: vec![],
            headers: BTreeMap::new(),
            attempts: 2,
            timeout: Duration::from_secs(2),
            tls,
        }],
    }
}

fn event() -> NotifyEvent {
    NotifyEvent {
        event: "switched".into(),
        service: "web".into(),
        deployment_id: 7,
        version: "v2".into(),
        message: "traffic on green".into(),
        at: Default::default(),
    }
}

async fn wait_for(seen: &tls::Seen, n: usize, within: Duration) -> usize {
    let end = tokio::time::Instant::now() + within;
    loop {
        let got = seen.lock().unwrap().len();
        if got >= n || tokio::time::Instant::now() >= end {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_https_notification_webhook_is_delivered_only_when_its_certificate_is_trusted() {
    let certs = TestCerts::new();
    let (addr, seen) = https_server(&certs, 200, "ok").await;
    let url = format!("https://localhost:{}/services/T0/B0", addr.port());

    // Not trusted (system store only): both attempts fail at the handshake, nothing lands.
    let untrusted = Notifier::with_backoff(
        &webhook(url.clone(), ClientTls::default()),
        Duration::from_millis(10),
    );
    untrusted.send(event());
    assert_eq!(wait_for(&seen, 1, Duration::from_millis(600)).await, 0);

    let trusted = Notifier::with_backoff(
        &webhook(url.clone(), certs.trusting()),
        Duration::from_millis(10),
    );
    trusted.send(event());
    assert_eq!(wait_for(&seen, 1, Duration::from_secs(5)).await, 1);
    let (line, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(line, "POST /services/T0/B0");
    assert!(body.contains("traffic on green"), "{body}");

    let insecure = Notifier::with_backoff(&webhook(url, insecure()), Duration::from_millis(10));
    insecure.send(event());
    assert_eq!(wait_for(&seen, 2, Duration::from_secs(5)).await, 2);
}

#[tokio::test]
async fn a_real_prometheus_over_https_is_queried_with_its_ca_file_and_refused_without() {
    let certs = TestCerts::new();
    // Prometheus scrapes itself; only its API is what Cutover calls.
    let port = prometheus::free_port();
    let prom = prometheus::Prometheus::start_tls(port, &certs.cert, &certs.key);
    let address = format!("https://127.0.0.1:{port}");
    let metric = |tls: ClientTls| MetricConfig {
        name: "up".into(),
        provider: MetricProvider::Prometheus {
            address: address.clone(),
            query: "vector(0.25)".into(),
            tls,
        },
        pass: Range {
            min: None,
            max: Some(0.5),
        },
        inconclusive: None,
        max_increase_over_stable: None,
    };
    // Prometheus takes a moment to listen.
    let mut m = measure(&metric(certs.trusting()), &ctx()).await;
    for _ in 0..100 {
        if m.verdict == Verdict::Pass {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = measure(&metric(certs.trusting()), &ctx()).await;
    }
    assert_eq!(m.verdict, Verdict::Pass, "{m:?}\n{}", prom.log());
    assert_eq!(m.value, Some(0.25), "{m:?}");

    let m = measure(&metric(ClientTls::default()), &ctx()).await;
    assert_eq!(m.verdict, Verdict::Error, "{m:?}");
    assert!(m.detail.contains("certificate not trusted"), "{}", m.detail);

    let m = measure(&metric(insecure()), &ctx()).await;
    assert_eq!(m.verdict, Verdict::Pass, "{m:?}");
}
