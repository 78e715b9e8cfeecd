//! Rules for `[services.<name>.router]`: where the service's traffic is pointed.
//!
//! `kind = "builtin"` (the default, also when the table is absent) is Cutover's own
//! proxy. The other kinds point a load balancer the user already runs at the live slot,
//! and each kind has its own keys, so the table is read in two steps: first `kind`
//! alone, then the whole table as that kind's struct (`deny_unknown_fields`), so an
//! nginx key under `kind = "haproxy"` is reported as unknown for HAProxy.
//!
//! This file reads `kind` and dispatches, and holds the rules every kind shares
//! (file paths, names used inside the load balancer's config, timeouts) and the rule
//! that an external router takes no proxy keys; each kind's keys, defaults and raw
//! struct are in `nginx.rs`, `haproxy.rs`, `traefik.rs` and `caddy.rs`.

mod caddy;
mod haproxy;
mod nginx;
mod traefik;

pub use caddy::CaddyRouterConfig;
pub use haproxy::{AdminAddr, HaproxyRouterConfig};
pub use nginx::NginxRouterConfig;
pub use traefik::TraefikRouterConfig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use caddy::caddy;
use haproxy::haproxy;
use nginx::nginx;
use traefik::traefik;

use super::read::{join, read, Problems, Read, Sub};
use super::validate::{duration, positive};
use super::values::RawDuration;

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

/// Marker for `[services.<name>.router]` in `raw.rs`; the table is read by kind here.
#[derive(Debug, Default, Deserialize)]
pub struct RawRouter {}

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

pub(super) fn file<T>(
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
pub(super) fn name<T>(
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

pub(super) fn timeout<T>(
    r: &Read<T>,
    value: Option<RawDuration>,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    duration(r, "timeout", value, default).and_then(|d| positive(p, r.key("timeout"), d))
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
mod tests;
