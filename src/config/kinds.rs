//! The validated types of each runtime kind (where a slot runs: `process`, `docker`,
//! `compose`, `kubernetes`) and each router kind (where traffic is pointed: `builtin`,
//! `nginx`, `haproxy`, `traefik`, `caddy`, `dns`, `kubernetes`). The Kubernetes ones
//! are in `kube_types.rs`.
//!
//! Like `model.rs` and `delivery.rs`, only types: the rules that produce them are in
//! `runtime.rs`, `runtime/*.rs` and `router/*.rs`, one file per kind. Kept apart from
//! those rules so that `model.rs` can name them and the rules (and `rules.rs`) can use
//! `model.rs` without the config files importing each other in a circle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::kube_types::{KubernetesRouterConfig, KubernetesRuntimeConfig};
use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

// ----- runtimes -----

#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeConfig {
    Process(ProcessRuntimeConfig),
    Docker(DockerRuntimeConfig),
    Compose(ComposeRuntimeConfig),
    Kubernetes(KubernetesRuntimeConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRuntimeConfig {
    /// argv; each element may contain `{version}`, `{port}`, `{slot}`, `{service}`.
    pub command: Vec<String>,
    /// Extra environment, values may contain the same placeholders.
    pub env: BTreeMap<String, String>,
    /// Working directory (resolved against the config file's directory).
    pub workdir: Option<PathBuf>,
    /// Signal sent to stop a slot. Default SIGTERM.
    pub stop_signal: StopSignal,
    /// Time between the stop signal and SIGKILL. Default 10s.
    pub stop_grace: Duration,
    /// Fixed loopback port per slot; a free one is picked at start when absent.
    pub ports: Option<SlotPorts>,
}

impl ProcessRuntimeConfig {
    /// Default for [`ProcessRuntimeConfig::stop_grace`].
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
    /// Placeholders the runtime substitutes in `command`, `env` values and command
    /// probes, written `{name}`.
    pub const PLACEHOLDERS: [&'static str; 4] = ["version", "port", "slot", "service"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPorts {
    pub blue: u16,
    pub green: u16,
}

impl SlotPorts {
    pub fn get(&self, slot: Slot) -> u16 {
        match slot {
            Slot::Blue => self.blue,
            Slot::Green => self.green,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopSignal {
    #[default]
    Term,
    Int,
    Quit,
    Hup,
    Kill,
}

impl StopSignal {
    /// Conventional name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::Hup => "SIGHUP",
            StopSignal::Kill => "SIGKILL",
        }
    }

    /// Accepts `SIGTERM`, `TERM`, `sigterm`, `term`, ... for the five supported signals.
    pub fn parse(text: &str) -> Option<StopSignal> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Some(match bare {
            "TERM" => StopSignal::Term,
            "INT" => StopSignal::Int,
            "QUIT" => StopSignal::Quit,
            "HUP" => StopSignal::Hup,
            "KILL" => StopSignal::Kill,
            _ => return None,
        })
    }
}

/// `kind = "docker"`: one container per slot, through the Docker Engine API.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerRuntimeConfig {
    /// Image reference; `{version}`, `{slot}` and `{service}` are substituted, e.g.
    /// `registry.example.com/shop:{version}`.
    pub image: String,
    /// The port the app listens on inside the container (also passed as `PORT`).
    pub port: u16,
    /// Replaces the image's CMD (the entrypoint stays); placeholders allowed.
    pub command: Option<Vec<String>>,
    /// Extra environment; values may contain `{version}`, `{port}` (the container
    /// port), `{slot}`, `{service}`. Wins over `env_files`.
    pub env: BTreeMap<String, String>,
    /// `KEY=VALUE` files read at each start (resolved against the config file's
    /// directory), in order; later files win.
    pub env_files: Vec<PathBuf>,
    /// `source:target[:ro]`; a source starting with `/`, `./` or `../` is a bind mount
    /// (relative ones resolved against the config file's directory), else a named
    /// volume.
    pub volumes: Vec<String>,
    /// A user-defined network to attach the container to (it must exist).
    pub network: Option<String>,
    /// How Cutover reaches the container. Default [`DockerReach::Loopback`].
    pub reach: DockerReach,
    /// Fixed loopback host port per slot; a free one is picked at start when absent.
    pub ports: Option<SlotPorts>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU limit in CPUs (e.g. 1.5).
    pub cpus: Option<f64>,
    /// Docker restart policy. Default `on-failure`.
    pub restart: DockerRestart,
    /// Signal sent to stop a container. Default SIGTERM.
    pub stop_signal: StopSignal,
    /// Time between the stop signal and SIGKILL. Default 10s.
    pub stop_grace: Duration,
    /// How many releases before the current ones keep their image for a fast
    /// rollback; older images this runtime deployed are removed. Default 3.
    pub keep_releases: u32,
}

impl DockerRuntimeConfig {
    /// Default for [`DockerRuntimeConfig::keep_releases`].
    pub const DEFAULT_KEEP_RELEASES: u32 = 3;
}

/// Where Cutover connects to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DockerReach {
    /// The container port is published on `127.0.0.1:<slot port>`.
    #[default]
    Loopback,
    /// Nothing is published; Cutover connects to the container's address on
    /// `network` (the daemon must be able to route there, e.g. it runs on that
    /// network itself).
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DockerRestart {
    No,
    /// Restart when the process exits non-zero, at most `max_retries` times if given.
    #[default]
    OnFailure,
    OnFailureMax(u32),
    Always,
    UnlessStopped,
}

/// `kind = "compose"`: one Compose project per slot, named `<service>-<slot>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeRuntimeConfig {
    /// The compose file (resolved against the config file's directory).
    pub file: PathBuf,
    /// The component that receives the service's traffic; the file must publish its
    /// port as `127.0.0.1:${CUTOVER_PORT}:<container port>`.
    pub entry: String,
    /// Components that must be running (and healthy, if they have a HEALTHCHECK)
    /// before the switch and during the watch; always contains `entry`.
    pub public: Vec<String>,
    /// Extra environment for interpolation in the file; same placeholders as `docker`
    /// (`{port}` is the slot's host port).
    pub env: BTreeMap<String, String>,
    /// Fixed loopback port per slot; a free one is picked at start when absent.
    pub ports: Option<SlotPorts>,
    /// Time containers get between SIGTERM (or the file's `stop_signal`) and SIGKILL.
    /// Default 10s.
    pub stop_grace: Duration,
}

