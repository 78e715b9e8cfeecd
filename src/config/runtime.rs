//! Rules for `[services.<name>.runtime]`: where a slot's release runs.
//!
//! The table is read by its `kind`, each kind with its own schema, so a key that belongs
//! to another kind (`image` on a process runtime) is reported as unknown for *this*
//! kind instead of being silently ignored. `process` is read exactly as it always was;
//! `docker` and `compose` are validated here down to what their runtimes need at start
//! (an image reference with known placeholders, volume syntax, memory sizes, restart
//! policies), so a mistake is a config error, not a failed deployment.
//!
//! The `docker`, `compose` and `kubernetes` rules live in `runtime/docker.rs`,
//! `runtime/compose.rs` and `runtime/kubernetes.rs`; this file reads `kind` and the
//! `process` runtime. The rules
//! all kinds share (env, stop signal, argv, placeholders, ports) are in `rules.rs`,
//! the validated types of every kind in `kinds.rs`.

mod compose;
mod docker;
mod kubernetes;

use std::path::{Path, PathBuf};

use compose::compose;
use docker::docker;
use kubernetes::kubernetes;

use super::kinds::{ProcessRuntimeConfig, RuntimeConfig, SlotPorts};
use super::raw::RawRuntime;
use super::read::{join, read, Problems, Sub};
use super::rules::{argv_ok, duration, env_ok, ports, stop_signal};
use super::values::placeholders;

/// The runtime and, separately, its fixed ports (for cross-service rules even when
/// another part of the runtime is wrong).
pub(super) fn runtime(
    service: &str,
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
        Some(toml::Value::String(kind)) if kind == "kubernetes" => {
            kubernetes(service, &at, sub.value(), base, p)
        }
        // A kind that does not exist: say that, not "unknown key `image`".
        Some(toml::Value::String(kind)) if kind != "process" => {
            p.add(
                join(&at, "kind"),
                format!(
                    "expected \"process\", \"docker\", \"compose\" or \"kubernetes\", got {kind:?}"
                ),
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

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
