//! Prometheus `/metrics`: per-slot request counters and latency histograms read straight
//! from the proxy's atomics at scrape time (nothing is copied on the request path),
//! deployments by outcome and the live slot, read from the store.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::domain::stats::LATENCY_BOUNDS_US;
use crate::orchestrator::switch_times::{self, SwitchTimes};
use crate::proxy::table::StatsRegistry;
use crate::store::Store;

#[derive(Clone)]
pub struct CutoverCollector {
    stats: Arc<StatsRegistry>,
    store: Arc<Store>,
    switch_times: Arc<SwitchTimes>,
}

impl std::fmt::Debug for CutoverCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CutoverCollector")
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Collector for CutoverCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let slots = self.stats.iter();
        let snaps: Vec<_> = slots
            .iter()
            .map(|(svc, slot, s)| (svc.as_str(), slot.as_str(), s.snapshot()))
            .collect();

        let mut e = enc.encode_descriptor(
            "cutover_requests",
            "Requests proxied to a slot, by how they ended (status class, upstream_failed, client_failed).",
            None,
            MetricType::Counter,
        )?;
        for (svc, slot, snap) in &snaps {
            for (i, class) in CLASSES.iter().enumerate() {
                let labels = [("service", *svc), ("slot", *slot), ("result", *class)];
                ConstCounter::new(snap.status_class[i]).encode(e.encode_family(&labels)?)?;
            }
            let labels = [
                ("service", *svc),
                ("slot", *slot),
                ("result", "upstream_failed"),
            ];
            ConstCounter::new(snap.upstream_failed).encode(e.encode_family(&labels)?)?;
            let labels = [
                ("service", *svc),
                ("slot", *slot),
                ("result", "client_failed"),
            ];
            ConstCounter::new(snap.client_failed).encode(e.encode_family(&labels)?)?;
        }

        let mut e = enc.encode_descriptor(
            "cutover_request_errors",
            "Requests that count against a release: 5xx answers and upstream failures.",
            None,
            MetricType::Counter,
        )?;
        for (svc, slot, snap) in &snaps {
            let labels = [("service", *svc), ("slot", *slot)];
            ConstCounter::new(snap.errors()).encode(e.encode_family(&labels)?)?;
        }

        let mut e = enc.encode_descriptor(
            "cutover_proxy_shield_retries",
            "Requests to a deployment's new slot that failed in a retry-safe way and were \
             retried on the previous slot (the failure is counted in cutover_requests too).",
            None,
            MetricType::Counter,
        )?;
        for (svc, slot, stats) in &slots {
            let retries = stats.shield_retries();
            for kind in crate::proxy::shield::RetryKind::ALL {
                let labels = [
                    ("service", svc.as_str()),
                    ("slot", slot.as_str()),
                    ("reason", kind.as_str()),
                ];
                ConstCounter::new(retries[kind.index()]).encode(e.encode_family(&labels)?)?;
            }
        }

        let mut e = enc.encode_descriptor(
            "cutover_requests_in_flight",
            "Requests currently in flight to a slot.",
            None,
            MetricType::Gauge,
        )?;
        for (svc, slot, snap) in &snaps {
            let labels = [("service", *svc), ("slot", *slot)];
            ConstGauge::new(snap.in_flight).encode(e.encode_family(&labels)?)?;
        }

        let mut e = enc.encode_descriptor(
            "cutover_request_duration_seconds",
            "Time from receiving a request to the end of its response body.",
            None,
            MetricType::Histogram,
        )?;
        for (svc, slot, snap) in &snaps {
            let buckets = buckets(&snap.latency_buckets, &LATENCY_BOUNDS_US);
            let count = snap.latency_buckets.iter().sum();
            let labels = [("service", *svc), ("slot", *slot)];
            e.encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(
                    snap.latency_sum_us as f64 / 1e6,
                    count,
                    &buckets,
                    None,
                )?;
        }

        let mut e = enc.encode_descriptor(
            "cutover_switch_duration_seconds",
            "Time inside Cutover from the state machine deciding to move traffic to the \
             router reporting the new route in effect (only the router's apply: one atomic \
             swap for the built-in proxy, config write + test + reload for nginx; the store \
             write comes after and is not included). Rollback switches count too.",
            None,
            MetricType::Histogram,
        )?;
        for (svc, h) in self.switch_times.snapshot() {
            let buckets = buckets(&h.buckets, &switch_times::BOUNDS_US);
            let labels = [("service", svc.as_str())];
            e.encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(
                    h.sum_us as f64 / 1e6,
                    h.count,
                    &buckets,
                    None,
                )?;
        }

        if let Ok(counts) = self.store.outcome_counts() {
            let mut e = enc.encode_descriptor(
                "cutover_deployments",
                "Finished deployments (and rollbacks) by outcome.",
                None,
                MetricType::Counter,
            )?;
            for c in &counts {
                let labels = [
                    ("service", c.service.as_str()),
                    ("outcome", c.outcome.as_str()),
                ];
                ConstCounter::new(c.count).encode(e.encode_family(&labels)?)?;
            }
        }
        if let Ok(services) = self.store.services() {
            let mut e = enc.encode_descriptor(
                "cutover_live_slot",
                "1 for the slot receiving normal traffic, 0 for the other.",
                None,
                MetricType::Gauge,
            )?;
            for svc in &services {
                for slot in crate::domain::Slot::ALL {
                    let labels = [("service", svc.name.as_str()), ("slot", slot.as_str())];
                    ConstGauge::new(i64::from(svc.live == Some(slot)))
                        .encode(e.encode_family(&labels)?)?;
                }
            }
        }
        phase_gauge(&self.store, &mut enc)?;
        build_info(&mut enc)
    }
}

