//! What a slot's container looks like, and what its inspection means: pure functions,
//! so the mapping between config, Docker's API shapes and Cutover's view is tested
//! without an engine.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum,
    HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use crate::config::{DockerReach, DockerRestart, DockerRuntimeConfig};
use crate::domain::Slot;
use crate::runtime::process::substitute;
use crate::runtime::{RuntimeHealth, SlotSpec, SlotStatus};

/// Label keys on every container Cutover creates.
pub const LABEL_SERVICE: &str = "io.cutover.service";
pub const LABEL_SLOT: &str = "io.cutover.slot";
pub const LABEL_VERSION: &str = "io.cutover.version";
pub const LABEL_DEPLOYMENT: &str = "io.cutover.deployment";

/// The slot's container name: predictable, so an operator finds it with `docker ps`
/// and two daemons can never create two containers for one slot.
pub fn container_name(service: &str, slot: Slot) -> String {
    format!("cutover-{service}-{slot}")
}

/// The name of the container the database proof starts outside both slots.
pub fn extra_name(service: &str) -> String {
    format!("cutover-{service}-extra")
}

/// Label on the extra container (instead of the slot label).
pub const LABEL_ROLE: &str = "io.cutover.role";

/// A slot's create request turned into the extra instance's: no slot label (slot
/// starts, stops and adoption look containers up by it), a role label, never
/// restarted.
pub fn extra_body(mut body: ContainerCreateBody) -> ContainerCreateBody {
    if let Some(labels) = body.labels.as_mut() {
        labels.remove(LABEL_SLOT);
        labels.insert(LABEL_ROLE.to_string(), "extra".to_string());
    }
    if let Some(host) = body.host_config.as_mut() {
        host.restart_policy = Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        });
    }
    body
}

/// The image reference for a release (`shop:{version}` → `shop:v2`).
pub fn image_ref(cfg: &DockerRuntimeConfig, spec: &SlotSpec) -> String {
    substitute(&cfg.image, spec, cfg.port)
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments skipped, `export ` and
/// surrounding quotes tolerated) in order.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE, got {line:?}", i + 1));
        };
        let v = v.trim();
        let unquoted = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.trim().to_string(), unquoted.to_string()));
    }
    Ok(out)
}

/// The environment: env files in order, then `env` (placeholders substituted), then
/// Cutover's own variables, later entries winning.
pub fn environment(
    cfg: &DockerRuntimeConfig,
    spec: &SlotSpec,
    from_files: Vec<(String, String)>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = from_files;
    env.extend(
        cfg.env
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v, spec, cfg.port))),
    );
    env.extend([
        ("PORT".to_string(), cfg.port.to_string()),
        ("CUTOVER_VERSION".to_string(), spec.version.clone()),
        ("CUTOVER_SLOT".to_string(), spec.slot.as_str().to_string()),
        ("CUTOVER_SERVICE".to_string(), spec.service.clone()),
    ]);
    env.extend(spec.env.iter().cloned());
    let mut seen = HashMap::new();
    for (i, (k, _)) in env.iter().enumerate() {
        seen.insert(k.clone(), i);
    }
    env.iter()
        .enumerate()
        .filter(|(i, (k, _))| seen[k] == *i)
        .map(|(_, (k, v))| format!("{k}={v}"))
        .collect()
}

