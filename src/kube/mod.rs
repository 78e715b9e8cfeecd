//! `kubectl` as Cutover's Kubernetes client, shared by the Kubernetes runtime
//! (`runtime/kubernetes.rs`) and router (`router/kubernetes.rs`).
//!
//! Why kubectl and not an API client crate: the user's kubeconfig then works exactly
//! as it does at their shell, with every authentication a cluster may use (client
//! certificates, tokens, OIDC and cloud `exec` plugins), the binary stays small, and
//! what Cutover does is a command the operator can run by hand (`kubectl get ... -o
//! json`, `kubectl patch`, `kubectl apply --server-side`). Every call has a timeout,
//! reads JSON only, and turns the API server's refusal into an error carrying its own
//! words.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::config::KubeAccess;

/// The field manager Cutover's server-side applies are recorded under.
pub const FIELD_MANAGER: &str = "cutover";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// kubectl could not be run at all.
    #[error("cannot run {program}: {reason} (install kubectl, or set `kubectl` to its path)")]
    Spawn { program: String, reason: String },
    /// The cluster did not answer (connection refused, DNS, TLS, timeout).
    #[error("kubectl cannot reach the cluster: {0}")]
    Unreachable(String),
    /// The API server answered with a refusal: its message.
    #[error("{0}")]
    Refused(String),
    #[error("kubectl printed something that is not the expected JSON: {0}")]
    Output(String),
}

/// One cluster, namespace and identity, as the config's access keys name them.
#[derive(Debug, Clone)]
pub struct Kubectl {
    access: KubeAccess,
}

impl Kubectl {
    pub fn new(access: KubeAccess) -> Kubectl {
        Kubectl { access }
    }

    pub fn namespace(&self) -> &str {
        &self.access.namespace
    }

    /// `kubectl get <kind> <name> -o json`; `None` when it does not exist.
    pub async fn get(&self, kind: &str, name: &str) -> Result<Option<Value>, KubeError> {
        match self.json(&["get", kind, name, "-o", "json"], None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `kubectl get <kind> -l <selector> -o json`: the list's items.
    pub async fn list(&self, kind: &str, selector: &str) -> Result<Vec<Value>, KubeError> {
        let v = self
            .json(&["get", kind, "-l", selector, "-o", "json"], None)
            .await?;
        match v.get("items") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(KubeError::Output(format!("a list without `items`: {v}"))),
        }
    }

    /// Server-side apply of `object` (Cutover's fields win over other managers');
    /// returns the object as stored.
    pub async fn apply(&self, object: &Value) -> Result<Value, KubeError> {
        let manager = format!("--field-manager={FIELD_MANAGER}");
        let body = serde_json::to_vec(object).expect("JSON serialises");
        self.json(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                &manager,
                "--validate=false",
                "-o",
                "json",
                "-f",
                "-",
            ],
            Some(&body),
        )
        .await
    }

    /// `kubectl patch <kind> <name> --type=<merge|json> -p <patch>`; returns the
    /// object as stored.
    pub async fn patch(
        &self,
        kind: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
    ) -> Result<Value, KubeError> {
        let kind_arg = format!("--type={}", patch_type.as_str());
        let body = patch.to_string();
        self.json(
            &["patch", kind, name, &kind_arg, "-p", &body, "-o", "json"],
            None,
        )
        .await
    }

