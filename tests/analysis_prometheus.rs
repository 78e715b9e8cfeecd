//! A real Prometheus server (Debian package `prometheus`) drives a Prometheus-based
//! analysis end to end: it scrapes Cutover's own `/metrics` exposition (the real
//! collector over real per-slot counters, served here on loopback), and `measure` runs
//! instant queries against it and judges the answers.
//!
//! Fails (never skips) when `prometheus` is not installed: `.ci/run` installs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cutover::analysis::{measure, MeasureContext, Verdict};
use cutover::config::{MetricConfig, MetricProvider, Range};
use cutover::domain::Slot;
use cutover::proxy::stats::Outcome;
use cutover::proxy::table::StatsRegistry;
use cutover::store::Store;

#[path = "support/prometheus.rs"]
mod prometheus;
use prometheus::{free_port, Prometheus};

/// Cutover's `/metrics`, rendered from `stats` on every scrape.
async fn serve_metrics(stats: Arc<StatsRegistry>) -> SocketAddr {
    let store = Arc::new(Store::open_in_memory().unwrap());
    store.ensure_services(&["web"]).unwrap();
    let registry = Arc::new(cutover::api::metrics::registry(
        stats,
        store,
        Arc::default(),
    ));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { cutover::api::metrics::render(&registry) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn ctx(canary: Slot) -> MeasureContext {
    MeasureContext {
        service: "web".into(),
        version: "v2".into(),
        canary,
        stable: Some(canary.other()),
        canary_stats: Default::default(),
        stable_stats: None,
        interval: Duration::from_secs(5),
    }
}

/// Share of 5xx answers of a slot, from Cutover's request counters.
const ERROR_SHARE: &str = r#"sum(cutover_requests_total{service="web",slot="{slot}",result="5xx"}) / sum(cutover_requests_total{service="web",slot="{slot}"})"#;

fn metric(address: &str, max: Option<f64>, increase: Option<f64>) -> MetricConfig {
    MetricConfig {
        name: "error-share".into(),
        provider: MetricProvider::Prometheus {
            address: address.into(),
            query: ERROR_SHARE.into(),
            tls: Default::default(),
        },
        pass: Range { min: None, max },
        inconclusive: None,
        max_increase_over_stable: increase,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_metric_passes_and_fails_against_its_thresholds() {
    let stats = Arc::new(StatsRegistry::new(["web"]));
    // green (the canary): 10 % errors; blue (stable): 1 %.
    let green = stats.get("web", Slot::Green).unwrap();
    let blue = stats.get("web", Slot::Blue).unwrap();
    for i in 0..100 {
        green.record(
            Outcome::Status(if i < 10 { 500 } else { 200 }),
            Duration::from_millis(5),
        );
        blue.record(
            Outcome::Status(if i < 1 { 503 } else { 200 }),
            Duration::from_millis(5),
        );
    }
    let target = serve_metrics(stats).await;
    let prom = Prometheus::start(target);

    // Wait (bounded) until Prometheus has scraped the counters of both slots.
    let ready = metric(&prom.address, Some(1.0), None);
    let mut last = String::new();
    let mut scraped = false;
    for _ in 0..120 {
        let m = measure(&ready, &ctx(Slot::Blue)).await;
        if m.verdict == Verdict::Pass {
            scraped = true;
            break;
        }
        last = m.detail;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        scraped,
        "Prometheus never had the samples within 60s; last: {last}\nprometheus log:\n{}",
        prom.log()
    );

    let canary = measure(&metric(&prom.address, Some(0.05), None), &ctx(Slot::Green)).await;
    assert_eq!(canary.verdict, Verdict::Fail, "{canary:?}");
    assert_eq!(canary.value, Some(0.1));
    assert_eq!(canary.detail, "0.1 > max 0.05");

    let stable = measure(&metric(&prom.address, Some(0.05), None), &ctx(Slot::Blue)).await;
    assert_eq!(
        (stable.verdict, stable.value),
        (Verdict::Pass, Some(0.01)),
        "{stable:?}"
    );

    // Against the stable slot: +9 points is over an allowed +2, but within +10.
    let worse = measure(&metric(&prom.address, None, Some(0.02)), &ctx(Slot::Green)).await;
    assert_eq!(
        (worse.verdict, worse.detail.as_str()),
        (Verdict::Fail, "0.1 > stable 0.01 + 0.02")
    );
    let allowed = measure(&metric(&prom.address, None, Some(0.1)), &ctx(Slot::Green)).await;
    assert_eq!(allowed.verdict, Verdict::Pass, "{allowed:?}");

    // A query with no samples is an error, not a pass.
    let mut nothing = metric(&prom.address, Some(1.0), None);
    nothing.provider = MetricProvider::Prometheus {
        address: prom.address.clone(),
        query: r#"cutover_requests_total{service="nope"}"#.into(),
        tls: Default::default(),
    };
    let m = measure(&nothing, &ctx(Slot::Green)).await;
    assert_eq!(m.verdict, Verdict::Error, "{m:?}");
    assert!(m.detail.contains("no samples"), "{}", m.detail);
}

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error_measurement() {
    let port = free_port();
    let m = measure(
        &metric(&format!("http://127.0.0.1:{port}"), Some(0.05), None),
        &ctx(Slot::Green),
    )
    .await;
    assert_eq!(m.verdict, Verdict::Error);
    assert!(m.detail.contains("refused"), "{}", m.detail);
}
