//! The webhook and command analysis providers against real loopback servers and real
//! processes: a gate answering non-2xx holds the step (Fail), 2xx passes, an
//! unreachable gate is an Error; commands pass on exit 0 or judge their output.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use cutover::analysis::{measure, MeasureContext, Verdict};
use cutover::config::{MetricConfig, MetricProvider, Range};
use cutover::domain::Slot;

fn ctx() -> MeasureContext {
    MeasureContext {
        service: "web".into(),
        version: "v2".into(),
        canary: Slot::Green,
        stable: Some(Slot::Blue),
        canary_stats: Default::default(),
        stable_stats: None,
        interval: Duration::from_secs(2),
    }
}

fn metric(provider: MetricProvider, pass: Range) -> MetricConfig {
    MetricConfig {
        name: "gate".into(),
        provider,
        pass,
        inconclusive: None,
        max_increase_over_stable: None,
    }
}

fn webhook(url: String, json_value: Option<&str>) -> MetricProvider {
    MetricProvider::Webhook {
        url,
        method: "POST".into(),
        headers: Default::default(),
        body: Some(r#"{"version": "{version}"}"#.into()),
        json_value: json_value.map(String::from),
        tls: Default::default(),
    }
}

/// A gate answering the status in `status` (changeable) with a JSON score; it records
/// the last body it got.
async fn gate(status: Arc<AtomicU16>) -> (String, Arc<std::sync::Mutex<String>>) {
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let state = (status, seen.clone());
    async fn handle(
        State((status, seen)): State<(Arc<AtomicU16>, Arc<std::sync::Mutex<String>>)>,
        body: String,
    ) -> (StatusCode, &'static str) {
        *seen.lock().unwrap() = body;
        let code = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
        (code, r#"{"result": {"score": 0.93}}"#)
    }
    let app = axum::Router::new()
        .route("/approve/{version}", axum::routing::post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/approve/{{version}}",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn a_webhook_gate_answering_503_stays_closed_and_200_passes() {
    let status = Arc::new(AtomicU16::new(503));
    let (url, seen) = gate(status.clone()).await;
    let m = metric(webhook(url.clone(), None), Range::default());

    let held = measure(&m, &ctx()).await;
    assert_eq!(held.verdict, Verdict::Inconclusive, "{held:?}");
    assert!(held.is_gate_closed(), "{held:?}");
    assert!(
        held.detail.ends_with("answered 503 Service Unavailable"),
        "{}",
        held.detail
    );
    assert!(
        held.detail.contains("/approve/v2"),
        "placeholders substituted: {}",
        held.detail
    );
    assert_eq!(*seen.lock().unwrap(), r#"{"version": "v2"}"#);

    status.store(200, Ordering::SeqCst);
    let open = measure(&m, &ctx()).await;
    assert_eq!(open.verdict, Verdict::Pass, "{open:?}");
}

#[tokio::test]
async fn a_webhook_json_value_is_judged_against_the_range() {
    let (url, _) = gate(Arc::new(AtomicU16::new(200))).await;
    let pass = measure(
        &metric(
            webhook(url.clone(), Some("result.score")),
            Range {
                min: Some(0.9),
                max: None,
            },
        ),
        &ctx(),
    )
    .await;
    assert_eq!(
        (pass.verdict, pass.value),
        (Verdict::Pass, Some(0.93)),
        "{pass:?}"
    );
    let fail = measure(
        &metric(
            webhook(url.clone(), Some("result.score")),
            Range {
                min: Some(0.95),
                max: None,
            },
        ),
        &ctx(),
    )
    .await;
    assert_eq!(
        (fail.verdict, fail.detail.as_str()),
        (Verdict::Fail, "0.93 < min 0.95")
    );
    let missing = measure(
        &metric(
            webhook(url, Some("result.nope")),
            Range {
                min: Some(0.9),
                max: None,
            },
        ),
        &ctx(),
    )
    .await;
    assert_eq!(missing.verdict, Verdict::Error, "{missing:?}");
}

#[tokio::test]
async fn an_unreachable_webhook_is_an_error_not_a_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = measure(
        &metric(
            webhook(format!("http://127.0.0.1:{port}/x"), None),
            Range::default(),
        ),
        &ctx(),
    )
    .await;
    assert_eq!(m.verdict, Verdict::Error, "{m:?}");
    assert!(m.detail.contains("refused"), "{}", m.detail);
}

fn command(argv: &[&str], numeric: bool) -> MetricProvider {
    MetricProvider::Command {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        numeric,
    }
}

#[tokio::test]
async fn a_command_passes_on_exit_0_and_fails_otherwise_naming_its_output() {
    let pass = measure(
        &metric(
            command(&["sh", "-c", "test \"$1\" = v2", "sh", "{version}"], false),
            Range::default(),
        ),
        &ctx(),
    )
    .await;
    assert_eq!(pass.verdict, Verdict::Pass, "{pass:?}");
    let fail = measure(
        &metric(
            command(&["sh", "-c", "echo 'smoke broke' >&2; exit 3"], false),
            Range::default(),
        ),
        &ctx(),
    )
    .await;
    assert_eq!(
        (fail.verdict, fail.detail.as_str()),
        (Verdict::Fail, "`sh` exited with 3: smoke broke")
    );
    let missing = measure(
        &metric(command(&["/nonexistent/check"], false), Range::default()),
        &ctx(),
    )
    .await;
    assert_eq!(missing.verdict, Verdict::Error, "{missing:?}");
}

#[tokio::test]
async fn a_numeric_command_is_judged_by_its_output_and_a_hung_one_times_out() {
    let max = Range {
        min: None,
        max: Some(0.5),
    };
    let ok = measure(&metric(command(&["echo", "0.25"], true), max), &ctx()).await;
    assert_eq!((ok.verdict, ok.value), (Verdict::Pass, Some(0.25)));
    let high = measure(&metric(command(&["echo", "0.72"], true), max), &ctx()).await;
    assert_eq!(
        (high.verdict, high.detail.as_str()),
        (Verdict::Fail, "0.72 > max 0.5")
    );
    let words = measure(&metric(command(&["echo", "fine"], true), max), &ctx()).await;
    assert_eq!(words.verdict, Verdict::Error, "{words:?}");
    let mut quick = ctx();
    quick.interval = Duration::from_millis(10); // the call timeout is at least 1s
    let hung = measure(&metric(command(&["sleep", "30"], true), max), &quick).await;
    assert_eq!(
        (hung.verdict, hung.detail.as_str()),
        (Verdict::Error, "`sleep` timed out after 1s")
    );
}
