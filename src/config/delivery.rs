//! Validated types for progressive delivery: the deployment strategy (blue-green or
//! canary steps), traffic mirroring, metric analysis and notifications.
//!
//! Parsed by `strategy.rs` (strategy, mirror), `analysis.rs` (analysis) and
//! `notify.rs` (notifications) next to this file.

use crate::tls::ClientTls;
use std::collections::BTreeMap;
use std::time::Duration;

/// How a new release takes traffic.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Strategy {
    /// All traffic at once after the checks (the default).
    #[default]
    BlueGreen,
    /// Gradual traffic shifting in steps, with analysis at every step.
    Canary(CanaryConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    /// In order; the last step's weight is below 100 (reaching 100 % is the switch
    /// that ends the canary and starts the watch).
    pub steps: Vec<CanaryStep>,
    /// A client that landed on the new slot keeps landing there while weights change
    /// (a cookie). Default true.
    pub sticky: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStep {
    /// Share of normal traffic sent to the new slot, 1..=99.
    pub weight: u8,
    /// How long to hold this weight before the next step.
    pub pause: Pause,
    /// Run the service's `analysis` during this step; a failure rolls back.
    pub analyze: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pause {
    /// Go on as soon as the step's analysis (if any) passed.
    None,
    For(Duration),
    /// Wait for `cutover promote`.
    UntilPromoted,
}

/// Copy a sample of live requests to the new slot before it takes traffic; its
/// responses are discarded and compared.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// Share of live requests copied, 1..=100.
    pub percent: u8,
    /// Methods copied. Default GET, HEAD, OPTIONS (safe methods only).
    pub methods: Vec<String>,
    /// How long to mirror (a phase between the smoke tests and the switch).
    pub duration: Duration,
    /// Fail the deployment if more than this share of mirrored requests got a
    /// different status class than the live slot gave. Default 0.05.
    pub max_mismatch: f64,
    /// At least this many mirrored requests before judging. Default 20.
    pub min_requests: u64,
}

impl MirrorConfig {
    pub const DEFAULT_MAX_MISMATCH: f64 = 0.05;
    pub const DEFAULT_MIN_REQUESTS: u64 = 20;

    /// Safe methods only: copying a POST would write twice.
    pub fn default_methods() -> Vec<String> {
        ["GET", "HEAD", "OPTIONS"].map(String::from).to_vec()
    }
}

/// Metric analysis, run at every canary step that asks for it and during the watch.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// Time between two measurements of every metric. Default 10s.
    pub interval: Duration,
    /// Measurements per run (a step's analysis passes after this many). Default 3.
    pub count: u32,
    /// Failed measurements tolerated before the run fails. Default 0.
    pub failure_limit: u32,
    /// Consecutive measurement errors (metric could not be read) before the run fails.
    /// Default 4.
    pub consecutive_error_limit: u32,
    /// Inconclusive measurements before the run pauses for a human (`promote` to go
    /// on, `abort` to stop). Default 1.
    pub inconclusive_limit: u32,
    pub metrics: Vec<MetricConfig>,
}

impl AnalysisConfig {
    pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
    pub const DEFAULT_COUNT: u32 = 3;
    pub const DEFAULT_FAILURE_LIMIT: u32 = 0;
    pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;
    pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 1;
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    pub name: String,
    pub provider: MetricProvider,
    /// The value passes when inside this range (either bound optional).
    pub pass: Range,
    /// Values inside this range (and outside `pass`) are inconclusive, not failures.
    pub inconclusive: Option<Range>,
    /// Compare against the stable (old) slot: the value passes when
    /// `new <= old + max_increase` (for "lower is better" signals).
    pub max_increase_over_stable: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Range {
    /// Whether `v` is inside (bounds included).
    pub fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    /// `0.72 > max 0.5`, `0.01 < min 0.02`, or `0.3 in [0.1, 0.5]`: why `v` is (not)
    /// inside, for people.
    pub fn explain(&self, v: f64) -> String {
        match (self.min, self.max) {
            (Some(m), _) if v < m => format!("{} < min {}", num(v), num(m)),
            (_, Some(m)) if v > m => format!("{} > max {}", num(v), num(m)),
            (Some(lo), Some(hi)) => format!("{} within [{}, {}]", num(v), num(lo), num(hi)),
            (Some(lo), None) => format!("{} >= min {}", num(v), num(lo)),
            (None, Some(hi)) => format!("{} <= max {}", num(v), num(hi)),
            (None, None) => num(v),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }
}

/// A value for people: at most 4 decimals, no trailing zeros.
pub fn num(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricProvider {
    /// The built-in proxy's per-slot signals over the measurement interval.
    Builtin {
        signal: BuiltinSignal,
        min_requests: u64,
    },
    /// An instant query against a Prometheus server's HTTP API; the first sample's value.
    /// `{service}`, `{slot}`, `{stable_slot}` and `{version}` are substituted in the query.
    Prometheus {
        address: String,
        query: String,
        /// Trust for an `https://` address.
        tls: ClientTls,
    },
    /// An argv (same placeholders); exit 0 passes, and with `numeric` its stdout is
    /// parsed as the value instead.
    Command { argv: Vec<String>, numeric: bool },
    /// An HTTP request; 2xx passes (a manual or external gate). `json_value` reads a
    /// number from the JSON response instead.
    Webhook {
        url: String,
        method: String,
        headers: BTreeMap<String, String>,
        body: Option<String>,
        json_value: Option<String>,
        /// Trust for an `https://` URL.
        tls: ClientTls,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinSignal {
    /// Requests per second.
    RequestRate,
    /// Share of 5xx + upstream failures, 0..=1.
    ErrorRate,
    /// Seconds.
    P50Latency,
    P95Latency,
    P99Latency,
}

/// Where deployment events are sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotificationsConfig {
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub format: WebhookFormat,
    /// Event kinds sent; empty = all (`started`, `switched`, `step`, `promoted`,
    /// `rolled_back`, `failed`, `succeeded`, `aborted`).
    pub events: Vec<String>,
    pub headers: BTreeMap<String, String>,
    /// Attempts per event (with exponential backoff). Default 5.
    pub attempts: u32,
    /// Time one attempt may take. Default 5s.
    pub timeout: Duration,
    /// Trust for an `https://` URL (`ca_file`, `tls_insecure_skip_verify`).
    pub tls: ClientTls,
}

impl WebhookConfig {
    pub const DEFAULT_ATTEMPTS: u32 = 5;
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    /// The event kinds a webhook may ask for.
    pub const EVENTS: &'static [&'static str] = &[
        "started",
        "switched",
        "step",
        "promoted",
        "rolled_back",
        "failed",
        "succeeded",
        "aborted",
        // The live release between deployments (`orchestrator/supervisor.rs`).
        "live_unhealthy",
        "live_restarted",
        "live_failover",
        "live_recovered",
    ];

    /// Whether this webhook wants `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// `{"event": ..., "service": ..., "deployment_id": ..., "version": ..., "message": ..., "at": ...}`
    #[default]
    Json,
    /// `{"text": "..."}` for Slack incoming webhooks and compatible receivers.
    Slack,
}