    /// The last `lines` lines of the logs of every container of the pods `selector`
    /// picks, each prefixed with its pod and container.
    pub async fn logs(&self, selector: &str, lines: usize) -> Result<String, KubeError> {
        let tail = format!("--tail={lines}");
        let out = self
            .run(
                &[
                    "logs",
                    "-l",
                    selector,
                    &tail,
                    "--all-containers=true",
                    "--prefix=true",
                ],
                None,
            )
            .await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn json(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Value, KubeError> {
        let out = self.run(args, stdin).await?;
        serde_json::from_slice(&out).map_err(|e| {
            let text = String::from_utf8_lossy(&out);
            KubeError::Output(format!("{e}: {}", shorten(&text)))
        })
    }

    /// Runs kubectl with the access flags first; stdout on success, the API server's
    /// words (stderr) as the error otherwise.
    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, KubeError> {
        let a = &self.access;
        let mut cmd = tokio::process::Command::new(&a.kubectl);
        if let Some(k) = &a.kubeconfig {
            cmd.arg("--kubeconfig").arg(k);
        }
        if let Some(c) = &a.context {
            cmd.arg("--context").arg(c);
        }
        cmd.arg("--namespace")
            .arg(&a.namespace)
            .arg(format!("--request-timeout={}s", a.timeout.as_secs().max(1)))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let program = a.kubectl.display().to_string();
        let mut child = cmd.spawn().map_err(|e| KubeError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
        if let (Some(body), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A kubectl that exits early closes the pipe; its stderr says why.
            let _ = pipe.write_all(body).await;
        }
        // kubectl's own --request-timeout bounds each request; this bounds the whole
        // run (discovery plus the request), with room for kubectl to say why first.
        let limit = a.timeout * 2 + Duration::from_secs(5);
        let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(KubeError::Spawn {
                    program,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(KubeError::Unreachable(format!(
                    "`kubectl {}` did not finish within {}s",
                    args.first().copied().unwrap_or_default(),
                    limit.as_secs()
                )))
            }
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let said = if said.is_empty() {
            format!("kubectl exited with {}", out.status)
        } else {
            shorten(&said)
        };
        Err(if unreachable(&said) {
            KubeError::Unreachable(said)
        } else {
            KubeError::Refused(said)
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub enum PatchType {
    /// RFC 7386: maps merged, what is written replaces.
    Merge,
    /// RFC 6902: operations, applied all or none (a `test` guards a change).
    Json,
}

impl PatchType {
    fn as_str(self) -> &'static str {
        match self {
            PatchType::Merge => "merge",
            PatchType::Json => "json",
        }
    }
}

/// The API server's NotFound, as kubectl prints it.
fn is_not_found(said: &str) -> bool {
    said.contains("(NotFound)")
}

impl KubeError {
    /// The object named does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::Refused(m) if is_not_found(m))
    }
}

/// Whether kubectl's words say the cluster was not reached (as opposed to refusing).
fn unreachable(said: &str) -> bool {
    [
        "Unable to connect to the server",
        "connection refused",
        "no such host",
        "i/o timeout",
        "context deadline exceeded",
        "Client.Timeout",
        "the server is currently unable",
    ]
    .iter()
    .any(|m| said.contains(m))
}

/// At most 600 characters of kubectl's output, for an error message.
fn shorten(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(600) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// A `key=value,key=value` label selector.
pub fn selector(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a pod is ready (its `Ready` condition is `True`) and not being deleted.
pub fn pod_ready(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none()
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectls_words_are_sorted_into_unreachable_and_refused() {
        assert!(unreachable(
            "Unable to connect to the server: dial tcp 127.0.0.1:6443: connect: connection refused"
        ));
        assert!(!unreachable(
            "Error from server (Forbidden): deployments.apps is forbidden"
        ));
        assert!(is_not_found(
            "Error from server (NotFound): deployments.apps \"web-blue\" not found"
        ));
    }

    #[test]
    fn a_pod_is_ready_by_its_condition_and_not_while_terminating() {
        let ready = json!({"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(pod_ready(&ready));
        let mut going = ready.clone();
        going["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        assert!(!pod_ready(&going));
        let not = json!({"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(!pod_ready(&not));
        assert!(!pod_ready(&json!({"metadata": {}, "status": {}})));
    }

    #[test]
    fn output_is_shortened_for_messages() {
        assert_eq!(shorten("  short \n"), "short");
        let long = "x".repeat(700);
        assert_eq!(shorten(&long).chars().count(), 601);
    }
}
