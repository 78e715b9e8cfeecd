//! The plaintext `redirect_from` listener of a TLS listener (issue #13), driven by
//! `curl`: 308 to HTTPS for the hosts the TLS listener serves, ACME HTTP-01 answers,
//! and 421 for a host the TLS listener would refuse in its handshake.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use backend::Backend;
use cutover::domain::Slot;
use cutover::proxy::table::Routes;
use cutover::proxy::ProxySettings;
use harness::{default_listener, live, upstream, SERVICE};
use tls::{listener_config, three_certs, TlsProxy};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A free plaintext address for the redirect listener.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn echo_proxy(config: cutover::config::TlsListenerConfig) -> (TlsProxy, Backend) {
    let backend = Backend::echo_headers().await;
    let routes = Arc::new(Routes::new());
    routes.set(SERVICE, live(&upstream(Slot::Blue, backend.addr)));
    let settings = ProxySettings::default();
    let proxy = TlsProxy::start(&routes, default_listener(SERVICE), config, settings).await;
    (proxy, backend)
}

/// `curl -i` of `http://<plain><path>` with `Host: host`.
async fn plain_get(plain: SocketAddr, host: &str, path: &str) -> String {
    let (host, path) = (format!("Host: {host}"), path.to_string());
    let out = blocking(move || {
        tls::require("curl", "curl");
        std::process::Command::new("curl")
            .args(["-sS", "-i", "-H", &host, "--max-time", "5"])
            .arg(format!("http://{plain}{path}"))
            .output()
            .unwrap()
    })
    .await;
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_sends_308_to_https_and_answers_acme_challenges() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, certs) = three_certs(dir.path());
    let plain = free_addr();
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    cfg.redirect_from = Some(plain);
    let (proxy, backend) = echo_proxy(cfg).await;
    proxy
        .edge
        .challenges()
        .set_http01("tok-1", "tok-1.key-auth");
    let https_port = proxy.addr.port();
    // `unknown_sni = "default"`: the default certificate answers any host.
    let text = plain_get(plain, "shop.example", "/a/b?q=1").await;
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert!(
        text.contains(&format!(
            "location: https://shop.example:{https_port}/a/b?q=1"
        )),
        "{text}"
    );
    let text = plain_get(plain, "shop.example", "/.well-known/acme-challenge/tok-1").await;
    assert!(text.ends_with("\r\n\r\ntok-1.key-auth"), "{text}");
    assert_eq!(
        backend.hits(),
        0,
        "nothing on the redirect listener reaches the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unknown_sni_refused_a_host_without_a_certificate_gets_421_not_a_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, certs) = three_certs(dir.path());
    let plain = free_addr();
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    cfg.redirect_from = Some(plain);
    cfg.refuse_unknown_sni = true;
    let (proxy, backend) = echo_proxy(cfg).await;
    let port = proxy.addr.port();
    // Exact and wildcard names of the certificates are redirected.
    for host in ["a.test", "x.wild.test:80"] {
        let text = plain_get(plain, host, "/p").await;
        assert!(text.starts_with("HTTP/1.1 308"), "{host}: {text}");
        let name = host.split(':').next().unwrap();
        assert!(
            text.contains(&format!("location: https://{name}:{port}/p")),
            "{text}"
        );
    }
    for host in ["unknown.test", "127.0.0.1", "a.b.wild.test"] {
        let text = plain_get(plain, host, "/p").await;
        assert!(text.starts_with("HTTP/1.1 421"), "{host}: {text}");
        assert!(!text.contains("location:"), "{text}");
        assert!(
            text.ends_with("this host is not served over HTTPS here\n"),
            "{text}"
        );
    }
    // An ACME challenge for a name with no certificate yet is still answered.
    proxy
        .edge
        .challenges()
        .set_http01("tok-2", "tok-2.key-auth");
    let text = plain_get(plain, "new.test", "/.well-known/acme-challenge/tok-2").await;
    assert!(text.ends_with("\r\n\r\ntok-2.key-auth"), "{text}");
    assert_eq!(backend.hits(), 0);
}
