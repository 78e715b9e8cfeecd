//! `kind = "nginx"`: the include file Cutover owns, the commands that test and reload
//! nginx, and the loopback verification server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{file, name, timeout};
use crate::config::read::{Problems, Read};
use crate::config::validate::{addr, int_range, url_path};
use crate::config::values::RawDuration;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNginx {
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

pub(super) fn nginx(
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
