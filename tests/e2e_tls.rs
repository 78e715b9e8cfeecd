//! TLS with the real binary (issue #13): certificate mistakes are config errors
//! (exit 2, the key and the file named), and a daemon serving HTTPS shows its
//! certificates' expiry in `status` and `/metrics` and reloads them on `SIGUSR1`.

mod support;
#[path = "support/tls.rs"]
mod tls;

use std::path::Path;

use support::{run_cli, wait_until, Harness};
use tls::{Ca, Key};

fn tls_table(listen: &str, cert: &Path, key: &Path) -> String {
    format!(
        "\n[[proxy.tls]]\nlisten = \"{listen}\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        cert.display(),
        key.display()
    )
}

const BASE: &str = r#"
[api]
listen = "127.0.0.1:24001"

[services.web]
listen = "127.0.0.1:24002"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;

#[tokio::test]
async fn certificate_mistakes_name_the_key_and_the_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (cert, key) = ca.leaf("site", "site.test", &["site.test"], Key::EcdsaP256);
    let (_, other_key) = ca.leaf("other", "other.test", &["other.test"], Key::Rsa2048);
    let missing = dir.path().join("missing.pem");
    let cases: Vec<(String, &str, String)> = vec![
        (
            tls_table("127.0.0.1:24002", &missing, &key),
            "proxy.tls[0].certificates[0].cert",
            missing.display().to_string(),
        ),
        (
            tls_table("127.0.0.1:24002", &cert, &cert),
            "proxy.tls[0].certificates[0].key",
            "PRIVATE KEY",
        )
            .into_owned(),
        (
            tls_table("127.0.0.1:24002", &cert, &other_key),
            "proxy.tls",
            other_key.display().to_string(),
        ),
        (
            tls_table("127.0.0.1:24999", &cert, &key),
            "proxy.tls[0].listen",
            "no service's `listen`".to_string(),
        ),
    ];
    for (i, (table, key_name, detail)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, format!("{BASE}{table}")).unwrap();
        let out = run_cli(&path, &["validate"]).await;
        assert_eq!(out.code, 2, "case {i}: {out}");
        assert!(
            out.stderr.contains(key_name),
            "case {i}: key {key_name} not named: {out}"
        );
        assert!(
            out.stderr.contains(detail.as_str()),
            "case {i}: {detail} not named: {out}"
        );
    }
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        format!("{BASE}{}", tls_table("127.0.0.1:24002", &cert, &key)),
    )
    .unwrap();
    let out = run_cli(&path, &["validate"]).await;
    assert_eq!(out.code, 0, "{out}");
}

trait IntoOwned {
    fn into_owned(self) -> (String, &'static str, String);
}

impl IntoOwned for (String, &'static str, &'static str) {
    fn into_owned(self) -> (String, &'static str, String) {
        (self.0, self.1, self.2.to_string())
    }
}

#[tokio::test]
async fn a_daemon_serves_https_shows_expiry_and_reloads_on_sigusr1() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let (cert, key) = ca.leaf("site", "site-v1", &["localhost"], Key::EcdsaP256);
    let mut h = Harness::builder().without_latency_trigger().build().await;
    let table = tls_table(&h.proxy.to_string(), &cert, &key);
    std::fs::write(
        &h.config_path,
        std::fs::read_to_string(&h.config_path).unwrap() + &table,
    )
    .unwrap();
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1: {out}");
    let addr = h.proxy;
    let caf = ca.cert.clone();
    let out = tokio::task::spawn_blocking(move || tls::curl(addr, "localhost", &caf, &[], "/"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from v1",
        "{out:?}"
    );

    let status = h.cli(&["status", "web", "--json"]).await.json();
    let certs_json = &status["tls_certificates"];
    assert_eq!(certs_json[0]["name"], "localhost", "{status}");
    let not_after = certs_json[0]["not_after"].as_i64().expect("not_after");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(not_after > now && not_after < now + 3 * 86_400, "{status}");
    let text = h.cli(&["status", "web"]).await;
    assert!(text.stdout.contains("tls localhost"), "{text}");
    let metrics = support::http_get(h.api, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains(&format!(
            "cutover_tls_certificate_expiry_seconds{{listener=\"{addr}\",name=\"localhost\",source=\"{}\"}} {not_after}",
            cert.display()
        )),
        "{metrics}"
    );

    // New files, then SIGUSR1: the next handshake sees the new certificate.
    let (c2, k2) = ca.leaf("next", "site-v2", &["localhost"], Key::EcdsaP256);
    std::fs::rename(&k2, &key).unwrap();
    std::fs::rename(&c2, &cert).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.daemon_pid() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    wait_until(10, "the new certificate to be served", || async {
        let s = tokio::task::spawn_blocking(move || tls::served_subject(addr, Some("localhost")))
            .await
            .unwrap();
        s.ok().filter(|s| s.ends_with("CN = site-v2"))
    })
    .await;
    let _ = h.cli(&["status"]).await;
}
