//! Rules for `[services.<name>.router]`: where the service's traffic is pointed.
//!
//! `kind = "builtin"` (the default, also when the table is absent) is Cutover's own
//! proxy. The other kinds point a load balancer the user already runs at the live slot,
//! and each kind has its own keys, so the table is read in two steps: first `kind`
//! alone, then the whole table as that kind's struct (`deny_unknown_fields`), so an
//! nginx key under `kind = "haproxy"` is reported as unknown for HAProxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::read::{join, read, Problems, Read, Sub};
use super::validate::{addr, duration, int_range, positive, url_path};
use super::values::{parse_socket_addr, RawDuration};

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
    Tcp(SocketAddr),
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
    /// The stats socket with `level admin`: a unix socket path or `127.0.0.1:PORT`.
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
    /// Traefik's API (`api.insecure` or an entrypoint serving `api@internal`).
    pub api: SocketAddr,
    /// Where `/metrics` (Prometheus) is served. Default: the API address.
    pub metrics: SocketAddr,
    /// The provider's name in Traefik's service names (`web@file`). Default `file`.
    pub provider: String,
    /// Time Traefik has to load a change. Default 10s.
    pub timeout: Duration,
}

/// Caddy: the admin API, on the `reverse_proxy` handler tagged `"@id"`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaddyRouterConfig {
    /// Caddy's admin endpoint. Default `127.0.0.1:2019`.
    pub admin: SocketAddr,
    /// The `@id` of the `reverse_proxy` handler. Default `cutover-<service>`.
    pub id: String,
    /// Time one admin call (and the check of the running config) may take. Default 10s.
    pub timeout: Duration,
}