/// The create request for `spec`, published on `host_port` when reached on loopback.
pub fn create_body(
    cfg: &DockerRuntimeConfig,
    spec: &SlotSpec,
    host_port: u16,
    env: Vec<String>,
) -> ContainerCreateBody {
    let exposed = format!("{}/tcp", cfg.port);
    let mut labels = HashMap::from([
        (LABEL_SERVICE.to_string(), spec.service.clone()),
        (LABEL_SLOT.to_string(), spec.slot.as_str().to_string()),
        (LABEL_VERSION.to_string(), spec.version.clone()),
    ]);
    if let Some(id) = spec.deployment {
        labels.insert(LABEL_DEPLOYMENT.to_string(), id.to_string());
    }
    let port_bindings = (cfg.reach == DockerReach::Loopback).then(|| {
        HashMap::from([(
            exposed.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(host_port.to_string()),
            }]),
        )])
    });
    let (name, max) = match cfg.restart {
        DockerRestart::No => (RestartPolicyNameEnum::NO, None),
        DockerRestart::OnFailure => (RestartPolicyNameEnum::ON_FAILURE, None),
        DockerRestart::OnFailureMax(n) => (RestartPolicyNameEnum::ON_FAILURE, Some(n as i64)),
        DockerRestart::Always => (RestartPolicyNameEnum::ALWAYS, None),
        DockerRestart::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
    };
    ContainerCreateBody {
        image: Some(image_ref(cfg, spec)),
        cmd: cfg
            .command
            .as_ref()
            .map(|argv| argv.iter().map(|a| substitute(a, spec, cfg.port)).collect()),
        env: Some(env),
        exposed_ports: Some(vec![exposed]),
        labels: Some(labels),
        stop_signal: Some(cfg.stop_signal.name().to_string()),
        stop_timeout: Some(cfg.stop_grace.as_secs().max(1) as i64),
        host_config: Some(HostConfig {
            port_bindings,
            binds: (!cfg.volumes.is_empty()).then(|| cfg.volumes.clone()),
            memory: cfg.memory.map(|m| m as i64),
            nano_cpus: cfg.cpus.map(|c| (c * 1e9) as i64),
            network_mode: cfg.network.clone(),
            restart_policy: Some(RestartPolicy {
                name: Some(name),
                maximum_retry_count: max,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where Cutover reaches an inspected container: its published loopback port, or its
/// address on the configured network.
pub fn address_of(
    cfg: &DockerRuntimeConfig,
    c: &ContainerInspectResponse,
) -> Result<SocketAddr, String> {
    let net = c.network_settings.as_ref();
    match cfg.reach {
        DockerReach::Loopback => {
            let key = format!("{}/tcp", cfg.port);
            let port = net
                .and_then(|n| n.ports.as_ref())
                .and_then(|p| p.get(&key).cloned().flatten())
                .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| format!("port {key} is not published"))?;
            Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        }
        DockerReach::Network => {
            let name = cfg.network.as_deref().unwrap_or_default();
            let ip = net
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(name))
                .and_then(|e| e.ip_address.clone())
                .filter(|ip| !ip.is_empty())
                .ok_or_else(|| format!("the container has no address on network {name:?}"))?;
            let ip: IpAddr = ip.parse().map_err(|e| format!("address {ip:?}: {e}"))?;
            Ok(SocketAddr::new(ip, cfg.port))
        }
    }
}

/// Whether the container carries the labels of `service`'s `slot`.
pub fn belongs_to(c: &ContainerInspectResponse, service: &str, slot: Slot) -> bool {
    let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
    labels.is_some_and(|l| {
        l.get(LABEL_SERVICE).map(String::as_str) == Some(service)
            && l.get(LABEL_SLOT).map(String::as_str) == Some(slot.as_str())
    })
}

pub fn restarts(c: &ContainerInspectResponse) -> u32 {
    c.restart_count.unwrap_or(0).max(0) as u32
}

/// The container's state as a slot status. `restarting` counts as running: the
/// restart count says that it crashed, and the runner judges the count.
pub fn status_of(c: &ContainerInspectResponse) -> SlotStatus {
    let state = c.state.clone().unwrap_or_default();
    match state.status {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::PAUSED,
        ) => SlotStatus::Running {
            restarts: restarts(c),
        },
        Some(ContainerStateStatusEnum::CREATED) => SlotStatus::Exited {
            detail: "the container was created but never started".into(),
        },
        _ => SlotStatus::Exited {
            detail: exit_detail(c),
        },
    }
}

/// Whether `c` runs again after at least one restart (its exit code was reset to 0 by
/// the restart, so it no longer tells how it ended).
pub fn running_again(c: &ContainerInspectResponse) -> bool {
    let status = c.state.as_ref().and_then(|s| s.status);
    status == Some(ContainerStateStatusEnum::RUNNING) && restarts(c) > 0
}

/// "container exited with code 3 (OOM killed): <error>".
pub fn exit_detail(c: &ContainerInspectResponse) -> String {
    let state = c.state.clone().unwrap_or_default();
    let mut detail = if running_again(c) {
        "container exited and was restarted (running again, so its exit code is unknown)"
            .to_string()
    } else {
        format!(
            "container exited with code {}",
            state.exit_code.unwrap_or_default()
        )
    };
    if state.oom_killed == Some(true) {
        detail.push_str(" (killed: out of memory)");
    }
    if let Some(e) = state.error.filter(|e| !e.is_empty()) {
        detail.push_str(&format!(": {e}"));
    }
    if restarts(c) > 0 {
        detail.push_str(&format!(", after {} restart(s)", restarts(c)));
    }
    detail
}

/// Docker's own verdict: its HEALTHCHECK state, and restarts since `baseline`.
/// `None` when the image has no HEALTHCHECK and the container never restarted.
pub fn health_of(c: &ContainerInspectResponse, baseline: u32) -> Option<RuntimeHealth> {
    let state = c.state.clone().unwrap_or_default();
    let since = restarts(c).saturating_sub(baseline);
    if state.status == Some(ContainerStateStatusEnum::RESTARTING) || since > 0 {
        // A container running again had its exit code reset to 0 by the restart.
        let last = if running_again(c) {
            "running again, its last exit code unknown".to_string()
        } else {
            format!("last exit code {}", state.exit_code.unwrap_or_default())
        };
        return Some(RuntimeHealth::Unhealthy(format!(
            "the container restarted {since} time(s) since it was started ({last})"
        )));
    }
    let health = state.health?;
    let last = health
        .log
        .as_ref()
        .and_then(|l| l.last())
        .and_then(|r| r.output.clone())
        .map(|o| o.trim().chars().take(200).collect::<String>())
        .unwrap_or_default();
    let with_last = |what: &str| {
        if last.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {last}")
        }
    };
    match health.status? {
        HealthStatusEnum::HEALTHY => Some(RuntimeHealth::Healthy(with_last("healthy"))),
        HealthStatusEnum::STARTING => Some(RuntimeHealth::Starting(with_last(
            "HEALTHCHECK starting (not judged yet)",
        ))),
        HealthStatusEnum::UNHEALTHY => Some(RuntimeHealth::Unhealthy(with_last(&format!(
            "HEALTHCHECK unhealthy ({} failure(s) in a row)",
            health.failing_streak.unwrap_or_default()
        )))),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
