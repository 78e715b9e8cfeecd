//! The connection to the Docker engine, made on first use.
//!
//! Why lazily: the daemon builds every runtime at boot, and a config that names a
//! Docker service must still load (and its process services still deploy) while the
//! engine is down; the error then names the engine and says what to check (the
//! socket's permissions, or for `DOCKER_TLS_VERIFY` the certificates). The API
//! version is negotiated because engines in the field are older than the client's
//! default (this one speaks 1.41).

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{CreateImageOptions, LogsOptions};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

/// Where the engine is, as the user configured it.
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// What to check when the engine at `host` does not answer: the socket's permissions
/// for a local engine, the certificates for one over TLS.
fn what_to_check(host: &str, tls_verify: bool) -> &'static str {
    let remote = host.starts_with("tcp://") || host.starts_with("http");
    match (remote, tls_verify || host.starts_with("https://")) {
        (false, _) => "is it running, and may this user use its socket? DOCKER_HOST selects another",
        (true, false) => "is it running and listening there? For TLS set DOCKER_TLS_VERIFY=1",
        (true, true) => {
            "is it running and listening there, and do ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH (default ~/.docker) belong to it?"
        }
    }
}

#[derive(Default)]
pub struct Engine {
    docker: OnceCell<Docker>,
}

impl Engine {
    /// The client, connecting (and negotiating the API version) the first time.
    pub async fn get(&self) -> Result<&Docker, String> {
        self.docker
            .get_or_try_init(|| async {
                let host = engine_host();
                let hint = what_to_check(&host, std::env::var_os("DOCKER_TLS_VERIFY").is_some());
                let unreachable = |e: DockerError| {
                    format!("cannot reach the Docker engine at {host} ({hint}): {e}")
                };
                let docker = Docker::connect_with_defaults().map_err(unreachable)?;
                docker.negotiate_version().await.map_err(unreachable)
            })
            .await
    }
}

/// Whether the error is the engine's 404 (no such container or image).
pub fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's message without the client's wrapping.
pub fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Makes sure `image` is present: inspects it, pulls it when missing.
pub async fn ensure_image(docker: &Docker, image: &str) -> Result<(), String> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(format!("cannot inspect image {image}: {}", message(&e))),
    }
    tracing::info!(image, "image not present locally; pulling");
    let options = CreateImageOptions {
        from_image: Some(image.to_string()),
        ..Default::default()
    };
    let mut pull = docker.create_image(Some(options), None, None);
    while let Some(step) = pull.next().await {
        let step = step.map_err(|e| {
            format!(
                "image {image} is not present locally and pulling it failed: {}",
                message(&e)
            )
        })?;
        if let Some(err) = step.error_detail.and_then(|d| d.message) {
            return Err(format!(
                "image {image} is not present locally and pulling it failed: {err}"
            ));
        }
    }
    // A pull that "succeeds" without the image (a platform mismatch) is still a failure.
    docker.inspect_image(image).await.map(|_| ()).map_err(|e| {
        format!(
            "image {image} is still missing after a pull: {}",
            message(&e)
        )
    })
}

/// The last `n` lines a container wrote (stdout and stderr, interleaved as written).
pub async fn log_tail(docker: &Docker, container: &str, n: usize) -> Vec<String> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: n.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::what_to_check;

    #[test]
    fn the_hint_names_the_socket_for_a_local_engine_and_the_certificates_for_tls() {
        assert!(what_to_check("unix:///var/run/docker.sock", false).contains("socket"));
        assert!(what_to_check("tcp://10.0.0.5:2376", true).contains("DOCKER_CERT_PATH"));
        assert!(what_to_check("https://docker.internal:2376", false).contains("cert.pem"));
        assert!(what_to_check("tcp://10.0.0.5:2375", false).contains("DOCKER_TLS_VERIFY"));
    }
}
