//! Docker helpers for the Docker and Compose runtime tests, on top of the end-to-end
//! harness (`support/mod.rs`).
//!
//! Why it is built this way:
//! - the engine must be there: [`require_engine`] fails the test with the reason, never
//!   skips it;
//! - the `FROM scratch` test images (`tests/images/README.md`) are built once per test
//!   binary by `scripts/build-test-images.sh` when one is missing (`.ci/run` builds them
//!   beforehand), since nothing can be pulled;
//! - each test gets its own service name ([`Scope`]), so container names
//!   (`cutover-<service>-<slot>`), Compose projects (`<service>-<slot>`) and per-test
//!   image tags never collide between tests running in parallel;
//! - [`Scope`]'s `Drop` removes every container, Compose network and image tag the
//!   test created, found by the test's own labels and names only.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use cutover::api::ServiceStatus;
use serde_json::Value;

use crate::support::Harness;

/// Every image the tests use.
pub const IMAGES: [&str; 6] = [
    "cutover-demo:v1",
    "cutover-demo:v2",
    "cutover-demo:v3",
    "cutover-demo:v4",
    "cutover-demo:broken",
    "cutover-demo:sick",
];

/// Runs `docker args`; stdout, or the reason it failed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fails the test loudly when no Docker engine answers.
pub fn require_engine() {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        panic!(
            "these tests need a running Docker engine and the docker CLI; none is reachable \
             ({e}). Start the engine (or set DOCKER_HOST); they are never skipped."
        );
    }
}

/// Builds the test images unless they all exist (once per test binary).
pub fn ensure_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    require_engine();
    let result = BUILT.get_or_init(|| {
        if IMAGES
            .iter()
            .all(|i| docker(&["image", "inspect", "--format", "{{.Id}}", i]).is_ok())
        {
            return Ok(());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-images.sh");
        eprintln!("building the Docker test images with {}", script.display());
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed:\n{}\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("the Docker test images could not be built: {e}");
    }
}

/// One test's Docker world: its service name and what it created.
pub struct Scope {
    pub service: String,
    tags: Vec<String>,
}

impl Scope {
    /// A fresh service name (`d<pid>-<n>`), after checking the engine and images.
    pub fn new() -> Scope {
        static N: AtomicU32 = AtomicU32::new(0);
        ensure_images();
        let n = N.fetch_add(1, Ordering::Relaxed);
        Scope {
            service: format!("d{}-{n}", std::process::id()),
            tags: Vec::new(),
        }
    }

    /// `cutover-<service>-<slot>`.
    pub fn container(&self, slot: &str) -> String {
        format!("cutover-{}-{slot}", self.service)
    }

    /// Tags `from` as `to` (removed when the scope ends).
    pub fn tag(&mut self, from: &str, to: &str) {
        docker(&["tag", from, to]).unwrap_or_else(|e| panic!("{e}"));
        self.tags.push(to.to_string());
    }

    /// Ids of this test's containers (any state), for the Docker runtime's labels.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=io.cutover.service={}", self.service);
        list(&["ps", "-aq", "--no-trunc", "--filter", &filter])
    }

    /// Ids of this test's running containers.
    pub fn running_containers(&self) -> Vec<String> {
        let filter = format!("label=io.cutover.service={}", self.service);
        list(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &filter,
            "--filter",
            "status=running",
        ])
    }

    /// Ids of the containers of one of this test's Compose projects (any state).
    pub fn project_containers(&self, slot: &str) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}-{slot}", self.service);
        list(&["ps", "-aq", "--no-trunc", "--filter", &filter])
    }

    /// `docker inspect --format <format> <target>`.
    pub fn inspect(&self, target: &str, format: &str) -> String {
        docker(&["inspect", "--format", format, target]).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn list(args: &[&str]) -> Vec<String> {
    docker(args)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .map(str::to_string)
        .collect()
}

impl Drop for Scope {
    fn drop(&mut self) {
        let mut ids = self.containers();
        for slot in ["blue", "green"] {
            ids.extend(self.project_containers(slot));
        }
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            if let Err(e) = docker(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        for slot in ["blue", "green"] {
            let network = format!("{}-{slot}_default", self.service);
            let _ = docker(&["network", "rm", &network]);
        }
        for tag in &self.tags {
            let _ = docker(&["rmi", tag]);
        }
    }
}

/// Renames the harness's demo service to `service` and replaces its runtime table
/// with `runtime` (TOML lines after `[services.<service>.runtime]`).
pub fn use_runtime(h: &Harness, service: &str, runtime: &str) {
    let text = std::fs::read_to_string(&h.config_path).expect("read config");
    let start = text
        .find("[services.web.runtime]\n")
        .expect("the demo config has a runtime table");
    let end = start + text[start..].find("\n\n").expect("a blank line after it");
    let text = format!(
        "{}[services.web.runtime]\n{}{}",
        &text[..start],
        runtime.trim_end(),
        &text[end..]
    );
    let text = text.replace("[services.web", &format!("[services.{service}"));
    std::fs::write(&h.config_path, text).expect("write config");
}

/// Starts a deployment of `version`; its id.
pub async fn deploy(h: &Harness, service: &str, version: &str) -> i64 {
    let v: Value = h
        .client()
        .post(
            &format!("/api/v1/services/{service}/deploy"),
            serde_json::json!({ "version": version }),
        )
        .await
        .unwrap_or_else(|e| panic!("deploy {version}: {e}"));
    v["deployment_id"].as_i64().expect("deployment_id")
}

/// Deploys `version` and waits for the outcome.
pub async fn deploy_and_wait(
    h: &Harness,
    service: &str,
    version: &str,
) -> cutover::store::DeploymentRecord {
    let id = deploy(h, service, version).await;
    h.wait_finished(id, 180).await
}

pub async fn status(h: &Harness, service: &str) -> ServiceStatus {
    h.client()
        .get(&format!("/api/v1/services/{service}"))
        .await
        .unwrap_or_else(|e| panic!("GET service status: {e}"))
}
