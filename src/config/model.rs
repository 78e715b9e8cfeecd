//! The validated configuration: what every other layer reads.
//!
//! These types are produced only by [`super::load`] / [`super::parse`], after every
//! rule in `validate.rs` has passed, so consumers never re-check them (a duration is
//! positive, a check has exactly one probe, a port placeholder exists, ...).
//!
//! The types of each runtime and router kind are in `kinds.rs` and re-exported here;
//! the progressive-delivery types are in `delivery.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::database_types::{
    DatabaseConfig, DbStrategy, DownOnRollback, MigrationSource, PasswordSource,
};
use super::delivery::{AnalysisConfig, MirrorConfig, NotificationsConfig, Strategy};
pub use super::edge::{ApiEdge, IpNet, PreviewConfig, ProxyEdge, MIN_PUBLIC_TOKEN_LEN};
pub use super::hook_types::{Hook, HookAction, HookPoint, HttpHook, OnFailure};

pub use super::kinds::{
    AdminAddr, CaddyRouterConfig, ComposeRuntimeConfig, DnsRouterConfig, DockerReach,
    DockerRestart, DockerRuntimeConfig, HaproxyRouterConfig, NginxRouterConfig,
    ProcessRuntimeConfig, RouterConfig, RuntimeConfig, SlotPorts, StopSignal, TraefikRouterConfig,
    TsigKey,
};
pub use super::kube_types::{
    KubeAccess, KubeRoute, KubernetesRouterConfig, KubernetesRuntimeConfig, EXTRA_SLOT, NAME_LABEL,
    SLOT_LABEL,
};

/// The whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from (for messages); `None` when parsed from a string.
    pub path: Option<PathBuf>,
    pub daemon: DaemonConfig,
    pub api: ApiConfig,
    pub proxy: ProxyConfig,
    /// Services by name, in name order.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Webhooks that hear about deployments. Default: none.
    pub notifications: NotificationsConfig,
    /// How much history the store and the slot logs keep (`[retention]`).
    pub retention: super::retention::RetentionConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Holds `cutover.db`, slot logs and the generated API token. Relative paths are
    /// resolved against the config file's directory.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Where the HTTP API and `/metrics` listen. Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Bearer token for mutating calls, taken from `token`, else from the env var named
    /// by `token_env` (default `CUTOVER_TOKEN`), else `None` (the daemon then generates
    /// one into `<state_dir>/api-token`).
    pub token: Option<String>,
    pub token_env: String,
    /// Who may call the API at all (`edge.rs`).
    pub edge: ApiEdge,
    /// `Some` when the API serves HTTPS (`tls_cert_file` + `tls_key_file`).
    pub tls: Option<ApiTls>,
}

/// `[api] tls_cert_file`, `tls_key_file` (the daemon serves HTTPS) and `tls_ca_file`
/// (what the CLI trusts for it; default the system store).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA file the CLI trusts the API's certificate by.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Request header that sends a request to the idle (preview) slot. Default
    /// `x-cutover-preview` (any value routes to the preview slot).
    pub preview_header: String,
    /// Cookie that sends a request to the idle (preview) slot, for browsers. Default
    /// `cutover-preview` (any value routes to the preview slot).
    pub preview_cookie: String,
    /// Time allowed to receive a request's headers. Default 10s.
    pub header_read_timeout: Duration,
    /// Largest request body accepted, in bytes; larger gets 413. Default 10 MiB.
    pub max_body_bytes: u64,
    /// Time to wait for an upstream's response headers. Default 60s.
    pub upstream_timeout: Duration,
    /// Time in-flight requests on a replaced slot get to finish before it may be
    /// stopped. Default 30s.
    pub drain_timeout: Duration,
    /// Limits and trust on the public listener (`edge.rs`).
    pub edge: ProxyEdge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Public address of the built-in proxy for this service; `None` when an external
    /// router (nginx, HAProxy, Traefik, Caddy) serves the traffic instead.
    pub listen: Option<SocketAddr>,
    /// Host header values routed to this service on `listen`. Empty = this service is
    /// the default for its listener (at most one default per listener).
    pub hosts: Vec<String>,
    /// Optional second listener that always reaches the idle/preview slot.
    pub preview_listen: Option<SocketAddr>,
    pub runtime: RuntimeConfig,
    pub health: HealthConfig,
    pub smoke: SmokeConfig,
    pub watch: WatchConfig,
    /// Where traffic is pointed. Default: the built-in proxy.
    pub router: RouterConfig,
    /// Blue-green (default) or canary steps.
    pub strategy: Strategy,
    /// Shadow live traffic to the new slot before the switch. Default: off.
    pub mirror: Option<MirrorConfig>,
    /// Metric analysis for canary steps and the watch. Default: none.
    pub analysis: Option<AnalysisConfig>,
    /// Commands and HTTP calls run at named points of a deployment, in file order.
    /// Default: none.
    pub hooks: Vec<Hook>,
    /// The service's PostgreSQL database: backups, migrations and the compatibility
    /// gate as one phase of a deployment. Default: none.
    pub database: Option<DatabaseConfig>,
    /// How long the previous slot stays running after a successful deployment, for
    /// instant rollback. Default 5m.
    pub warm_for: Duration,
    /// Supervision of the live release between deployments.
    pub supervise: SuperviseConfig,
    /// `environment` of the service, else of the file (`production` makes the CLI ask
    /// for confirmation before deploy, rollback and destructive `db` commands).
    /// Default: none.
    pub environment: Option<String>,
    /// Retrying a failed request on the previous release during a deployment.
    pub shield: super::shield::ShieldConfig,
    /// The data plane's burst trigger; `None` = off (the default).
    pub burst: Option<super::shield::BurstConfig>,
    /// `Some` when the slots serve TLS (`[services.<name>.upstream_tls]`): the proxy,
    /// health checks and smoke tests then speak HTTPS to them with this trust.
    pub upstream_tls: Option<crate::tls::ClientTls>,
}

