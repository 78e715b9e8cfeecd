//! ACME with the real binary (issue #13 item 2): a daemon whose `[proxy.tls.acme]`
//! points at a real pebble obtains a certificate by TLS-ALPN-01 on its own TLS
//! listener, serves it, shows it in `status` and `/metrics`, stores it privately, and
//! serves the stored one after a restart with the CA gone.

#[path = "support/pebble.rs"]
mod pebble;
mod support;
#[path = "support/tls.rs"]
mod tls;

use std::os::unix::fs::PermissionsExt;

use pebble::{first_pem, served_leaf, Pebble, DOMAIN};
use support::{wait_until, Harness};
use tls::{Ca, Key};

#[tokio::test]
async fn a_daemon_obtains_serves_and_keeps_an_acme_certificate() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new(files.path());
    let (cert, key) = ca.leaf("default", "default.test", &["default.test"], Key::EcdsaP256);
    let mut h = Harness::builder().without_latency_trigger().build().await;
    let pebble_dir = files.path().join("pebble");
    std::fs::create_dir(&pebble_dir).unwrap();
    let pebble = Pebble::start(&pebble_dir, 24540, 24542, h.proxy.port(), None);
    let table = format!(
        "\n[[proxy.tls]]\nlisten = \"{}\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
         [proxy.tls.acme]\ndomains = [\"{DOMAIN}\"]\ndirectory = \"https://localhost:{}/dir\"\n\
         challenge = \"tls-alpn-01\"\nca_file = \"{}\"\ncontact = \"ops@example.com\"\n",
        h.proxy,
        cert.display(),
        key.display(),
        pebble.listen,
        pebble.ca.display()
    );
    std::fs::write(
        &h.config_path,
        std::fs::read_to_string(&h.config_path).unwrap() + &table,
    )
    .unwrap();
    let out = h.cli(&["validate"]).await;
    assert_eq!(out.code, 0, "{out}");
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1: {out}");

    let root = pebble.root(files.path());
    let addr = h.proxy;
    let r = root.clone();
    let leaf = wait_until(30, "the ACME certificate to be served", || {
        let r = r.clone();
        async move {
            let (leaf, ok) = tokio::task::spawn_blocking(move || served_leaf(addr, &r))
                .await
                .unwrap();
            ok.then_some(leaf)
        }
    })
    .await;
    let acme_dir = h.state_dir().join("acme");
    let stored = acme_dir.join(format!("{DOMAIN}.crt.pem"));
    assert_eq!(leaf, first_pem(&std::fs::read_to_string(&stored).unwrap()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&acme_dir), 0o700);
    for e in std::fs::read_dir(&acme_dir).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }

    // Visible like a file certificate.
    let status = h.cli(&["status", "web", "--json"]).await.json();
    let listed = status["tls_certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|c| c["name"] == DOMAIN && c["not_after"].as_i64().is_some()),
        "{status}"
    );
    let metrics = support::http_get(h.api, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains(&format!(
            "cutover_tls_certificate_expiry_seconds{{listener=\"{addr}\",name=\"{DOMAIN}\",source=\"dynamic\"}}"
        )),
        "{metrics}"
    );

    // Restarted with the CA gone: the stored certificate is served.
    drop(pebble);
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;
    h.restart().await;
    let again = wait_until(30, "the stored certificate to be served", || {
        let r = root.clone();
        async move {
            let (leaf, ok) = tokio::task::spawn_blocking(move || served_leaf(addr, &r))
                .await
                .unwrap();
            ok.then_some(leaf)
        }
    })
    .await;
    assert_eq!(again, leaf);
}
