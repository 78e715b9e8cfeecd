//! The API over HTTPS (issue 13): the real daemon serves its API with
//! `[api] tls_cert_file`/`tls_key_file`, and the real CLI reaches it with
//! `tls_ca_file`; without the CA the CLI says the certificate is not trusted and which
//! key fixes it; a plain-HTTP client gets no API.
//!
//! Fails (never skips) when `openssl` is missing: `.ci/run` installs it.

mod support;

#[path = "support/tls_client.rs"]
mod tls;

use support::Harness;
use tls::TestCerts;

#[tokio::test]
async fn the_cli_deploys_through_an_api_served_over_https_and_refuses_an_untrusted_one() {
    let certs = TestCerts::new();
    let mut h = Harness::builder().build().await;
    let api_line = format!("listen = \"{}\"\n", h.api);
    h.edit_config(
        &api_line,
        &format!(
            "{api_line}tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_ca_file = \"{}\"\n",
            certs.cert.display(),
            certs.key.display(),
            certs.ca.display()
        ),
    );
    h.api_tls = Some(cutover::tls::ClientTls {
        ca_file: Some(certs.ca.clone()),
        ..Default::default()
    });
    h.start().await;

    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = h.cli(&["status", "web", "--json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["live_version"], "v1", "{out}");

    // The same CLI without the CA: refused at the handshake, with the key to set.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let untrusting = h.write(
        "untrusting.toml",
        &text.replace(&format!("tls_ca_file = \"{}\"\n", certs.ca.display()), ""),
    );
    let out = h.cli_with_config(&untrusting, &["status", "web"]).await;
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("certificate not trusted")
            && out.stderr.contains("set [api] tls_ca_file"),
        "{out}"
    );

    // Plain HTTP to the HTTPS port gets no API answer.
    let plain = support::http_get(h.api, "/api/v1/services").await;
    assert!(plain.is_err(), "{plain:?}");
}