// ----- routers -----

/// Where traffic of a service is pointed.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RouterConfig {
    /// Cutover's own proxy (serves `listen`).
    #[default]
    Builtin,
    Nginx(NginxRouterConfig),
    Haproxy(HaproxyRouterConfig),
    Traefik(TraefikRouterConfig),
    Caddy(CaddyRouterConfig),
    Dns(DnsRouterConfig),
    Kubernetes(KubernetesRouterConfig),
}

impl RouterConfig {
    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            RouterConfig::Builtin => "builtin",
            RouterConfig::Nginx(_) => "nginx",
            RouterConfig::Haproxy(_) => "haproxy",
            RouterConfig::Traefik(_) => "traefik",
            RouterConfig::Caddy(_) => "caddy",
            RouterConfig::Dns(_) => "dns",
            RouterConfig::Kubernetes(_) => "kubernetes",
        }
    }

    /// Whether Cutover's own proxy serves this service.
    pub fn is_builtin(&self) -> bool {
        matches!(self, RouterConfig::Builtin)
    }
}

/// nginx: Cutover owns one include file (an `upstream` block and a loopback
/// verification server), tests the full config, swaps the file, reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct NginxRouterConfig {
    /// The file Cutover owns, included by the user's config inside `http { }`.
    pub include: PathBuf,
    /// Name of the rendered `upstream` block. Default: the service name.
    pub upstream: String,
    /// Tests the whole configuration. Default `["nginx", "-t"]`.
    pub test_command: Vec<String>,
    /// Makes nginx load it. Default `["nginx", "-s", "reload"]`.
    pub reload_command: Vec<String>,
    /// Loopback address of the verification server rendered into the include: Cutover
    /// asks nginx there which upstream answered (`X-Cutover-Upstream`).
    pub verify_listen: SocketAddr,
    /// Path requested through the verification server. Default `/`.
    pub verify_path: String,
    /// Time the test, the reload and the verification may take. Default 10s.
    pub timeout: Duration,
    /// Idle keep-alive connections nginx keeps to the slots (`keepalive N`). Default
    /// 16; 0 renders no `keepalive`.
    pub keepalive: u32,
}

