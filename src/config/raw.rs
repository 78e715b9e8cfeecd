//! The file as written: one serde struct per TOML table, nothing checked but shapes.
//!
//! Read this file as the schema. Every field is optional here (required keys and
//! defaults are decided in `validate.rs`, so a missing key is reported in the same
//! words as any other mistake), integers are `i64` (ranges are checked later with a
//! message that says the range), and every table inside a table is a [`Sub`] read on
//! its own (see `read.rs`) so that one mistake cannot hide another.
//!
//! Every struct reachable from [`RawConfig`] is here, so this file imports no section
//! file and every section file (and `rules.rs`) can import it. Only the tables read by
//! their `kind` from a plain TOML value (`router/*.rs`, `runtime/docker.rs`,
//! `runtime/compose.rs`) keep their structs next to their rules.

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
    pub notifications: Option<Sub<RawNotifications>>,
    /// `[retention]`, read in `retention.rs`.
    pub retention: Option<Sub<RawRetention>>,
    /// `environment = "production"` for every service (a service's own wins).
    pub environment: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_deployments: Option<i64>,
    pub max_age: Option<RawDuration>,
    pub interval: Option<RawDuration>,
    pub slot_log_max_bytes: Option<i64>,
    pub slot_log_files: Option<i64>,
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
    /// Read in `edge.rs`.
    pub read_requires_token: Option<bool>,
    pub allowed_hosts: Option<Vec<String>>,
    /// Read in `client_tls.rs`.
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_ca_file: Option<String>,
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
    /// The public edge's keys, read in `edge.rs`.
    pub client_body_timeout: Option<RawDuration>,
    pub max_header_bytes: Option<i64>,
    pub max_header_lines: Option<i64>,
    pub max_connections: Option<i64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub allow_connect: Option<bool>,
    pub slot_header: Option<bool>,
    pub preview: Option<Sub<super::edge::RawPreview>>,
    pub h2c: Option<bool>,
    /// `[[proxy.tls]]`, read in `tls.rs`.
    pub tls: Option<Vec<Sub<super::tls::RawTls>>>,
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
    pub supervise: Option<Sub<RawSupervise>>,
    /// `[services.<name>.router]`, read by kind in `router.rs`.
    pub router: Option<Sub<RawRouter>>,
    /// `[services.<name>.strategy]`, read in `strategy.rs`.
    pub strategy: Option<Sub<RawStrategy>>,
    /// `[services.<name>.mirror]`, read in `strategy.rs`.
    pub mirror: Option<Sub<RawMirror>>,
    /// `[services.<name>.analysis]`, read in `analysis.rs`.
    pub analysis: Option<Sub<RawAnalysis>>,
    /// `[[services.<name>.hooks]]`, read in `hooks.rs`.
    pub hooks: Option<Vec<Sub<RawHook>>>,
    /// `[services.<name>.database]`, read in `database.rs`.
    pub database: Option<Sub<RawDatabase>>,
    /// `production`, `staging`, ...: the CLI confirms changes to production.
    pub environment: Option<String>,
    /// `[services.<name>.shield]` and `[services.<name>.burst]`, read in `shield.rs`.
    pub shield: Option<Sub<super::shield::RawShield>>,
    pub burst: Option<Sub<super::shield::RawBurst>>,
    /// `[services.<name>.upstream_tls]`: the slots serve TLS; read in `client_tls.rs`.
    pub upstream_tls: Option<Sub<RawUpstreamTls>>,
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

