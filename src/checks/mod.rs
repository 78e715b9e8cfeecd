//! Health checks and smoke tests, run against one slot's endpoint directly (before any
//! user traffic reaches it, and during the watch). An endpoint that is a host name is
//! resolved at every probe, so a check sees what a fresh client would.
//!
//! Every probe result is a [`CheckResult`]; the orchestrator's runner records each one
//! with the deployment.
//!
//! # Layout
//! - `health`: the HTTP / TCP / command probes and response judging.
//! - `smoke`: ordered smoke steps with captures and the latency budget.
//! - [`json_path`]: dotted paths into JSON (`checks.database`, `items.0.id`).
//! - [`http`]: a one-connection-per-request HTTP client whose timeout covers the body.

mod health;
pub mod http;
pub mod json_path;
mod smoke;

pub use health::{run_check, substitute_placeholders};
pub use smoke::substitute as substitute_captures;

use std::time::Duration;

use serde::Serialize;

use crate::config::{HealthCheck, HealthConfig, Probe, SmokeConfig};
use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

/// How a probe's detail begins when it could not be made because Cutover itself was
/// out of file descriptors ([`CheckResult::says_nothing`]).
pub const OUT_OF_DESCRIPTORS: &str = "not probed: cutover is out of file descriptors";

/// One probe or smoke step, run once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// What was seen (status, the failing condition, the error), for people.
    pub detail: String,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
}

impl CheckResult {
    /// The probe failed for want of Cutover's own descriptors: it says nothing about
    /// the release (a round of only such failures is inconclusive, never unhealthy).
    pub fn says_nothing(&self) -> bool {
        !self.ok && self.detail.starts_with(OUT_OF_DESCRIPTORS)
    }
}

/// Whether a round failed only for want of Cutover's own descriptors.
pub fn inconclusive(results: &[CheckResult]) -> bool {
    results.iter().any(|r| !r.ok)
        && results
            .iter()
            .filter(|r| !r.ok)
            .all(CheckResult::says_nothing)
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The slot being checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Where the slot answers; a host name is resolved at each probe.
    pub endpoint: Endpoint,
    pub service: String,
    pub slot: Slot,
    pub version: String,
    /// `Some` when the slot serves TLS (`[services.<name>.upstream_tls]`): HTTP probes
    /// and smoke steps then speak HTTPS with this trust.
    pub tls: Option<crate::tls::ClientTls>,
}

impl ProbeTarget {
    /// The slot as the store records it, while its release runs (`None` without an
    /// address).
    pub fn of_slot(service: &str, rec: &crate::store::SlotRecord) -> Option<ProbeTarget> {
        Some(ProbeTarget {
            endpoint: rec.endpoint()?,
            service: service.to_string(),
            slot: rec.slot,
            version: rec.version.clone().unwrap_or_default(),
            tls: None,
        })
    }

    /// The same slot, reached over TLS with `tls` when it is `Some`.
    pub fn with_tls(mut self, tls: Option<crate::tls::ClientTls>) -> ProbeTarget {
        self.tls = tls;
        self
    }

    /// One HTTP request to the slot (over TLS when the service says so), within
    /// `timeout`.
    pub async fn send(
        &self,
        req: http::ProbeRequest,
        timeout: Duration,
    ) -> Result<http::Response, http::HttpError> {
        let Some(settings) = &self.tls else {
            return http::send(self.endpoint.clone(), req, timeout).await;
        };
        let client = crate::tls::TlsClient::for_settings(settings)
            .map_err(|e| http::HttpError::Tls(e.to_string()))?;
        let host = self.endpoint.host_text();
        let tls = http::ProbeTls {
            client: &client,
            host: &host,
        };
        http::send_over(self.endpoint.clone(), Some(tls), req, timeout).await
    }
}

/// The outcome of a smoke test run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmokeReport {
    /// One per step that ran, in order (a failed step ends the run).
    pub results: Vec<CheckResult>,
    pub passed: bool,
    /// Why it failed: the step and condition, or the latency budget that was exceeded.
    pub failure: Option<String>,
    #[serde(serialize_with = "ser_opt_ms", rename = "avg_latency_ms")]
    pub avg_latency: Option<Duration>,
    #[serde(serialize_with = "ser_opt_ms", rename = "p95_latency_ms")]
    pub p95_latency: Option<Duration>,
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

/// Runs every health check once, concurrently, each bounded by `cfg.timeout`.
/// A round passes when every result is ok.
/// With no configured checks, one TCP connect check named `tcp`.
pub async fn health_round(cfg: &HealthConfig, target: &ProbeTarget) -> Vec<CheckResult> {
    if cfg.checks.is_empty() {
        let tcp = HealthCheck {
            name: "tcp".to_string(),
            probe: Probe::Tcp,
        };
        return vec![run_check(&tcp, target, cfg.timeout).await];
    }
    futures_util::future::join_all(
        cfg.checks
            .iter()
            .map(|check| run_check(check, target, cfg.timeout)),
    )
    .await
}

/// Runs the smoke steps in order, carrying captured values forward, then applies the
/// latency budget.
/// See [`SmokeReport`] for what a failure says.
pub async fn smoke(cfg: &SmokeConfig, target: &ProbeTarget) -> SmokeReport {
    smoke::run(cfg, target).await
}

/// A duration the way people write it in config files: `2s`, `1.5s`, `200ms`, `0.4ms`.
pub fn human_duration(d: Duration) -> String {
    if d.as_secs() > 0 && d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) || d >= Duration::from_millis(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}

/// One line for a round: every failure's detail, or "ok".
pub fn summarize(results: &[CheckResult]) -> String {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.name, r.detail))
        .collect();
    if failed.is_empty() {
        "ok".into()
    } else {
        failed.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_inconclusive_only_when_every_failure_was_our_own_descriptors() {
        let r = |ok: bool, detail: &str| CheckResult {
            name: "live".into(),
            ok,
            detail: detail.into(),
            duration: Duration::ZERO,
        };
        let ours = format!("{OUT_OF_DESCRIPTORS}: Too many open files (os error 24)");
        assert!(inconclusive(&[r(false, &ours), r(true, "200 OK")]));
        assert!(!inconclusive(&[
            r(false, &ours),
            r(false, "connection refused")
        ]));
        assert!(
            !inconclusive(&[r(true, "200 OK")]),
            "a passing round is conclusive"
        );
        assert!(!inconclusive(&[]));
    }

    #[test]
    fn durations_read_like_config_values() {
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(human_duration(Duration::from_micros(52_345)), "52ms");
        assert_eq!(human_duration(Duration::from_micros(400)), "0.4ms");
        assert_eq!(human_duration(Duration::ZERO), "0ms");
    }
}
