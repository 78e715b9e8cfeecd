//! `kind = "traefik"`: the file-provider dynamic configuration Cutover owns, Traefik's
//! API (verification) and metrics addresses, and the provider name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{file, name, timeout};
use crate::config::read::{Problems, Read};
use crate::config::validate::addr;
use crate::config::values::RawDuration;

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
