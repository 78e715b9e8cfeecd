//! TLS 1.3 session tickets and resumption on the proxy's TLS listeners: how many
//! tickets follow a full handshake (`tls13_tickets`, default 1) and that a real client
//! resumes with one (stateless tickets, so no cache to fall out of). Real clients:
//! `openssl s_client -msg` counts the tickets, Python's `ssl` resumes.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls.rs"]
mod tls;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use backend::Backend;
use cutover::domain::Slot;
use cutover::proxy::table::Routes;
use cutover::proxy::ProxySettings;
use harness::{default_listener, live, upstream, SERVICE};
use tls::{files, listener_config, Ca, Key, TlsProxy};

/// The NewSessionTicket messages `openssl s_client` receives over one TLS 1.3
/// connection that sends one request and reads until the server closes.
fn tickets_received(addr: SocketAddr) -> usize {
    tls::require("openssl", "openssl");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "a.test", "-tls1_3", "-msg", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 200"), "no response: {text}");
    text.lines()
        .filter(|l| l.starts_with("<<<") && l.ends_with("NewSessionTicket"))
        .count()
}

async fn proxy(dir: &std::path::Path, tickets: Option<u8>) -> (TlsProxy, Backend, Ca) {
    let ca = Ca::new(dir);
    let a = ca.leaf("a", "a.test", &["a.test"], Key::EcdsaP256);
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), vec![files(&a)]);
    if let Some(n) = tickets {
        cfg.tls13_tickets = n;
    }
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
    (p, backend, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_by_default_and_as_many_as_configured() {
    for (setting, want) in [(None, 1), (Some(0), 0), (Some(3), 3)] {
        let dir = tempfile::tempdir().unwrap();
        let (p, _b, _ca) = proxy(dir.path(), setting).await;
        let addr = p.addr;
        let got = tokio::task::spawn_blocking(move || tickets_received(addr))
            .await
            .unwrap();
        assert_eq!(got, want, "tls13_tickets {setting:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_its_session_with_the_ticket_on_tls13_and_tls12() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _b, ca) = proxy(dir.path(), None).await;
    let script = r#"
import socket, ssl, sys
port, ca, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = ctx.maximum_version = v
session = None
for _ in range(3):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="a.test", session=session)
    got = s.version()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    print(data.split(b"\r\n")[0].decode(), got, "resumed" if s.session_reused else "full")
    session = s.session
    s.close()
"#;
    for version in ["1.3", "1.2"] {
        let (port, caf) = (p.addr.port().to_string(), ca.cert.display().to_string());
        let out = tokio::task::spawn_blocking(move || tls::python(script, &[&port, &caf, version]))
            .await
            .unwrap();
        let v = if version == "1.3" {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("HTTP/1.1 200 OK {v} full\nHTTP/1.1 200 OK {v} resumed\nHTTP/1.1 200 OK {v} resumed\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
