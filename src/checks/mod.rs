//! Health checks and smoke tests, run against one slot's address directly (before any
//! user traffic reaches it, and during the watch).
//!
//! Every probe result is a [`CheckResult`]; the orchestrator's runner records each one
//! with the deployment.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::config::{HealthConfig, SmokeConfig};
use crate::domain::Slot;

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

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The slot being checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub addr: SocketAddr,
    pub service: String,
    pub slot: Slot,
    pub version: String,
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
pub async fn health_round(cfg: &HealthConfig, target: &ProbeTarget) -> Vec<CheckResult> {
    let _ = (cfg, target);
    todo!()
}

/// Runs the smoke steps in order, carrying captured values forward, then applies the
/// latency budget.
pub async fn smoke(cfg: &SmokeConfig, target: &ProbeTarget) -> SmokeReport {
    let _ = (cfg, target);
    todo!()
}
