//! `kind = "caddy"`: the admin API address and the `@id` of the `reverse_proxy`
//! handler Cutover changes.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::kinds::CaddyRouterConfig;
use crate::config::read::{Problems, Read};
use crate::config::rules::{endpoint, name, timeout};
use crate::config::values::RawDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaddy {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    admin: Option<String>,
    id: Option<String>,
    timeout: Option<RawDuration>,
}

pub(super) fn caddy(
    service: &str,
    r: &Read<RawCaddy>,
    p: &mut Problems,
) -> Option<CaddyRouterConfig> {
    let admin = r
        .optional("admin", r.raw.admin.as_deref(), |s| {
            endpoint(p, r.key("admin"), s)
        })
        .map(|a| a.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 2019)).into()));
    let id = name(r, "id", r.raw.id.clone(), &format!("cutover-{service}"), p);
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(10), p);
    Some(CaddyRouterConfig {
        admin: admin?,
        id: id?,
        timeout: timeout?,
    })
}
