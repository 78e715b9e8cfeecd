//! Test certificates and a tiny HTTPS server for the TLS client tests.
//!
//! The certificates are made by the `openssl` command line (a CA, and a server
//! certificate it signs for `localhost` and `127.0.0.1`, ECDSA P-256), fresh in a temp
//! directory per test, so nothing trusted outside the test is involved. Fails (never
//! skips) when `openssl` is missing: `.ci/run` installs it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A CA and a server certificate it signed, as PEM files.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run `openssl`: install the openssl package (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    /// Client TLS settings that trust this test CA only (`ca_file`).
    pub fn trusting(&self) -> cutover::tls::ClientTls {
        cutover::tls::ClientTls {
            ca_file: Some(self.ca.clone()),
            ..cutover::tls::ClientTls::default()
        }
    }

    /// A CA named `ca_name` and a certificate for `localhost`/`127.0.0.1`.
    pub fn new() -> TestCerts {
        Self::for_names("DNS:localhost,IP:127.0.0.1")
    }

    /// A CA and a server certificate carrying `san` (openssl's `subjectAltName` form).
    pub fn for_names(san: &str) -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Cutover Test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=cutover-test-server",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        TestCerts {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        }
    }
}

/// One request as the server saw it: `"METHOD /path"` and the body.
pub type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTPS/1.1 server on 127.0.0.1 serving `certs`, answering every request with
/// `status` and `body`; what it receives is recorded in the returned [`Seen`].
pub async fn https_server(
    certs: &TestCerts,
    status: u16,
    body: &'static str,
) -> (SocketAddr, Seen) {
    let config = cutover::tls::server_config(&certs.cert, &certs.key, &[b"http/1.1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let line = format!("{} {}", req.method(), req.uri());
                        let bytes = req.into_body().collect().await?.to_bytes();
                        record
                            .lock()
                            .unwrap()
                            .push((line, String::from_utf8_lossy(&bytes).into_owned()));
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// An HTTPS/1.1 server on 127.0.0.1 serving `certs` that turns every request into a
/// byte echo: an upgrade request (`Upgrade: <proto>`) is answered 101 and a `CONNECT`
/// 200, then whatever comes on the connection is sent back. Returns the address and
/// the number of requests that reached the app (after a handshake it accepted).
pub async fn https_tunnel_echo(certs: &TestCerts) -> (SocketAddr, Arc<Mutex<usize>>) {
    let config = cutover::tls::server_config(&certs.cert, &certs.key, &[b"http/1.1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Arc<Mutex<usize>> = Arc::default();
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    *counted.lock().unwrap() += 1;
                    let connect = req.method() == hyper::Method::CONNECT;
                    let proto = req.headers().get(hyper::header::UPGRADE).cloned();
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = on_upgrade.await {
                            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                    match (connect, proto) {
                        (true, _) => {}
                        (false, Some(proto)) => {
                            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                            let h = resp.headers_mut();
                            h.insert(hyper::header::CONNECTION, "upgrade".parse().unwrap());
                            h.insert(hyper::header::UPGRADE, proto);
                        }
                        (false, None) => *resp.status_mut() = hyper::StatusCode::BAD_REQUEST,
                    }
                    async move { Ok::<_, hyper::Error>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, hits)
}
