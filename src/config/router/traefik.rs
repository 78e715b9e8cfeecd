//! `kind = "traefik"`: the file-provider dynamic configuration Cutover owns, Traefik's
//! API (verification) and metrics addresses, and the provider name.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::kinds::TraefikRouterConfig;
use crate::config::read::{Problems, Read};
use crate::config::rules::{endpoint, file, name, timeout};
use crate::config::values::RawDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraefik {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    file: Option<String>,
    api: Option<String>,
    metrics: Option<String>,
    provider: Option<String>,
    timeout: Option<RawDuration>,
}

pub(super) fn traefik(
    r: &Read<RawTraefik>,
    base: &Path,
    p: &mut Problems,
) -> Option<TraefikRouterConfig> {
    let file = file(r, "file", r.raw.file.as_deref(), base, p);
    let api = r
        .required(
            "api",
            r.raw.api.as_deref(),
            "Traefik's API address like \"127.0.0.1:8080\"",
            p,
        )
        .and_then(|s| endpoint(p, r.key("api"), s));
    let metrics = r.optional("metrics", r.raw.metrics.as_deref(), |s| {
        endpoint(p, r.key("metrics"), s)
    });
    let provider = name(r, "provider", r.raw.provider.clone(), "file", p);
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(10), p);
    let api = api?;
    let metrics = metrics?.unwrap_or_else(|| api.clone());
    Some(TraefikRouterConfig {
        file: file?,
        api,
        metrics,
        provider: provider?,
        timeout: timeout?,
    })
}
