//! `kind = "haproxy"`: the runtime API's admin socket (unix path, or TCP `ip:port` or
//! `host:port`),
//! the backend and its two slot servers, and the live server's weight.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::kinds::{AdminAddr, HaproxyRouterConfig};
use crate::config::read::{read, Problems, Read, Sub};
use crate::config::rules::{int_range, name, timeout};
use crate::config::values::RawDuration;
use crate::domain::endpoint::Endpoint;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHaproxy {
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
pub(super) struct RawServers {
    blue: Option<String>,
    green: Option<String>,
}

pub(super) fn haproxy(
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

fn admin_addr(p: &mut Problems, key: String, text: &str, base: &Path) -> Option<AdminAddr> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix:") {
        return Some(AdminAddr::Unix(base.join(path)));
    }
    if t.starts_with('/') || t.starts_with("./") {
        return Some(AdminAddr::Unix(base.join(t)));
    }
    match t.parse::<Endpoint>() {
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
