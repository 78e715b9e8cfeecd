//! `kind = "nginx"`: the include file Cutover owns, the commands that test and reload
//! nginx, and the loopback verification server.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::kinds::NginxRouterConfig;
use crate::config::read::{Problems, Read};
use crate::config::rules::{addr, file, int_range, name, timeout, url_path};
use crate::config::values::RawDuration;

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
