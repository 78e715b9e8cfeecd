//! Rules for `[services.<name>.runtime]` with `kind = "docker"`: one container per slot.
//!
//! Validated here down to what the Docker runtime needs at start (an image reference
//! with known placeholders, volume syntax, memory sizes, restart policies), so a
//! mistake is a config error, not a failed deployment. A key that belongs to another
//! kind is reported as unknown for *this* kind instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::kinds::{
    DockerReach, DockerRestart, DockerRuntimeConfig, ProcessRuntimeConfig, RuntimeConfig, SlotPorts,
};
use crate::config::raw::RawPorts;
use crate::config::read::{read, Problems, Sub};
use crate::config::rules::{
    argv_ok, container_port, duration, env_ok, image, int_range, ports, stop_signal,
};
use crate::config::values::RawDuration;

/// `[services.<name>.runtime]` with `kind = "docker"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerRuntime {
    /// Already used to choose this struct; listed so it is a known key.
    #[allow(dead_code)]
    pub kind: Option<String>,
    pub image: Option<String>,
    pub port: Option<i64>,
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub env_files: Option<Vec<String>>,
    pub volumes: Option<Vec<String>>,
    pub network: Option<String>,
    pub reach: Option<String>,
    pub ports: Option<Sub<RawPorts>>,
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    pub restart: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_grace: Option<RawDuration>,
    pub keep_releases: Option<i64>,
}

pub(super) fn docker(
    at: &str,
    value: &toml::Value,
    base: &Path,
    p: &mut Problems,
) -> (Option<RuntimeConfig>, Option<SlotPorts>) {
    let Some(r) = read::<RawDockerRuntime>(value, at, p) else {
        return (None, None);
    };
    let image = image(&r, r.raw.image.as_deref(), p);
    let port = container_port(&r, r.raw.port, p);
    let command = r.optional("command", r.raw.command.as_ref(), |argv| {
        argv_ok(p, &r.key("command"), argv).then(|| argv.clone())
    });
    let env = r.optional("env", r.raw.env.as_ref(), |env| env_ok(&r, env, p));
    let env_files = r.optional("env_files", r.raw.env_files.as_ref(), |files| {
        let before = p.count();
        for (i, f) in files.iter().enumerate() {
            if f.trim().is_empty() {
                p.add(
                    format!("{}[{i}]", r.key("env_files")),
                    "expected a file path, got \"\"",
                );
            }
        }
        (p.count() == before).then(|| files.iter().map(|f| base.join(f)).collect::<Vec<_>>())
    });
    let volumes = r.optional("volumes", r.raw.volumes.as_ref(), |vols| {
        let before = p.count();
        let out: Vec<String> = vols
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                volume(v, base)
                    .map_err(|m| p.add(format!("{}[{i}]", r.key("volumes")), m))
                    .ok()
            })
            .collect();
        (p.count() == before).then_some(out)
    });
    let network = r.optional("network", r.raw.network.as_deref(), |n| {
        if n.trim().is_empty() {
            p.add(r.key("network"), "expected a network name, got \"\"");
            return None;
        }
        Some(n.to_string())
    });
    let reach = r.optional("reach", r.raw.reach.as_deref(), |s| match s {
        "loopback" => Some(DockerReach::Loopback),
        "network" => Some(DockerReach::Network),
        other => {
            p.add(
                r.key("reach"),
                format!("expected \"loopback\" or \"network\", got {other:?}"),
            );
            None
        }
    });
    if reach == Some(Some(DockerReach::Network)) && r.raw.network.is_none() {
        p.add(
            r.key("reach"),
            "reach = \"network\" needs `network`, the user-defined network Cutover connects through",
        );
    }
    let ports = r.optional("ports", r.raw.ports.as_ref(), |sub| {
        ports(&r.key("ports"), sub, p)
    });
    if reach == Some(Some(DockerReach::Network)) && r.raw.ports.is_some() {
        p.add(
            r.key("ports"),
            "host ports are not used with reach = \"network\" (nothing is published)",
        );
    }
    let memory = r.optional("memory", r.raw.memory.as_deref(), |m| {
        parse_bytes(m).map_err(|e| p.add(r.key("memory"), e)).ok()
    });
    let cpus = r.optional("cpus", r.raw.cpus, |c| {
        if c > 0.0 && c <= 1024.0 {
            Some(c)
        } else {
            p.add(
                r.key("cpus"),
                format!("expected a number of CPUs above 0 like 1.5, got {c}"),
            );
            None
        }
    });
    let restart = r.optional("restart", r.raw.restart.as_deref(), |s| {
        parse_restart(s)
            .map_err(|e| p.add(r.key("restart"), e))
            .ok()
    });
    let stop_signal = stop_signal(&r, r.raw.stop_signal.as_deref(), p);
    let stop_grace = duration(
        &r,
        "stop_grace",
        r.raw.stop_grace,
        ProcessRuntimeConfig::DEFAULT_STOP_GRACE,
    );
    let keep_releases = r.optional("keep_releases", r.raw.keep_releases, |n| {
        int_range(p, r.key("keep_releases"), n, 0, 1000).map(|n| n as u32)
    });

    let fixed = ports.flatten();
    let config = (|| {
        Some(RuntimeConfig::Docker(DockerRuntimeConfig {
            image: image?,
            port: port?,
            command: command?,
            env: env?.unwrap_or_default(),
            env_files: env_files?.unwrap_or_default(),
            volumes: volumes?.unwrap_or_default(),
            network: network?,
            reach: reach?.unwrap_or_default(),
            ports: ports?,
            memory: memory?,
            cpus: cpus?,
            restart: restart?.unwrap_or_default(),
            stop_signal: stop_signal?.unwrap_or_default(),
            stop_grace: stop_grace?,
            keep_releases: keep_releases?.unwrap_or(DockerRuntimeConfig::DEFAULT_KEEP_RELEASES),
        }))
    })();
    (config, fixed)
}

