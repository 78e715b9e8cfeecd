//! Rules for `[services.<name>.router]`: where the service's traffic is pointed.
//!
//! `kind = "builtin"` (the default, also when the table is absent) is Cutover's own
//! proxy. The other kinds point a load balancer the user already runs at the live slot,
//! and each kind has its own keys, so the table is read in two steps: first `kind`
//! alone, then the whole table as that kind's struct (`deny_unknown_fields`), so an
//! nginx key under `kind = "haproxy"` is reported as unknown for HAProxy.
//!
//! This file reads `kind` and dispatches; each kind's keys, defaults and raw struct are
//! in `nginx.rs`, `haproxy.rs`, `traefik.rs`, `caddy.rs`, `dns.rs` and
//! `kubernetes.rs` (its shared access rules in `../kube.rs`), the rules they share (file
//! paths, names used inside the load balancer's config, timeouts) in `rules.rs`, the
//! validated types in `kinds.rs`, and the rule that an external router takes no proxy
//! keys in `service.rs`.

mod caddy;
mod dns;
mod haproxy;
mod kubernetes;
mod nginx;
mod traefik;

use std::path::Path;

use caddy::caddy;
use dns::dns;
use haproxy::haproxy;
use kubernetes::kubernetes;
use nginx::nginx;
use traefik::traefik;

use super::kinds::RouterConfig;
use super::raw::RawRouter;
use super::read::{join, read, Problems, Sub};

const KINDS: &str =
    "\"builtin\", \"nginx\", \"haproxy\", \"traefik\", \"caddy\", \"dns\", \"kubernetes\"";

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
        "dns" => dns(service, &read(value, &at, p)?, base, p).map(RouterConfig::Dns),
        "kubernetes" => {
            kubernetes(service, &read(value, &at, p)?, base, p).map(RouterConfig::Kubernetes)
        }
        other => {
            p.add(
                join(&at, "kind"),
                format!("expected one of {KINDS}, got {other:?}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