/// Marker for `[services.<name>.router]` in `raw.rs`; the table is read by kind here.
#[derive(Debug, Default, Deserialize)]
pub struct RawRouter {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNginx {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    include: Option<String>,
    upstream: Option<String>,
    test_command: Option<Vec<String>>,
    reload_command: Option<Vec<String>>,
    verify_listen: Option<String>,
    verify_path: Option<String>,
    timeout: Option<RawDuration>,
    keepalive: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHaproxy {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    admin: Option<String>,
    backend: Option<String>,
    servers: Option<Sub<RawServers>>,
    weight: Option<i64>,
    timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServers {
    blue: Option<String>,
    green: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraefik {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    file: Option<String>,
    api: Option<String>,
    metrics: Option<String>,
    provider: Option<String>,
    timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaddy {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    admin: Option<String>,
    id: Option<String>,
    timeout: Option<RawDuration>,
}

const KINDS: &str = "\"builtin\", \"nginx\", \"haproxy\", \"traefik\", \"caddy\"";

/// Reads `[<service>.router]`; an absent table is the built-in proxy.
pub(super) fn router(
    service: &str,
    service_at: &str,
    sub: Option<&Sub<RawRouter>>,
    base: &Path,
    p: &mut Problems,
) -> Option<RouterConfig> {
    let at = join(service_at, "router");
    let Some(sub) = sub else {
        return Some(RouterConfig::Builtin);
    };
    let value = sub.value();
    let Some(table) = value.as_table() else {
        p.add(&at, format!("expected a table with kind = one of {KINDS}"));
        return None;
    };
    let kind = match table.get("kind") {
        None => "builtin",
        Some(toml::Value::String(k)) => k.as_str(),
        Some(other) => {
            p.add(
                join(&at, "kind"),
                format!(
                    "expected one of {KINDS}, got {}",
                    super::read::describe(other)
                ),
            );
            return None;
        }
    };
    match kind {
        "builtin" => {
            let extra: Vec<&String> = table.keys().filter(|k| *k != "kind").collect();
            for k in &extra {
                p.add(
                    join(&at, k),
                    format!("unknown key `{k}`: the builtin router has no settings besides `kind`"),
                );
            }
            extra.is_empty().then_some(RouterConfig::Builtin)
        }
        "nginx" => nginx(service, &read(value, &at, p)?, base, p).map(RouterConfig::Nginx),
        "haproxy" => haproxy(service, &read(value, &at, p)?, base, p).map(RouterConfig::Haproxy),
        "traefik" => traefik(&read(value, &at, p)?, base, p).map(RouterConfig::Traefik),
        "caddy" => caddy(service, &read(value, &at, p)?, p).map(RouterConfig::Caddy),
        other => {
            p.add(
                join(&at, "kind"),
                format!("expected one of {KINDS}, got {other:?}"),
            );
            None
        }
    }
}

fn nginx(
    service: &str,
    r: &Read<RawNginx>,
    base: &Path,
    p: &mut Problems,
) -> Option<NginxRouterConfig> {
    let include = file(r, "include", r.raw.include.as_deref(), base, p);
    let upstream = name(r, "upstream", r.raw.upstream.clone(), service, p);
    let argv = |field: &str, v: &Option<Vec<String>>, default: &[&str], p: &mut Problems| {
        let v = r.or(
            field,
            v.clone(),
            default.iter().map(|s| s.to_string()).collect(),
        )?;
        if v.first().is_none_or(|s| s.trim().is_empty()) {
            p.add(
                r.key(field),
                format!("expected an argv like {default:?}, got {v:?}"),
            );
            return None;
        }
        Some(v)
    };
    let test_command = argv("test_command", &r.raw.test_command, &["nginx", "-t"], p);
    let reload_command = argv(
        "reload_command",
        &r.raw.reload_command,
        &["nginx", "-s", "reload"],
        p,
    );
    let verify_listen = r
        .required(
            "verify_listen",
            r.raw.verify_listen.as_deref(),
            "a free loopback address like \"127.0.0.1:8099\" for Cutover's verification server in the include",
            p,
        )
        .and_then(|s| addr(p, r.key("verify_listen"), s));
    let verify_path = r
        .or("verify_path", r.raw.verify_path.clone(), "/".into())
        .and_then(|s| url_path(p, r.key("verify_path"), &s));
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(10), p);
    let keepalive = r
        .or("keepalive", r.raw.keepalive, 16)
        .and_then(|v| int_range(p, r.key("keepalive"), v, 0, 10_000))
        .map(|v| v as u32);
    Some(NginxRouterConfig {
        include: include?,
        upstream: upstream?,
        test_command: test_command?,
        reload_command: reload_command?,
        verify_listen: verify_listen?,
        verify_path: verify_path?,
        timeout: timeout?,
        keepalive: keepalive?,
    })
}

fn haproxy(
    service: &str,
    r: &Read<RawHaproxy>,
    base: &Path,
    p: &mut Problems,
) -> Option<HaproxyRouterConfig> {
    let admin = r
        .required(
            "admin",
            r.raw.admin.as_deref(),
            "the runtime API socket: a unix socket path like \"/run/haproxy/admin.sock\" or \"127.0.0.1:9999\"",
            p,
        )
        .and_then(|s| admin_addr(p, r.key("admin"), s, base));
    let backend = name(r, "backend", r.raw.backend.clone(), service, p);
    let servers = r.optional("servers", r.raw.servers.as_ref(), |sub| {
        let at = r.key("servers");
        let s = read::<RawServers>(sub.value(), &at, p)?;
        let blue = name(&s, "blue", s.raw.blue.clone(), "blue", p);
        let green = name(&s, "green", s.raw.green.clone(), "green", p);
        let (blue, green) = (blue?, green?);
        if blue == green {
            p.add(
                s.key("green"),
                format!("expected a server name different from blue's, got {green:?} for both"),
            );
            return None;
        }
        Some((blue, green))
    });
    let weight = r
        .or("weight", r.raw.weight, 100)
        .and_then(|v| int_range(p, r.key("weight"), v, 1, 256))
        .map(|v| v as u32);
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(5), p);
    let (blue_server, green_server) = servers?.unwrap_or(("blue".into(), "green".into()));
    Some(HaproxyRouterConfig {
        admin: admin?,
        backend: backend?,
        blue_server,
        green_server,
        weight: weight?,
        timeout: timeout?,
    })
}

fn traefik(r: &Read<RawTraefik>, base: &Path, p: &mut Problems) -> Option<TraefikRouterConfig> {
    let file = file(r, "file", r.raw.file.as_deref(), base, p);
    let api = r
        .required(
            "api",
            r.raw.api.as_deref(),
            "Traefik's API address like \"127.0.0.1:8080\"",
            p,
        )
        .and_then(|s| addr(p, r.key("api"), s));
    let metrics = r.optional("metrics", r.raw.metrics.as_deref(), |s| {
        addr(p, r.key("metrics"), s)
    });
    let provider = name(r, "provider", r.raw.provider.clone(), "file", p);
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(10), p);
    let api = api?;
    Some(TraefikRouterConfig {
        file: file?,
        api,
        metrics: metrics?.unwrap_or(api),
        provider: provider?,
        timeout: timeout?,
    })
}

fn caddy(service: &str, r: &Read<RawCaddy>, p: &mut Problems) -> Option<CaddyRouterConfig> {
    let admin = r
        .optional("admin", r.raw.admin.as_deref(), |s| {
            addr(p, r.key("admin"), s)
        })
        .map(|a| a.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 2019))));
    let id = name(r, "id", r.raw.id.clone(), &format!("cutover-{service}"), p);
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(10), p);
    Some(CaddyRouterConfig {
        admin: admin?,
        id: id?,
        timeout: timeout?,
    })
}