/// `source:target[:ro|:rw]`, with a relative bind source made absolute.
fn volume(text: &str, base: &Path) -> Result<String, String> {
    let expected = "expected \"source:/path/in/container\" or \"source:/path:ro\"";
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => return Err(format!("{expected}, got {text:?}")),
    };
    if source.is_empty() || !target.starts_with('/') {
        return Err(format!("{expected}, got {text:?}"));
    }
    if let Some(m) = mode {
        if m != "ro" && m != "rw" {
            return Err(format!(
                "expected the mode `ro` or `rw`, got {m:?} in {text:?}"
            ));
        }
    }
    let source = if source.starts_with("./") || source.starts_with("../") || source == "." {
        base.join(source).to_string_lossy().into_owned()
    } else {
        source.to_string()
    };
    Ok(match mode {
        Some(m) => format!("{source}:{target}:{m}"),
        None => format!("{source}:{target}"),
    })
}

/// `"512m"`, `"1g"`, `"1.5g"`, `"65536"` (bytes; k/m/g are powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && (n * mult as f64) >= 6.0 * 1024.0 * 1024.0 => {
            Ok((n * mult as f64) as u64)
        }
        Ok(_) => Err(format!(
            "expected a memory size of at least 6m (Docker's minimum), got {text:?}"
        )),
        Err(_) => Err(format!(
            "expected a memory size like \"512m\" or \"1g\", got {text:?}"
        )),
    }
}

fn parse_restart(text: &str) -> Result<DockerRestart, String> {
    Ok(match text {
        "no" => DockerRestart::No,
        "always" => DockerRestart::Always,
        "unless-stopped" => DockerRestart::UnlessStopped,
        "on-failure" => DockerRestart::OnFailure,
        other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) if n > 0 => DockerRestart::OnFailureMax(n),
            _ => {
                return Err(format!(
                "expected \"no\", \"on-failure\", \"on-failure:<max retries>\", \"always\" or \"unless-stopped\", got {other:?}"
            ))
            }
        },
    })
}
