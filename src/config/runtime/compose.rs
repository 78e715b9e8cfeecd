//! Rules for `[services.<name>.runtime]` with `kind = "compose"`: one Compose project
//! per slot.
//!
//! Validated here down to what the Compose runtime needs at start (the file, the entry
//! and public component names, env placeholders), so a mistake is a config error, not
//! a failed deployment. A key that belongs to another kind is reported as unknown for
//! *this* kind instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::kinds::{ComposeRuntimeConfig, ProcessRuntimeConfig, RuntimeConfig, SlotPorts};
use crate::config::raw::RawPorts;
use crate::config::read::{read, Problems, Sub};
use crate::config::rules::{duration, env_ok, ports};
use crate::config::values::RawDuration;

/// `[services.<name>.runtime]` with `kind = "compose"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComposeRuntime {
    /// Already used to choose this struct; listed so it is a known key.
    #[allow(dead_code)]
    pub kind: Option<String>,
    pub file: Option<String>,
    pub entry: Option<String>,
    pub public: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub ports: Option<Sub<RawPorts>>,
    pub stop_grace: Option<RawDuration>,
}

pub(super) fn compose(
    at: &str,
    value: &toml::Value,
    base: &Path,
    p: &mut Problems,
) -> (Option<RuntimeConfig>, Option<SlotPorts>) {
    let Some(r) = read::<RawComposeRuntime>(value, at, p) else {
        return (None, None);
    };
    let file = r
        .required(
            "file",
            r.raw.file.as_deref(),
            "a compose file like \"compose.yaml\"",
            p,
        )
        .and_then(|f| {
            if f.trim().is_empty() {
                p.add(r.key("file"), "expected a compose file path, got \"\"");
                return None;
            }
            Some(base.join(f))
        });
    let component = |p: &mut Problems, key: String, name: &str| {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            p.add(
                key,
                format!("expected a compose service name, got {name:?}"),
            );
        }
        ok.then(|| name.to_string())
    };
    let entry = r
        .required(
            "entry",
            r.raw.entry.as_deref(),
            "the compose service that receives the traffic, like \"frontend\"",
            p,
        )
        .and_then(|e| component(p, r.key("entry"), e));
    let public = r.optional("public", r.raw.public.as_ref(), |list| {
        let before = p.count();
        let names: Vec<String> = list
            .iter()
            .enumerate()
            .filter_map(|(i, n)| component(p, format!("{}[{i}]", r.key("public")), n))
            .collect();
        (p.count() == before).then_some(names)
    });
    let env = r.optional("env", r.raw.env.as_ref(), |env| env_ok(&r, env, p));
    let ports = r.optional("ports", r.raw.ports.as_ref(), |sub| {
        ports(&r.key("ports"), sub, p)
    });
    let stop_grace = duration(
        &r,
        "stop_grace",
        r.raw.stop_grace,
        ProcessRuntimeConfig::DEFAULT_STOP_GRACE,
    );
    let fixed = ports.flatten();
    let config = (|| {
        let entry = entry?;
        let mut public = public?.unwrap_or_default();
        if !public.contains(&entry) {
            public.insert(0, entry.clone());
        }
        Some(RuntimeConfig::Compose(ComposeRuntimeConfig {
            file: file?,
            entry,
            public,
            env: env?.unwrap_or_default(),
            ports: ports?,
            stop_grace: stop_grace?,
        }))
    })();
    (config, fixed)
}
