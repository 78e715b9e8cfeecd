//! Rules for one `[services.<name>]` table: its addresses and its runtime. How a
//! release of it is judged is in `health.rs`, `smoke.rs` and `watch.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::model::{ProcessRuntimeConfig, RuntimeConfig, ServiceConfig, SlotPorts, StopSignal};
use super::raw::{RawPorts, RawRuntime, RawService};
use super::read::{join, read, Problems, Read, Sub};
use super::validate::{addr, duration, int_range, is_env_name};
use super::values::placeholders;
use super::{health, smoke, watch};

/// What cross-service rules need from a service, kept even when other parts of it are
/// wrong; `config` is the validated service, `None` when any of its parts failed.
pub(super) struct Draft {
    pub name: String,
    /// Dotted key of the service table, e.g. `services.web`.
    pub at: String,
    pub listen: Option<SocketAddr>,
    /// The lower-cased hosts (empty = default service for `listen`); `None` when they
    /// were wrong, so no routing claim is made for this service.
    pub hosts: Option<Vec<String>>,
    pub preview_listen: Option<SocketAddr>,
    pub ports: Option<SlotPorts>,
    pub config: Option<ServiceConfig>,
}

pub(super) fn service(name: &str, sub: &Sub<RawService>, base: &Path, p: &mut Problems) -> Draft {
    let at = join("services", name);
    let mut draft = Draft {
        name: name.to_string(),
        at: at.clone(),
        listen: None,
        hosts: None,
        preview_listen: None,
        ports: None,
        config: None,
    };
    let name_ok = valid_service_name(name);
    if !name_ok {
        p.add(&at, format!(
            "service name {name:?} is not allowed, expected lower-case letters, digits, `_` and `-`, starting with a letter or digit"
        ));
    }
    let Some(r) = read::<RawService>(sub.value(), &at, p) else {
        return draft;
    };
    let listen = r
        .required(
            "listen",
            r.raw.listen.as_deref(),
            "an address like \"127.0.0.1:8080\"",
            p,
        )
        .and_then(|s| addr(p, r.key("listen"), s));
    let hosts = r.optional("hosts", r.raw.hosts.as_ref(), |hosts| {
        self::hosts(&r, hosts, p)
    });
    let preview_listen = r.optional("preview_listen", r.raw.preview_listen.as_deref(), |s| {
        addr(p, r.key("preview_listen"), s)
    });
    let warm_for = duration(
        &r,
        "warm_for",
        r.raw.warm_for,
        ServiceConfig::DEFAULT_WARM_FOR,
    );
    let (runtime, ports) = runtime(&at, r.raw.runtime.as_ref(), base, p);
    let health = health::health(&at, r.raw.health.as_ref(), p);
    let smoke = smoke::smoke(&at, r.raw.smoke.as_ref(), p);
    let watch = watch::watch(&at, r.raw.watch.as_ref(), p);

    draft.listen = listen;
    draft.hosts = hosts.clone().map(Option::unwrap_or_default);
    draft.preview_listen = preview_listen.flatten();
    draft.ports = ports;
    if !name_ok {
        return draft;
    }
    draft.config = (|| {
        Some(ServiceConfig {
            name: name.to_string(),
            listen: listen?,
            hosts: hosts?.unwrap_or_default(),
            preview_listen: preview_listen?,
            runtime: runtime?,
            health: health?,
            smoke: smoke?,
            watch: watch?,
            warm_for: warm_for?,
        })
    })();
    draft
}

/// `[a-z0-9][a-z0-9_-]*`: safe in paths, process names, metric labels and URLs.
fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn hosts(r: &Read<RawService>, hosts: &[String], p: &mut Problems) -> Option<Vec<String>> {
    let before = p.count();
    let mut out: Vec<String> = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let key = format!("{}[{i}]", r.key("hosts"));
        let lower = host.trim().to_ascii_lowercase();
        let valid = !lower.is_empty()
            && !lower.starts_with(['.', '-'])
            && !lower.ends_with('.')
            && lower
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            p.add(
                key,
                format!("expected a host name like \"web.example.com\", got {host:?}"),
            );
        } else if let Some(j) = out.iter().position(|h| *h == lower) {
            p.add(
                key,
                format!("duplicate host {host:?}, already listed as hosts[{j}]"),
            );
        } else {
            out.push(lower);
        }
    }
    (p.count() == before).then_some(out)
}

/// The runtime and, separately, its fixed ports (for cross-service rules even when
/// another part of the runtime is wrong).
fn runtime(
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
    // A runtime kind that does not exist yet: say that, not "unknown key `image`".
    if let Some(toml::Value::String(kind)) = sub.value().get("kind") {
        if kind != "process" {
            p.add(join(&at, "kind"), format!(
                "expected \"process\", got {kind:?} (docker, compose and kubernetes runtimes are not built yet)"
            ));
            return (None, None);
        }
    }
    let Some(r) = read::<RawRuntime>(sub.value(), &at, p) else {
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
    let env = r.optional("env", r.raw.env.as_ref(), |env| {
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
    });
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
    let stop_signal = r.optional("stop_signal", r.raw.stop_signal.as_deref(), |s| {
        let parsed = StopSignal::parse(s);
        if parsed.is_none() {
            p.add(
                r.key("stop_signal"),
                format!("expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, got {s:?}"),
            );
        }
        parsed
    });
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