fn file<T>(
    r: &Read<T>,
    field: &str,
    value: Option<&str>,
    base: &Path,
    p: &mut Problems,
) -> Option<PathBuf> {
    let v = r.required(field, value, "a file path", p)?;
    if v.trim().is_empty() {
        p.add(r.key(field), "expected a file path, got \"\"");
        return None;
    }
    Some(base.join(v))
}

/// A name used inside the load balancer's config: non-empty, no whitespace or quotes.
fn name<T>(
    r: &Read<T>,
    field: &str,
    value: Option<String>,
    default: &str,
    p: &mut Problems,
) -> Option<String> {
    let v = r.or(field, value, default.to_string())?;
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        p.add(
            r.key(field),
            format!("expected a name of letters, digits, `-`, `_`, `.`, got {v:?}"),
        );
        return None;
    }
    Some(v)
}

fn timeout<T>(
    r: &Read<T>,
    value: Option<RawDuration>,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    duration(r, "timeout", value, default).and_then(|d| positive(p, r.key("timeout"), d))
}

fn admin_addr(p: &mut Problems, key: String, text: &str, base: &Path) -> Option<AdminAddr> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix:") {
        return Some(AdminAddr::Unix(base.join(path)));
    }
    if t.starts_with('/') || t.starts_with("./") {
        return Some(AdminAddr::Unix(base.join(t)));
    }
    match parse_socket_addr(t) {
        Ok(a) => Some(AdminAddr::Tcp(a)),
        Err(m) => {
            p.add(
                key,
                format!("{m}, or a unix socket path like \"/run/haproxy/admin.sock\""),
            );
            None
        }
    }
}

/// With an external router Cutover's proxy does not serve the service, so its proxy
/// keys would silently do nothing: reject them. `Some(None)` when none is set.
pub(super) fn no_proxy_keys(
    r: &Read<super::raw::RawService>,
    kind: &str,
    p: &mut Problems,
) -> Option<Option<SocketAddr>> {
    let before = p.count();
    for (key, set) in [
        ("listen", r.raw.listen.is_some()),
        ("hosts", r.raw.hosts.is_some()),
        ("preview_listen", r.raw.preview_listen.is_some()),
    ] {
        if set {
            p.add(
                r.key(key),
                format!("`{key}` configures Cutover's built-in proxy, which does not serve this service: its router is kind = \"{kind}\" (remove `{key}`, or use kind = \"builtin\")"),
            );
        }
    }
    (p.count() == before).then_some(None)
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