/// Where an admin endpoint listens.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminAddr {
    Unix(PathBuf),
    /// `ip:port` or `host:port` (resolved at each connection).
    Tcp(Endpoint),
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            AdminAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// HAProxy: the runtime API (`set server`, `set weight`, `show servers state`,
/// `show stat`) on a backend with one server per slot.
#[derive(Debug, Clone, PartialEq)]
pub struct HaproxyRouterConfig {
    /// The stats socket with `level admin`: a unix socket path, `127.0.0.1:PORT` or
    /// `host:PORT`.
    pub admin: AdminAddr,
    /// Backend holding the two slot servers. Default: the service name.
    pub backend: String,
    /// Server names of the slots in that backend. Default `blue` and `green`.
    pub blue_server: String,
    pub green_server: String,
    /// Weight of the live server (HAProxy's 1..=256). Default 100.
    pub weight: u32,
    /// Time one runtime API exchange may take. Default 5s.
    pub timeout: Duration,
}

/// Traefik: a file-provider dynamic configuration holding a weighted service over
/// `<service>-blue` and `<service>-green`, verified through Traefik's API.
#[derive(Debug, Clone, PartialEq)]
pub struct TraefikRouterConfig {
    /// The dynamic configuration file Cutover owns (YAML), inside the directory the
    /// file provider watches.
    pub file: PathBuf,
    /// Traefik's API (`api.insecure` or an entrypoint serving `api@internal`):
    /// `ip:port` or `host:port`.
    pub api: Endpoint,
    /// Where `/metrics` (Prometheus) is served. Default: the API address.
    pub metrics: Endpoint,
    /// The provider's name in Traefik's service names (`web@file`). Default `file`.
    pub provider: String,
    /// Time Traefik has to load a change. Default 10s.
    pub timeout: Duration,
}

/// Caddy: the admin API, on the `reverse_proxy` handler tagged `"@id"`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaddyRouterConfig {
    /// Caddy's admin endpoint (`ip:port` or `host:port`). Default `127.0.0.1:2019`.
    pub admin: Endpoint,
    /// The `@id` of the `reverse_proxy` handler. Default `cutover-<service>`.
    pub id: String,
    /// Time one admin call (and the check of the running config) may take. Default 10s.
    pub timeout: Duration,
}

/// DNS: one name's address records on the zone's primary server, replaced by an RFC
/// 2136 dynamic update signed with a TSIG key, with a TXT record beside it naming the
/// live slot.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsRouterConfig {
    /// The primary (authoritative) server that accepts updates: `ip:port` or
    /// `host:port` (DNS over TCP).
    pub server: Endpoint,
    /// The zone the name is in, fully qualified (`example.com.`).
    pub zone: String,
    /// The name Cutover points, fully qualified. Default `<service>.<zone>`.
    pub name: String,
    /// The records' TTL: how long resolvers may keep answering with the previous
    /// slot's address. Default 60s.
    pub ttl: Duration,
    /// The key the updates are signed with.
    pub key: TsigKey,
    /// What the record says for each slot; `None`: the slot endpoint's own address.
    pub addresses: Option<BTreeMap<Slot, Vec<std::net::IpAddr>>>,
    /// Time one exchange with the server may take. Default 5s.
    pub timeout: Duration,
}

/// A TSIG key (RFC 8945), as `tsig-keygen` writes it. The secret never appears in
/// `Debug` output.
#[derive(Clone, PartialEq)]
pub struct TsigKey {
    /// The key's name, as the server knows it.
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}
