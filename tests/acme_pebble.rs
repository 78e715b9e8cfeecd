//! ACME against a real CA (issue #13 item 2): Let's Encrypt's test server `pebble`
//! (Debian package `pebble`) on loopback, validating the proxy's own answers: HTTP-01
//! on the redirect listener, TLS-ALPN-01 on the TLS listener. The issued chain is
//! checked with `openssl s_client` against pebble's issuing root (fetched from its
//! management port), renewal under an open connection, and the stored files' modes.
//!
//! Fixed ports (band 24500-24999): each test has its own pebble ports; the proxy's
//! TLS listener is bound first so pebble's `tlsPort` can name it.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/pebble.rs"]
mod pebble;
#[path = "support/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use backend::Backend;
use cutover::config::AcmeChallenge;
use cutover::domain::Slot;
use cutover::proxy::table::Routes;
use cutover::proxy::tls::acme::AcmeTask;
use cutover::proxy::ProxySettings;
use harness::{default_listener, live, upstream, SERVICE};
use pebble::{first_pem, served_leaf, Pebble, DOMAIN};
use tls::{files, listener_config, Ca, Key, TlsProxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn proxy(redirect: Option<SocketAddr>, dir: &Path) -> (TlsProxy, Backend) {
    let ca = Ca::new(&dir.join("default"));
    let d = ca.leaf("default", "default.test", &["default.test"], Key::EcdsaP256);
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), vec![files(&d)]);
    cfg.redirect_from = redirect;
    let backend = Backend::echo_headers().await;
    let routes = Arc::new(Routes::new());
    routes.set(SERVICE, live(&upstream(Slot::Blue, backend.addr)));
    let p = TlsProxy::start(
        &routes,
        default_listener(SERVICE),
        cfg,
        ProxySettings::default(),
    )
    .await;
    (p, backend)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn issue_and_check(challenge: AcmeChallenge, band: u16) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("default")).unwrap();
    let redirect: SocketAddr = format!("127.0.0.1:{}", band + 2).parse().unwrap();
    let (proxy, _b) = proxy(Some(redirect), dir.path()).await;
    let pebble = Pebble::start(dir.path(), band, redirect.port(), proxy.addr.port(), None);
    let store = proxy.edge.store(proxy.addr).unwrap();
    let state = dir.path().join("state");
    let task = AcmeTask::new(
        pebble.acme(challenge, None),
        store.clone(),
        proxy.edge.challenges().clone(),
        &state,
    );
    let installed = tokio::time::timeout(Duration::from_secs(60), task.obtain())
        .await
        .expect("issuance within 60s")
        .unwrap_or_else(|e| panic!("{challenge:?} issuance: {e}"));
    assert!(installed.renew_at < installed.not_after);

    // The proxy serves the issued certificate for the domain, and it chains to
    // pebble's root.
    let root = pebble.root(dir.path());
    let addr = proxy.addr;
    let (leaf, verified) = tokio::task::spawn_blocking(move || served_leaf(addr, &root))
        .await
        .unwrap();
    let stored = std::fs::read_to_string(task.cert_path()).unwrap();
    assert_eq!(
        leaf,
        first_pem(&stored),
        "the proxy serves the stored certificate"
    );
    assert!(verified, "the served chain verifies against pebble's root");
    // Other names keep the file certificate.
    let other =
        tokio::task::spawn_blocking(move || tls::served_subject(addr, Some("default.test")))
            .await
            .unwrap()
            .unwrap();
    assert!(other.ends_with("CN = default.test"), "{other}");
    // Visible like file certificates.
    assert!(
        store
            .status()
            .iter()
            .any(|s| format!("{s:?}").contains(DOMAIN)),
        "{:?}",
        store.status()
    );

    // Stored privately; challenges withdrawn.
    assert_eq!(mode(&state.join("acme")), 0o700);
    assert_eq!(mode(&task.cert_path()), 0o600);
    assert_eq!(mode(&task.key_path()), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(state.join("acme"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("account-"))
        .collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0].path()), 0o600);
    assert!(proxy.edge.challenges().tls_alpn01(DOMAIN).is_none());

    // A restart installs the stored certificate without the CA.
    let fresh = proxy.edge.store(proxy.addr).unwrap();
    fresh.remove_dynamic(DOMAIN);
    let again = AcmeTask::new(
        pebble.acme(challenge, None),
        fresh.clone(),
        proxy.edge.challenges().clone(),
        &state,
    );
    drop(pebble);
    let loaded = again
        .load_stored()
        .unwrap()
        .expect("the stored certificate is still valid");
    assert_eq!(loaded.not_after, installed.not_after);
    let root_gone = dir.path().join("root.pem");
    let (leaf2, _) = tokio::task::spawn_blocking(move || served_leaf(addr, &root_gone))
        .await
        .unwrap();
    assert_eq!(leaf2, leaf);

    // A CA that no longer knows the stored account (a new pebble): a new account is
    // made and a new certificate issued.
    let reset = dir.path().join("reset");
    std::fs::create_dir(&reset).unwrap();
    let pebble = Pebble::start(&reset, band, redirect.port(), proxy.addr.port(), None);
    let task = AcmeTask::new(
        pebble.acme(challenge, None),
        fresh.clone(),
        proxy.edge.challenges().clone(),
        &state,
    );
    tokio::time::timeout(Duration::from_secs(60), task.obtain())
        .await
        .expect("issuance within 60s")
        .unwrap_or_else(|e| panic!("{challenge:?} issuance after a CA reset: {e}"));
    let root = pebble.root(&reset);
    let (leaf3, verified) = tokio::task::spawn_blocking(move || served_leaf(addr, &root))
        .await
        .unwrap();
    assert!(
        verified && leaf3 != leaf,
        "the new CA's certificate is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issuance_serves_the_certificate_from_pebble_and_stores_it_privately() {
    issue_and_check(AcmeChallenge::Http01, 24500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issuance_serves_the_certificate_from_pebble() {
    issue_and_check(AcmeChallenge::TlsAlpn01, 24510).await;
}

/// Pebble issues 40s certificates; `renew_before = 35s` makes the daemon task renew
/// about 5s after each issuance. A TLS connection opened on the first certificate
/// keeps working across the renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_installs_a_new_certificate_without_dropping_an_open_connection() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("default")).unwrap();
    let band = 24520;
    let redirect: SocketAddr = format!("127.0.0.1:{}", band + 2).parse().unwrap();
    let (proxy, _b) = proxy(Some(redirect), dir.path()).await;
    let pebble = Pebble::start(
        dir.path(),
        band,
        redirect.port(),
        proxy.addr.port(),
        Some(40),
    );
    let store = proxy.edge.store(proxy.addr).unwrap();
    let state = dir.path().join("state");
    let task = AcmeTask::new(
        pebble.acme(AcmeChallenge::Http01, Some(Duration::from_secs(35))),
        store.clone(),
        proxy.edge.challenges().clone(),
        &state,
    );
    let cert_path = task.cert_path();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(task.run(stop_rx));
    let root = pebble.root(dir.path());
    let addr = proxy.addr;

    let served = |root: PathBuf| async move {
        tokio::task::spawn_blocking(move || served_leaf(addr, &root))
            .await
            .unwrap()
    };
    // First certificate.
    let mut first = None;
    for _ in 0..300 {
        let (leaf, ok) = served(root.clone()).await;
        if ok {
            first = Some(leaf);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("a first certificate from pebble within 30s");

    // An open TLS connection on it.
    let mut conn = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            DOMAIN,
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = conn.stdin.take().unwrap();
    let mut lines = BufReader::new(conn.stdout.take().unwrap()).lines();
    let mut ask = async |n: u32| {
        stdin
            .write_all(format!("GET /r{n} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("an answer on the open connection")
                .unwrap()
                .expect("the connection stays open");
            if line.starts_with("HTTP/1.1 ") {
                return line;
            }
        }
    };
    assert!(ask(1).await.starts_with("HTTP/1.1 200"));

    // Renewed: a different certificate, still chaining to pebble's root, and stored.
    let mut renewed = None;
    for _ in 0..300 {
        let (leaf, ok) = served(root.clone()).await;
        if ok && leaf != first {
            renewed = Some(leaf);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = renewed.expect("a renewed certificate within 30s");
    let stored = std::fs::read_to_string(&cert_path).unwrap();
    assert_ne!(first_pem(&stored), first);
    let _ = renewed;

    // The connection opened before the renewal still answers.
    assert!(ask(2).await.starts_with("HTTP/1.1 200"));

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the task stops")
        .unwrap();
    drop(pebble);
}

/// Pebble's HTTP-01 validation reaches nothing (its `httpPort` is not the redirect
/// listener): the attempt fails, no certificate is installed or stored (the file
/// certificate keeps answering), and the task, waiting out its backoff, stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_installs_nothing_and_the_task_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("default")).unwrap();
    let band = 24530;
    let redirect: SocketAddr = format!("127.0.0.1:{}", band + 2).parse().unwrap();
    let (proxy, _b) = proxy(Some(redirect), dir.path()).await;
    // Validation goes to band+3, where nothing listens.
    let pebble = Pebble::start(dir.path(), band, band + 3, proxy.addr.port(), None);
    let store = proxy.edge.store(proxy.addr).unwrap();
    let state = dir.path().join("state");
    let task = AcmeTask::new(
        pebble.acme(AcmeChallenge::Http01, None),
        store.clone(),
        proxy.edge.challenges().clone(),
        &state,
    );
    let err = tokio::time::timeout(Duration::from_secs(60), task.obtain())
        .await
        .expect("an answer within 60s")
        .expect_err("validation must fail");
    assert!(err.to_string().contains("ACME"), "{err}");
    assert!(!task.cert_path().exists(), "nothing stored after a failure");
    let addr = proxy.addr;
    let served = tokio::task::spawn_blocking(move || tls::served_subject(addr, Some(DOMAIN)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        served.ends_with("CN = default.test"),
        "the file certificate still answers for {DOMAIN}: {served}"
    );
    assert!(
        !store
            .status()
            .iter()
            .any(|s| format!("{s:?}").contains(DOMAIN)),
        "no ACME certificate installed: {:?}",
        store.status()
    );

    // The daemon task: its first attempt fails the same way, then it waits 30s; a
    // stop during that wait ends it at once.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(task.run(stop_rx));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!running.is_finished());
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the task stops during its backoff")
        .unwrap();
    drop(pebble);
}