impl ServiceConfig {
    /// Whether the CLI must confirm changes to this service.
    pub fn is_production(&self) -> bool {
        self.environment.as_deref() == Some("production")
    }
}

/// `[services.<name>.supervise]`: between deployments the live release is checked
/// with the service's health checks at their interval; after `unhealthy_threshold`
/// failed rounds (at once if it exited) it is restarted through its runtime, with a
/// backoff doubling from 1s up to `max_backoff`, or traffic fails over to a healthy
/// warm standby when `failover` allows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperviseConfig {
    /// Default true.
    pub enabled: bool,
    /// Switch to a healthy warm standby (the previous release) when the live release
    /// fails. Default false: an older release taking traffic on its own is a decision
    /// a team makes, not a default.
    pub failover: bool,
    /// Longest wait between two restarts of a failing live release. Default 60s.
    pub max_backoff: Duration,
}

impl Default for SuperviseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failover: false,
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Time between two rounds of checks. Default 1s.
    pub interval: Duration,
    /// Time one probe may take. Default 2s.
    pub timeout: Duration,
    /// Consecutive passing rounds before a slot counts as healthy. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failing rounds before a slot counts as unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// Overall time a new slot has to become healthy. Default 60s.
    pub deadline: Duration,
    /// All must pass for a round to pass. Empty = a TCP connect to the slot's port.
    pub checks: Vec<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub name: String,
    pub probe: Probe,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http(HttpProbe),
    /// Connect to the slot's port.
    Tcp,
    /// Run argv (placeholders as in the runtime command); exit 0 passes.
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbe {
    /// Path and query, starting with `/`.
    pub path: String,
    /// Expected status. Default: any 2xx.
    pub expect_status: Option<u16>,
    /// Conditions on the JSON body: dotted path → expected value.
    pub json: Vec<JsonCondition>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
}

/// `checks.database = "healthy"`: the value at a dotted path (array indexes allowed,
/// `items.0.id`) must equal `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCondition {
    pub path: String,
    pub expected: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmokeConfig {
    /// Run in order; `{{name}}` in a later step's path, header values or body is
    /// replaced by a value captured earlier.
    pub steps: Vec<SmokeStep>,
    /// Time one request may take. Default 5s.
    pub timeout: Duration,
    pub max_avg_latency: Option<Duration>,
    pub max_p95_latency: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmokeStep {
    pub name: String,
    /// Upper-case HTTP method. Default GET.
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub expect_status: Option<u16>,
    pub expect_body_contains: Option<String>,
    pub expect_json: Vec<JsonCondition>,
    /// Variable name → dotted JSON path in this step's response.
    pub capture: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// How long the new slot is watched after the switch. Default 30s; 0 = no watch.
    pub duration: Duration,
    /// Time between two samples of the proxy's per-slot statistics. Default 1s.
    pub interval: Duration,
    /// Trailing window the rates and percentiles are computed over. Default 10s.
    pub window: Duration,
    pub error_rate: Option<ErrorRateTrigger>,
    pub p95_latency: Option<LatencyTrigger>,
    /// Consecutive failed health rounds during the watch that trigger a rollback.
    /// Default 3; 0 disables.
    pub health_failures: u32,
}

/// Roll back when the share of failed requests (5xx and upstream failures, not client
/// aborts) over the window stays above `max` for `for_`, once the window holds at
/// least `min_requests` requests.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRateTrigger {
    /// A fraction, 0.05 = 5 %.
    pub max: f64,
    pub for_: Duration,
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyTrigger {
    pub max: Duration,
    pub for_: Duration,
    pub min_requests: u64,
}

// ---------------------------------------------------------------------------------
// Defaults. The parser fills absent keys from these, so they are the one place a
// default is written down (README and examples/cutover.toml repeat them for people).
// ---------------------------------------------------------------------------------

impl Default for DaemonConfig {
    /// `.cutover`, still relative: the parser resolves it against the config file.
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from(".cutover"),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: None,
            token_env: "CUTOVER_TOKEN".to_string(),
            edge: ApiEdge::default(),
            tls: None,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            preview_header: "x-cutover-preview".to_string(),
            preview_cookie: "cutover-preview".to_string(),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 10 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            edge: ProxyEdge::default(),
        }
    }
}

impl ServiceConfig {
    /// Default for [`ServiceConfig::warm_for`].
    pub const DEFAULT_WARM_FOR: Duration = Duration::from_secs(5 * 60);
}

impl Default for HealthConfig {
    /// 1s interval, 2s timeout, 2 to pass, 3 to fail, 60s deadline, TCP connect.
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            deadline: Duration::from_secs(60),
            checks: Vec::new(),
        }
    }
}

impl Default for SmokeConfig {
    /// No steps, 5s per request, no latency budget.
    fn default() -> Self {
        SmokeConfig {
            steps: Vec::new(),
            timeout: Duration::from_secs(5),
            max_avg_latency: None,
            max_p95_latency: None,
        }
    }
}

impl Default for WatchConfig {
    /// Watch 30s, sample every 1s over a 10s window, roll back after 3 failed health
    /// rounds; no error-rate or latency trigger.
    fn default() -> Self {
        WatchConfig {
            duration: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            window: Duration::from_secs(10),
            error_rate: None,
            p95_latency: None,
            health_failures: 3,
        }
    }
}

impl ErrorRateTrigger {
    /// Default for `min_requests` of both triggers.
    pub const DEFAULT_MIN_REQUESTS: u64 = 20;
}
