//! The Kubernetes stand-in (`tests/kube/standin.py`) and the real `kubectl` against
//! it. No Kubernetes API server can run on this machine: the stand-in serves the part
//! of the API kubectl and Cutover use, runs each pod's command as a local process (the
//! image is not pulled), forwards a NodePort Service's port on 127.0.0.1 to its ready
//! pods and a Gateway's listener through its HTTPRoute's weights. Everything Cutover
//! does to it goes through the real kubectl, and every assertion reads it back with
//! kubectl too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::routers::{require, Server};
use crate::support::free_addr;

pub const TOKEN: &str = "standin-test-token";

pub struct StandIn {
    pub server: Server,
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
}

/// Starts the stand-in in `dir`, with a bearer token, and waits for its kubeconfig.
pub async fn start_standin(dir: &Path) -> StandIn {
    let kubectl = require("kubectl", "apt-get install kubernetes-client");
    let d = dir.join("kube");
    std::fs::create_dir_all(&d).expect("kube dir");
    let api = free_addr();
    let kubeconfig = d.join("kubeconfig");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/standin.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg("--listen")
        .arg(api.to_string())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--token")
        .arg(TOKEN)
        .arg("--log")
        .arg(d.join("requests.log"));
    let mut server = Server::spawn("standin", &d, cmd);
    server.wait_listening(api).await;
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kubeconfig.exists(), "no kubeconfig:\n{}", server.logs());
    StandIn {
        server,
        kubeconfig,
        kubectl,
    }
}

impl StandIn {
    /// Runs the real kubectl against the stand-in; (exit code, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(pipe);
        let out = child.wait_with_output().expect("kubectl finishes");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `kubectl get <kind> <name> -o json`, `None` when not found.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let (code, out, err) = self.kubectl(&["get", kind, name, "-o", "json"], None);
        if code != 0 {
            assert!(
                err.contains("(NotFound)"),
                "kubectl get {kind} {name}: {err}"
            );
            return None;
        }
        Some(serde_json::from_str(&out).expect("kubectl printed JSON"))
    }

    /// Creates (or updates) `object` by server-side apply, as a user would.
    pub fn apply(&self, object: &Value) {
        let body = object.to_string();
        let (code, out, err) = self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=test",
                "--validate=false",
                "-f",
                "-",
            ],
            Some(&body),
        );
        assert_eq!(
            code,
            0,
            "kubectl apply {body}:\n{out}\n{err}\n{}",
            self.server.logs()
        );
    }

    /// A NodePort Service on 127.0.0.1:`port` selecting the service's pods, and of
    /// `slot` when given.
    pub fn node_port_service(&self, name: &str, port: u16, slot: Option<&str>) {
        let mut selector = json!({ "app.kubernetes.io/name": "web" });
        if let Some(s) = slot {
            selector["cutover.dev/slot"] = json!(s);
        }
        self.apply(&json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": "default" },
            "spec": {
                "type": "NodePort",
                "selector": selector,
                "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "nodePort": port }],
            },
        }));
    }

    /// Sets one key of a Service's selector by hand (a merge patch), as an operator
    /// would with kubectl.
    pub fn patch_selector(&self, service: &str, key: &str, value: &str) {
        let patch = serde_json::json!({ "spec": { "selector": { key: value } } }).to_string();
        let (code, _, err) = self.kubectl(
            &["patch", "service", service, "--type=merge", "-p", &patch],
            None,
        );
        assert_eq!(code, 0, "kubectl patch service {service}: {err}");
    }

    /// The `cutover.dev/slot` value of a Service's selector.
    pub fn selected_slot(&self, service: &str) -> Option<String> {
        let s = self.get("service", service)?;
        s["spec"]["selector"]["cutover.dev/slot"]
            .as_str()
            .map(String::from)
    }

    /// Pods of a slot: (name, ready, restarts).
    pub fn pods(&self, slot: &str) -> Vec<(String, bool, u64)> {
        let (code, out, err) = self.kubectl(
            &[
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/name=web,cutover.dev/slot={slot}"),
                "-o",
                "json",
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).expect("JSON");
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0);
                (
                    p["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                    ready,
                    restarts,
                )
            })
            .collect()
    }
}

/// The runtime table for the demo app as the stand-in's pods (the stand-in gives each
/// pod a `PORT`, and expands `$(PORT)` like Kubernetes does).
pub fn runtime_toml(
    standin: &StandIn,
    behaviour: &Path,
    blue: SocketAddr,
    green: SocketAddr,
) -> String {
    format!(
        r#"[services.web.runtime]
kind = "kubernetes"
kubeconfig = "{kubeconfig}"
image = "registry.example.test/demo:{{version}}"
port = 8080
command = ["{exe}", "demo-app", "--port", "$(PORT)", "--version", "{{version}}", "--behaviour", "{behaviour}"]
ready_path = "/health"
endpoints = {{ blue = "{blue}", green = "{green}" }}
stop_grace = "2s"
timeout = "10s"

"#,
        kubeconfig = standin.kubeconfig.display(),
        exe = crate::support::exe(),
        behaviour = behaviour.display(),
    )
}

/// Replaces the demo config's `[services.web.runtime]` table with `table`.
pub fn use_runtime(h: &crate::support::Harness, table: &str) {
    let text = std::fs::read_to_string(&h.config_path).expect("read config");
    let start = text
        .find("[services.web.runtime]")
        .expect("a runtime table");
    let end = start
        + text[start..]
            .find("[services.web.health]")
            .expect("health after runtime");
    let new = format!("{}{table}{}", &text[..start], &text[end..]);
    std::fs::write(&h.config_path, new).expect("write config");
}
