//! `cutover init`: a commented starting `cutover.toml` for the process, Docker or
//! Compose runtime, which `cutover validate` accepts as written. It never overwrites a
//! file unless `--force`. The full annotated reference is `examples/cutover.toml`.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use super::output::{fail, json_out, mode, say};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitRuntime {
    Process,
    Docker,
    Compose,
    Kubernetes,
}

impl InitRuntime {
    fn as_str(self) -> &'static str {
        match self {
            InitRuntime::Process => "process",
            InitRuntime::Docker => "docker",
            InitRuntime::Compose => "compose",
            InitRuntime::Kubernetes => "kubernetes",
        }
    }
}

const HEADER: &str = r#"# cutover.toml, written by `cutover init`. Check it with `cutover validate`;
# every key and its default is described in examples/cutover.toml and the README.
# Durations: "500ms", "2s", "5m". Relative paths are relative to this file.

# Deployment changes to services of a production environment are confirmed by
# typing the service's name (or `--yes` in CI). A service can set its own.
# environment = "production"

[daemon]
# Deployment history, slot state, slot logs and the generated API token.
state_dir = ".cutover"

[api]
# The HTTP API and /metrics. The CLI finds the daemon here (or through
# --api / CUTOVER_API_URL when there is no config file, e.g. in CI).
listen = "127.0.0.1:7070"
# The bearer token is read from this environment variable; without it the
# daemon generates one into <state_dir>/api-token.
token_env = "CUTOVER_TOKEN"

[services.web]
# Where Cutover's built-in proxy takes the service's public traffic.
listen = "127.0.0.1:8080"
# How long the previous release stays running after a deployment (instant
# rollback).
warm_for = "5m"
"#;

const PROCESS: &str = r#"
[services.web.runtime]
kind = "process"
# The release's command: {version}, {slot} and {port} are substituted, and
# PORT, CUTOVER_VERSION, CUTOVER_SLOT are set in its environment.
command = ["./releases/{version}/web", "--port", "{port}"]
# env = { DATABASE_URL = "postgres://localhost/web" }
# workdir = "."
stop_grace = "10s"
"#;

const DOCKER: &str = r#"
[services.web.runtime]
kind = "docker"
# The release's image: {version}, {slot} and {service} are substituted.
image = "registry.example.com/web:{version}"
# The port the app listens on inside the container (also passed as PORT).
port = 8080
# env = { DATABASE_URL = "postgres://db.internal/web" }
"#;

const COMPOSE: &str = r#"
[services.web.runtime]
kind = "compose"
# One Compose project per slot (`web-blue`, `web-green`); the entry component
# publishes ${CUTOVER_PORT} on 127.0.0.1 (see the README's Compose section).
file = "compose.yaml"
entry = "app"
"#;

const KUBERNETES: &str = r#"
[services.web.runtime]
kind = "kubernetes"
# A Deployment per slot (`web-blue`, `web-green`), written through your own
# kubectl and kubeconfig; see the README's "Kubernetes runtime and router" (also
# for switching a Service selector or an HTTPRoute instead of this proxy).
# context = "prod"
namespace = "default"
# The release's image: {version}, {slot} and {service} are substituted.
image = "registry.example.com/web:{version}"
# The port the app listens on in its container.
port = 8080
replicas = 2
ready_path = "/health"
# Where Cutover reaches each slot: a Service per slot selecting
# app.kubernetes.io/name=web and cutover.dev/slot=blue (or green).
endpoints = { blue = "web-blue.default.svc.cluster.local:80", green = "web-green.default.svc.cluster.local:80" }
# With a [services.web.database], also `extra = "web-extra.default.svc.cluster.local:80"`:
# a Service selecting cutover.dev/slot=extra, where the migration proof's instance runs.
"#;

const CHECKS: &str = r#"
[services.web.health]
# The new release must pass these before any traffic reaches it.
interval = "1s"
healthy_threshold = 2
deadline = "60s"

[[services.web.health.checks]]
name = "health"
http = { path = "/health", status = 200 }

# Requests sent to the new release before the switch.
[[services.web.smoke.steps]]
name = "home page"
path = "/"
expect_status = 200

[services.web.watch]
# After the switch: roll back at once when one of these holds.
duration = "2m"
error_rate = { max = 0.05, for = "30s", min_requests = 20 }
"#;

/// The text `cutover init --runtime <runtime>` writes.
pub fn template(runtime: InitRuntime) -> String {
    let body = match runtime {
        InitRuntime::Process => PROCESS,
        InitRuntime::Docker => DOCKER,
        InitRuntime::Compose => COMPOSE,
        InitRuntime::Kubernetes => KUBERNETES,
    };
    format!("{HEADER}{body}{CHECKS}")
}

pub fn run(path: &Path, runtime: InitRuntime, force: bool) -> ExitCode {
    if path.exists() && !force {
        return fail(
            2,
            "exists",
            format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            ),
        );
    }
    if let Err(e) = std::fs::write(path, template(runtime)) {
        return fail(1, "io", format!("cannot write {}: {e}", path.display()));
    }
    if mode().json {
        json_out(&json!({ "file": path, "runtime": runtime.as_str() }));
    } else {
        say!(
            "wrote {} ({} runtime); edit it, then `cutover -c {} validate`",
            path.display(),
            runtime.as_str(),
            path.display()
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_validates() {
        for rt in [
            InitRuntime::Process,
            InitRuntime::Docker,
            InitRuntime::Compose,
            InitRuntime::Kubernetes,
        ] {
            let text = template(rt);
            let cfg = crate::config::parse(&text, None)
                .unwrap_or_else(|e| panic!("{} template: {e}\n{text}", rt.as_str()));
            let kind = match cfg.services["web"].runtime {
                crate::config::RuntimeConfig::Process(_) => "process",
                crate::config::RuntimeConfig::Docker(_) => "docker",
                crate::config::RuntimeConfig::Compose(_) => "compose",
                crate::config::RuntimeConfig::Kubernetes(_) => "kubernetes",
            };
            assert_eq!(kind, rt.as_str());
        }
    }
}