/// `cutover_deployment_phase{service, phase} 1`: one series per service naming the
/// phase of its deployment in progress, or `idle` between deployments (the info-metric
/// pattern: the series for the previous phase goes away, so `sum by (phase)` counts
/// services per phase and a `phase!="idle"` alert finds stuck deployments).
fn phase_gauge(store: &Store, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Ok(services) = store.services() else {
        return Ok(());
    };
    let mut e = enc.encode_descriptor(
        "cutover_deployment_phase",
        "1 for the phase each service's deployment in progress is in (`idle` when none runs).",
        None,
        MetricType::Gauge,
    )?;
    for svc in &services {
        let phase = store
            .history(&svc.name, 1)
            .ok()
            .and_then(|h| h.into_iter().next())
            .filter(|d| d.outcome.is_none())
            .map_or_else(|| "idle".to_string(), |d| d.phase);
        let labels = [("service", svc.name.as_str()), ("phase", phase.as_str())];
        ConstGauge::new(1i64).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `cutover_build_info{version, commit, rustc} 1`; `commit` and `rustc` are present
/// when the build set `CUTOVER_GIT_COMMIT` / `CUTOVER_RUSTC_VERSION`
/// (`scripts/build-release.sh` does).
fn build_info(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut e = enc.encode_descriptor(
        "cutover_build_info",
        "Always 1; the labels say which build of Cutover is running.",
        None,
        MetricType::Gauge,
    )?;
    let mut labels = vec![("version", env!("CARGO_PKG_VERSION"))];
    if let Some(c) = option_env!("CUTOVER_GIT_COMMIT") {
        labels.push(("commit", c));
    }
    if let Some(r) = option_env!("CUTOVER_RUSTC_VERSION") {
        labels.push(("rustc", r));
    }
    ConstGauge::new(1i64).encode(e.encode_family(&labels)?)?;
    Ok(())
}

/// Per-bucket counts (not cumulative: the encoder sums them) with their upper bounds
/// in seconds; the last bucket is +Inf, which `prometheus-client` spells `f64::MAX`.
fn buckets(counts: &[u64], bounds_us: &[u64]) -> Vec<(f64, u64)> {
    counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let bound = bounds_us.get(i).map_or(f64::MAX, |us| *us as f64 / 1e6);
            (bound, *n)
        })
        .collect()
}

/// A registry holding Cutover's collector.
pub fn registry(
    stats: Arc<StatsRegistry>,
    store: Arc<Store>,
    switch_times: Arc<SwitchTimes>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(CutoverCollector {
        stats,
        store,
        switch_times,
    }));
    r
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}
