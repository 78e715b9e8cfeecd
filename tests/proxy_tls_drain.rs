//! Shutdown reaches HTTP/1.1 connections that stay on the fast path over TLS: one
//! idle between requests is closed once lingering ends, and a request still waiting
//! on its upstream when the grace period ends is cut then, each long before its own
//! deadline. A TLS connection never parks (plain TCP ones leave the fast path when
//! idle, `tests/proxy_idle.rs`), so only the fast path's own waits on the listener's
//! state can end it: these tests fail if those waits miss the change
//! (`src/proxy/h1/gate.rs`).

#[path = "support/backend.rs"]
mod backend;
#[path = "support/h2.rs"]
mod h2;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls.rs"]
mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Backend;
use cutover::domain::Slot;
use cutover::proxy::table::Routes;
use cutover::proxy::ProxySettings;
use harness::{default_listener, live, upstream, within, SERVICE};
use tls::{listener_config, three_certs, TlsProxy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";

/// Settings whose own deadlines are far beyond what the tests wait.
fn patient() -> ProxySettings {
    ProxySettings {
        header_read_timeout: Duration::from_secs(60),
        upstream_timeout: Duration::from_secs(60),
        ..ProxySettings::default()
    }
}

async fn start(backend: &Backend, dir: &std::path::Path) -> (TlsProxy, std::path::PathBuf) {
    let (ca, certs) = three_certs(dir);
    let routes = Arc::new(Routes::new());
    routes.set(SERVICE, live(&upstream(Slot::Blue, backend.addr)));
    let config = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let proxy = TlsProxy::start(&routes, default_listener(SERVICE), config, patient()).await;
    (proxy, ca.cert)
}

/// Reads one response with a `Content-Length` body; its status line.
async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                return head.lines().next().unwrap().to_string();
            }
        }
        let n = s.read(&mut chunk).await.expect("read the response");
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the peer to close (EOF or reset); how long that took.
async fn closed_after(s: &mut (impl AsyncRead + Unpin)) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 256];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_tls_connection_idle_on_the_fast_path_closes_when_draining_starts() {
    within(30, async {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::text("ok").await;
        let (mut proxy, ca) = start(&backend, dir.path()).await;
        let mut c = h2::tls(proxy.addr, &ca, &[b"http/1.1"]).await;
        c.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut c).await, "http/1.1 200 ok");
        proxy.shutdown();
        // Lingering (1 s) first, then draining closes idle connections at once: long
        // before the 60 s `header_read_timeout` or the 5 s grace period's end.
        let after = closed_after(&mut c).await;
        assert!(
            after < Duration::from_secs(4),
            "closed {after:?} after the stop"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_waiting_on_its_upstream_is_cut_when_the_grace_period_ends() {
    within(40, async {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::slow(Duration::from_secs(120), "late").await;
        let (mut proxy, ca) = start(&backend, dir.path()).await;
        let mut c = h2::tls(proxy.addr, &ca, &[b"http/1.1"]).await;
        c.write_all(GET).await.unwrap();
        harness::wait_until(|| backend.hits() == 1).await;
        proxy.shutdown();
        // A request in flight keeps its connection through lingering (1 s) and the
        // grace period (5 s, `TlsProxy`), and is cut when that ends: not at the 60 s
        // `upstream_timeout`, nor when the backend answers after 120 s.
        let after = closed_after(&mut c).await;
        assert!(
            after >= Duration::from_secs(5) && after < Duration::from_secs(15),
            "closed {after:?} after the stop"
        );
    })
    .await;
}
