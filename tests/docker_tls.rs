//! The Docker runtime reaching its engine over TLS, as a remote engine is reached:
//! `DOCKER_HOST=tcp://…`, `DOCKER_TLS_VERIFY=1`, and `ca.pem`, `cert.pem`, `key.pem` in
//! `DOCKER_CERT_PATH` (mutual TLS, as `dockerd --tlsverify` requires).
//!
//! No second engine can run here, so the engine is the local one behind a mutual-TLS
//! forwarder ([`TlsEngine`]): it accepts only clients whose certificate the test CA
//! signed, passes their bytes to the engine's socket, and counts both. The containers
//! themselves are the real engine's. Needs a running Docker engine and openssl.

#[path = "support/docker.rs"]
mod docker_support;
mod support;
#[path = "support/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cutover::store::DeploymentOutcome;
use docker_support::{deploy_and_wait, status, use_runtime, Scope};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::Harness;
use tls::{Ca, Key};

/// The local engine behind a TLS listener that requires a client certificate.
struct TlsEngine {
    addr: SocketAddr,
    /// Connections that presented a certificate the CA signed and reached the engine.
    forwarded: Arc<AtomicUsize>,
    /// Connections whose handshake failed (no or an unknown client certificate).
    refused: Arc<AtomicUsize>,
}

/// The engine's own socket, where the daemon would find it without the TLS variables.
fn engine_socket() -> PathBuf {
    let host = cutover::runtime::docker::engine::engine_host();
    let socket = host.strip_prefix("unix://");
    PathBuf::from(socket.expect("these tests reach the local engine by its unix socket"))
}

fn certs(pem: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(pem)
        .expect("certificate file")
        .map(|c| c.expect("certificate"))
        .collect()
}

impl TlsEngine {
    /// Serves `server` (a leaf for `localhost`) and trusts client certificates `ca` signed.
    async fn start(ca: &Ca, server: &(PathBuf, PathBuf)) -> TlsEngine {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&ca.cert) {
            roots.add(c).expect("CA certificate");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .expect("client verifier");
        let key = PrivateKeyDer::from_pem_file(&server.1).expect("server key");
        let config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&server.0), key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (forwarded, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (f, r) = (forwarded.clone(), refused.clone());
        let socket = engine_socket();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, f, r, socket) =
                    (acceptor.clone(), f.clone(), r.clone(), socket.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        r.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let Ok(mut engine) = tokio::net::UnixStream::connect(&socket).await else {
                        return;
                    };
                    f.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
                });
            }
        });
        TlsEngine {
            addr,
            forwarded,
            refused,
        }
    }

    /// The daemon's environment for this engine, its client files in `cert_path`.
    fn env(&self, cert_path: &Path) -> Vec<(String, String)> {
        vec![
            (
                "DOCKER_HOST".into(),
                format!("tcp://localhost:{}", self.addr.port()),
            ),
            ("DOCKER_TLS_VERIFY".into(), "1".into()),
            ("DOCKER_CERT_PATH".into(), cert_path.display().to_string()),
        ]
    }
}

/// A `DOCKER_CERT_PATH` directory: `ca` as `ca.pem`, `client` as `cert.pem`/`key.pem`.
fn cert_path(dir: &Path, ca: &Path, client: &(PathBuf, PathBuf)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(ca, dir.join("ca.pem")).unwrap();
    std::fs::copy(&client.0, dir.join("cert.pem")).unwrap();
    std::fs::copy(&client.1, dir.join("key.pem")).unwrap();
    dir.to_path_buf()
}

async fn harness(scope: &Scope, env: &[(String, String)]) -> Harness {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let runtime = "kind = \"docker\"\nimage = \"cutover-demo:{version}\"\nport = 8080\n\
                   stop_grace = \"5s\"\ncommand = [\"--version\", \"{version}\"]\n";
    use_runtime(&h, &scope.service, runtime);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    h.start_with_env(&env).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_switches_containers_through_an_engine_reached_over_mutual_tls() {
    let scope = Scope::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let server = ca.leaf("engine", "localhost", &["localhost"], Key::EcdsaP256);
    let client = ca.leaf("client", "cutover", &["cutover"], Key::EcdsaP256);
    let engine = TlsEngine::start(&ca, &server).await;
    let env = engine.env(&cert_path(&dir.path().join("client"), &ca.cert, &client));
    let h = harness(&scope, &env).await;
    let svc = &scope.service;

    for v in ["v1", "v2"] {
        let d = deploy_and_wait(&h, svc, v).await;
        assert_eq!(d.outcome, Some(DeploymentOutcome::Succeeded), "{v}: {d:?}");
    }
    assert_eq!(status(&h, svc).await.live_version.as_deref(), Some("v2"));
    // Both slots' containers are the real engine's, made through the TLS listener.
    assert_eq!(scope.running_containers().len(), 2);
    assert_eq!(
        scope.inspect(
            &scope.container("green"),
            "{{index .Config.Labels \"io.cutover.version\"}}"
        ),
        "v2"
    );
    let forwarded = engine.forwarded.load(Ordering::SeqCst);
    assert!(
        forwarded > 0,
        "no engine call went through the TLS listener"
    );
    assert_eq!(engine.refused.load(Ordering::SeqCst), 0);
    eprintln!("engine connections over TLS: {forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_engine_does_not_trust_fails_the_deploy_naming_the_engine_and_the_files(
) {
    let scope = Scope::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let server = ca.leaf("engine", "localhost", &["localhost"], Key::EcdsaP256);
    let engine = TlsEngine::start(&ca, &server).await;
    // The client trusts the engine's CA, but its own certificate is another CA's.
    let other_dir = dir.path().join("other-ca");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Ca::new(&other_dir);
    let stranger = other.leaf("client", "cutover", &["cutover"], Key::EcdsaP256);
    let env = engine.env(&cert_path(&dir.path().join("client"), &ca.cert, &stranger));
    let h = harness(&scope, &env).await;
    let svc = &scope.service;

    let d = deploy_and_wait(&h, svc, "v1").await;
    assert_eq!(d.outcome, Some(DeploymentOutcome::Failed), "{d:?}");
    assert_eq!(d.switched_at, None, "{d:?}");
    let reason = d.reason.clone().unwrap_or_default();
    let host = format!("tcp://localhost:{}", engine.addr.port());
    assert!(
        reason.contains(&format!("cannot reach the Docker engine at {host}"))
            && reason.contains("DOCKER_CERT_PATH"),
        "the reason should name the engine and the certificate files: {reason}"
    );
    assert!(
        engine.refused.load(Ordering::SeqCst) > 0,
        "the engine never saw the client"
    );
    assert_eq!(engine.forwarded.load(Ordering::SeqCst), 0);
    assert!(scope.running_containers().is_empty());
}