/// Marker for `[services.<name>.router]`: the table is read by its `kind` in
/// `router/mod.rs`, each kind with its own struct (`router/nginx.rs`, ...).
#[derive(Debug, Default, Deserialize)]
pub struct RawRouter {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStrategy {
    pub kind: Option<String>,
    /// `kind = "canary"`: the steps, in order.
    pub steps: Option<Vec<Sub<RawCanaryStep>>>,
    /// `kind = "linear"`: percent added at every step.
    pub step: Option<i64>,
    /// `kind = "linear"`: time between two steps.
    pub every: Option<RawDuration>,
    /// AWS CodeDeploy-style preset: `canary-<percent>-<duration>`,
    /// `linear-<percent>-every-<duration>`, `all-at-once`.
    pub preset: Option<String>,
    pub sticky: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanaryStep {
    pub weight: Option<i64>,
    /// A duration, or `"until-promoted"`.
    pub pause: Option<String>,
    pub analyze: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub percent: Option<i64>,
    pub methods: Option<Vec<String>>,
    pub duration: Option<RawDuration>,
    pub max_mismatch: Option<RawFraction>,
    pub min_requests: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub interval: Option<RawDuration>,
    pub count: Option<i64>,
    pub failure_limit: Option<i64>,
    pub consecutive_error_limit: Option<i64>,
    pub inconclusive_limit: Option<i64>,
    pub metrics: Option<Vec<Sub<RawMetric>>>,
}

/// One metric: exactly one of `builtin`, `prometheus`, `command`, `webhook`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    pub name: Option<String>,
    pub builtin: Option<Sub<RawBuiltin>>,
    pub prometheus: Option<Sub<RawPrometheus>>,
    pub command: Option<Vec<String>>,
    pub webhook: Option<Sub<RawWebhookMetric>>,
    /// `command` only: parse stdout as the value.
    pub numeric: Option<bool>,
    pub min: Option<RawFraction>,
    pub max: Option<RawFraction>,
    pub inconclusive: Option<Sub<RawRange>>,
    pub max_increase_over_stable: Option<RawFraction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    pub min: Option<RawFraction>,
    pub max: Option<RawFraction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    pub signal: Option<String>,
    pub min_requests: Option<i64>,
}

/// `[services.<name>.upstream_tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub tls_insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    pub address: Option<String>,
    pub query: Option<String>,
    /// PEM CA file trusted for an `https://` URL instead of the system store.
    pub ca_file: Option<String>,
    /// Accept any certificate (tests only; logged as a warning).
    pub tls_insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhookMetric {
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub json_value: Option<String>,
    /// PEM CA file trusted for an `https://` URL instead of the system store.
    pub ca_file: Option<String>,
    /// Accept any certificate (tests only; logged as a warning).
    pub tls_insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    pub webhooks: Option<Vec<Sub<RawWebhook>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Option<String>,
    /// `"json"` (default) or `"slack"`.
    pub format: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub attempts: Option<i64>,
    pub timeout: Option<RawDuration>,
    /// PEM CA file trusted for an `https://` URL instead of the system store.
    pub ca_file: Option<String>,
    /// Accept any certificate (tests only; logged as a warning).
    pub tls_insecure_skip_verify: Option<bool>,
}

/// `[[services.<name>.hooks]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub name: Option<String>,
    pub at: Option<String>,
    pub command: Option<Vec<String>>,
    pub http: Option<Sub<RawHttpHook>>,
    pub timeout: Option<RawDuration>,
    pub on_failure: Option<String>,
}

/// `http = { url = "...", ... }` of a hook.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpHook {
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub expect_status: Option<Vec<i64>>,
    /// Read in `client_tls.rs`, for an `https://` URL.
    pub ca_file: Option<String>,
    pub tls_insecure_skip_verify: Option<bool>,
}

/// `[services.<name>.supervise]`, read in `supervise.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupervise {
    pub enabled: Option<bool>,
    pub failover: Option<bool>,
    pub max_backoff: Option<RawDuration>,
}

/// `[services.<name>.database]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub strategy: Option<String>,
    pub url_env: Option<String>,
    pub migrations: Option<String>,
    pub migrate_command: Option<Vec<String>>,
    pub version_command: Option<Vec<String>>,
    pub lock_timeout: Option<RawDuration>,
    pub retries: Option<i64>,
    pub backup_dir: Option<String>,
    pub keep_backups: Option<i64>,
    pub prove: Option<bool>,
    pub down_on_rollback: Option<RawFlagOrWord>,
    pub pg_bin: Option<String>,
}

/// A key that takes `false` or a word (`down_on_rollback = "manual"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawFlagOrWord {
    Flag(bool),
    Word(String),
}
