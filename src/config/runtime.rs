//! Rules for `[services.<name>.runtime]`: where a slot's release runs.
//!
//! The table is read by its `kind`, each kind with its own schema, so a key that belongs
//! to another kind (`image` on a process runtime) is reported as unknown for *this*
//! kind instead of being silently ignored. `process` is read exactly as it always was;
//! `docker` and `compose` are validated here down to what their runtimes need at start
//! (an image reference with known placeholders, volume syntax, memory sizes, restart
//! policies), so a mistake is a config error, not a failed deployment.
//!
//! The `docker` and `compose` rules live in `runtime/docker.rs` and
//! `runtime/compose.rs`; this file reads `kind`, the `process` runtime and the rules
//! all kinds share (env, stop signal, argv, placeholders, ports).

mod compose;
mod docker;

pub use compose::ComposeRuntimeConfig;
pub use docker::{DockerReach, DockerRestart, DockerRuntimeConfig};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use compose::compose;
use docker::docker;

use super::model::{ProcessRuntimeConfig, RuntimeConfig, SlotPorts, StopSignal};
use super::raw::{RawPorts, RawRuntime};
use super::read::{join, read, Problems, Read, Sub};
use super::validate::{duration, int_range, is_env_name};
use super::values::placeholders;

/// The runtime and, separately, its fixed ports (for cross-service rules even when
/// another part of the runtime is wrong).
pub(super) fn runtime(
    service_at: &str,
    sub: Option<&Sub<RawRuntime>>,
    base: &Path,
    p: &mut Problems,
) -> (Option<RuntimeConfig>, Option<SlotPorts>) {
    let at = join(service_at, "runtime");
    let Some(sub) = sub else {
        p.add(
            &at,
            format!(
                "missing required table [{at}], expected kind = \"process\" and command = [...]"
            ),
        );
        return (None, None);
    };
    match sub.value().get("kind") {
        Some(toml::Value::String(kind)) if kind == "docker" => docker(&at, sub.value(), base, p),
        Some(toml::Value::String(kind)) if kind == "compose" => compose(&at, sub.value(), base, p),
        // A kind that does not exist: say that, not "unknown key `image`".
        Some(toml::Value::String(kind)) if kind != "process" => {
            let later = if kind == "kubernetes" {
                " (the kubernetes runtime is not built yet)"
            } else {
                ""
            };
            p.add(
                join(&at, "kind"),
                format!("expected \"process\", \"docker\" or \"compose\", got {kind:?}{later}"),
            );
            (None, None)
        }
        _ => process(&at, sub, base, p),
    }
}

fn process(
    at: &str,
    sub: &Sub<RawRuntime>,
    base: &Path,
    p: &mut Problems,
) -> (Option<RuntimeConfig>, Option<SlotPorts>) {
    let Some(r) = read::<RawRuntime>(sub.value(), at, p) else {
        return (None, None);
    };
    let kind = r.required("kind", r.raw.kind.as_ref(), "\"process\"", p);
    let command = r
        .required(
            "command",
            r.raw.command.as_ref(),
            "an argv like [\"./web\", \"--port\", \"{port}\"]",
            p,
        )
        .and_then(|argv| argv_ok(p, &r.key("command"), argv).then(|| argv.clone()));
    let env = r.optional("env", r.raw.env.as_ref(), |env| env_ok(&r, env, p));
    let ports = r.optional("ports", r.raw.ports.as_ref(), |sub| {
        ports(&r.key("ports"), sub, p)
    });
    let workdir = r.optional("workdir", r.raw.workdir.as_deref(), |w| {
        if w.is_empty() {
            p.add(r.key("workdir"), "expected a directory path, got \"\"");
            return None;
        }
        Some(base.join(PathBuf::from(w)))
    });
    let stop_signal = stop_signal(&r, r.raw.stop_signal.as_deref(), p);
    let stop_grace = duration(
        &r,
        "stop_grace",
        r.raw.stop_grace,
        ProcessRuntimeConfig::DEFAULT_STOP_GRACE,
    );

    // The app must learn its port somehow, unless both slots have fixed ones.
    if let (Some(argv), Some(None)) = (r.raw.command.as_ref(), &ports) {
        let env_values = r.raw.env.iter().flat_map(|e| e.values());
        let mentions_port = argv
            .iter()
            .chain(env_values)
            .any(|s| placeholders(s).contains(&"port"));
        if !mentions_port && !argv.is_empty() {
            p.add(r.key("command"), "neither `command` nor `env` contains `{port}`, so the app cannot know which port to listen on; add `{port}`, or set `ports = { blue = ..., green = ... }`");
        }
    }

    let fixed = ports.flatten();
    let config = (|| {
        kind?;
        Some(RuntimeConfig::Process(ProcessRuntimeConfig {
            command: command?,
            env: env?.unwrap_or_default(),
            workdir: workdir?,
            stop_signal: stop_signal?.unwrap_or_default(),
            stop_grace: stop_grace?,
            ports: ports?,
        }))
    })();
    (config, fixed)
}

