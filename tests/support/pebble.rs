//! A real ACME server for tests: Let's Encrypt's `pebble` (Debian package `pebble`) on
//! loopback with its own HTTPS certificate from a throw-away CA, and `openssl
//! s_client` checks of what a listener serves.
//!
//! Include it with `#[path = "support/pebble.rs"] mod pebble;` after `support/tls.rs`
//! (as `mod tls`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cutover::config::{AcmeChallenge, AcmeConfig};

use crate::tls::{require, Ca, Key};

pub const DOMAIN: &str = "localhost";

/// A pebble process on loopback, killed on drop.
pub struct Pebble {
    child: Child,
    pub listen: u16,
    pub mgmt: u16,
    pub ca: PathBuf,
}

impl Pebble {
    /// `http_port`/`tls_port`: where pebble's validation connects (the proxy's).
    pub fn start(
        dir: &Path,
        listen: u16,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
    ) -> Pebble {
        require("pebble", "pebble");
        let ca = Ca::new(dir);
        let (cert, key) = ca.leaf("pebble", "localhost", &["localhost"], Key::EcdsaP256);
        let mgmt = listen + 1;
        let mut conf = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            conf["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let path = dir.join("pebble.json");
        std::fs::write(&path, conf.to_string()).unwrap();
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&path)
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("pebble.log")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("pebble.err")).unwrap(),
            ))
            .spawn()
            .expect("start pebble");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", mgmt)).is_ok()
            {
                return Pebble {
                    child,
                    listen,
                    mgmt,
                    ca: ca.cert,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "pebble did not listen on {listen}: {}",
            std::fs::read_to_string(dir.join("pebble.err")).unwrap_or_default()
        );
    }

    pub fn acme(&self, challenge: AcmeChallenge, renew_before: Option<Duration>) -> AcmeConfig {
        AcmeConfig {
            domains: vec![DOMAIN.into()],
            directory: format!("https://localhost:{}/dir", self.listen),
            contact: Some("ops@example.com".into()),
            challenge,
            ca_file: Some(self.ca.clone()),
            renew_before,
        }
    }

    /// Pebble's issuing root (it makes a new one per run), written to `dir/root.pem`.
    pub fn root(&self, dir: &Path) -> PathBuf {
        require("curl", "curl");
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.ca)
            .arg(format!("https://localhost:{}/roots/0", self.mgmt))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join("root.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The leaf certificate (PEM) served for `DOMAIN` and whether it verifies against
/// `root`.
pub fn served_leaf(addr: SocketAddr, root: &Path) -> (String, bool) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            DOMAIN,
            "-CAfile",
        ])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (
        first_pem(&text),
        text.contains("Verify return code: 0 (ok)"),
    )
}

pub fn first_pem(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].replace(['\r', '\n'], "")
}
