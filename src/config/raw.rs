//! The file as written: one serde struct per TOML table, nothing checked but shapes.
//!
//! Read this file as the schema. Every field is optional here (required keys and
//! defaults are decided in `validate.rs`, so a missing key is reported in the same
//! words as any other mistake), integers are `i64` (ranges are checked later with a
//! message that says the range), and every table inside a table is a [`Sub`] read on
//! its own (see `read.rs`) so that one mistake cannot hide another.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::read::Sub;
use super::values::{RawDuration, RawFraction};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub daemon: Option<Sub<RawDaemon>>,
    pub api: Option<Sub<RawApi>>,
    pub proxy: Option<Sub<RawProxy>>,
    /// `[services.<name>]`.
    pub services: Option<BTreeMap<String, Sub<RawService>>>,
    /// `[notifications]`, read in `notify.rs`.
    pub notifications: Option<Sub<super::notify::RawNotifications>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub state_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub preview_header: Option<String>,
    pub preview_cookie: Option<String>,
    pub header_read_timeout: Option<RawDuration>,
    pub max_body_bytes: Option<i64>,
    pub upstream_timeout: Option<RawDuration>,
    pub drain_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub listen: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub preview_listen: Option<String>,
    pub warm_for: Option<RawDuration>,
    pub runtime: Option<Sub<RawRuntime>>,
    pub health: Option<Sub<RawHealth>>,
    pub smoke: Option<Sub<RawSmoke>>,
    pub watch: Option<Sub<RawWatch>>,
    /// `[services.<name>.router]`, read by kind in `router.rs`.
    pub router: Option<Sub<super::router::RawRouter>>,
    /// `[services.<name>.strategy]`, read in `strategy.rs`.
    pub strategy: Option<Sub<super::strategy::RawStrategy>>,
    /// `[services.<name>.mirror]`, read in `strategy.rs`.
    pub mirror: Option<Sub<super::strategy::RawMirror>>,
    /// `[services.<name>.analysis]`, read in `analysis.rs`.
    pub analysis: Option<Sub<super::analysis::RawAnalysis>>,
    /// `[[services.<name>.hooks]]`, read in `hooks.rs`.
    pub hooks: Option<Vec<Sub<super::hooks::RawHook>>>,
}

/// `[services.<name>.runtime]` with `kind = "process"`; the other kinds have their own
/// structs in `runtime.rs`, chosen by `kind` before the table is read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub kind: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_grace: Option<RawDuration>,
    pub ports: Option<Sub<RawPorts>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPorts {
    pub blue: Option<i64>,
    pub green: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub deadline: Option<RawDuration>,
    /// `[[services.<name>.health.checks]]`.
    pub checks: Option<Vec<Sub<RawCheck>>>,
}

/// One health check: exactly one of `http`, `tcp = true`, `command`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: Option<String>,
    pub http: Option<Sub<RawHttpProbe>>,
    pub tcp: Option<bool>,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpProbe {
    pub path: Option<String>,
    pub status: Option<i64>,
    pub body_contains: Option<String>,
    /// Dotted JSON path → expected value.
    pub json: Option<BTreeMap<String, toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmoke {
    pub timeout: Option<RawDuration>,
    pub max_avg_latency: Option<RawDuration>,
    pub max_p95_latency: Option<RawDuration>,
    /// `[[services.<name>.smoke.steps]]`.
    pub steps: Option<Vec<Sub<RawStep>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub expect_status: Option<i64>,
    pub expect_body_contains: Option<String>,
    pub expect_json: Option<BTreeMap<String, toml::Value>>,
    /// Variable → dotted JSON path in this step's response.
    pub capture: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub duration: Option<RawDuration>,
    pub interval: Option<RawDuration>,
    pub window: Option<RawDuration>,
    pub error_rate: Option<Sub<RawErrorRate>>,
    pub p95_latency: Option<Sub<RawLatencyTrigger>>,
    pub health_failures: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorRate {
    pub max: Option<RawFraction>,
    #[serde(rename = "for")]
    pub for_: Option<RawDuration>,
    pub min_requests: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyTrigger {
    pub max: Option<RawDuration>,
    #[serde(rename = "for")]
    pub for_: Option<RawDuration>,
    pub min_requests: Option<i64>,
}