fn env_ok<T>(
    r: &Read<T>,
    env: &BTreeMap<String, String>,
    p: &mut Problems,
) -> Option<BTreeMap<String, String>> {
    let before = p.count();
    for (name, value) in env {
        let key = join(&r.key("env"), name);
        if !is_env_name(name) {
            p.add(
                &key,
                format!("expected an environment variable name, got {name:?}"),
            );
        }
        check_placeholders(p, &key, value);
    }
    (p.count() == before).then(|| env.clone())
}

fn stop_signal<T>(
    r: &Read<T>,
    value: Option<&str>,
    p: &mut Problems,
) -> Option<Option<StopSignal>> {
    r.optional("stop_signal", value, |s| {
        let parsed = StopSignal::parse(s);
        if parsed.is_none() {
            p.add(
                r.key("stop_signal"),
                format!("expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, got {s:?}"),
            );
        }
        parsed
    })
}

/// A command argv (runtime or probe): non-empty, a program name, known placeholders.
pub(super) fn argv_ok(p: &mut Problems, key: &str, argv: &[String]) -> bool {
    let before = p.count();
    match argv.first() {
        None => p.add(
            key,
            "expected a non-empty argv like [\"./web\", \"--port\", \"{port}\"], got []",
        ),
        Some(program) if program.trim().is_empty() => {
            p.add(format!("{key}[0]"), "expected a program name, got \"\"")
        }
        Some(_) => {}
    }
    for (i, arg) in argv.iter().enumerate() {
        check_placeholders(p, &format!("{key}[{i}]"), arg);
    }
    p.count() == before
}

fn check_placeholders(p: &mut Problems, key: &str, text: &str) {
    for name in placeholders(text) {
        if !ProcessRuntimeConfig::PLACEHOLDERS.contains(&name) {
            p.add(key, format!(
                "unknown placeholder `{{{name}}}`, expected one of: {{version}}, {{port}}, {{slot}}, {{service}}"
            ));
        }
    }
}

fn ports(at: &str, sub: &Sub<RawPorts>, p: &mut Problems) -> Option<SlotPorts> {
    let r = read::<RawPorts>(sub.value(), at, p)?;
    let mut port = |field: &str, value: Option<i64>| {
        r.required(field, value, "a port from 1 to 65535", p)
            .and_then(|v| int_range(p, r.key(field), v, 1, 65535))
            .map(|v| v as u16)
    };
    let (blue, green) = (port("blue", r.raw.blue), port("green", r.raw.green));
    let (blue, green) = (blue?, green?);
    if blue == green {
        p.add(
            r.key("green"),
            format!("expected a port different from blue's, got {green} for both"),
        );
        return None;
    }
    Some(SlotPorts { blue, green })
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
