//! TLS termination and HTTP/2 on the built-in proxy (issue #13), driven by real TLS
//! clients: `openssl s_client`, `curl`, `h2load` and Python's `ssl`. Certificates are
//! made per test with the `openssl` CLI.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls.rs"]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use backend::Backend;
use cutover::domain::Slot;
use cutover::proxy::table::Routes;
use cutover::proxy::ProxySettings;
use harness::{default_listener, live, upstream, within, SERVICE};
use tls::{files, listener_config, three_certs, Ca, Key, TlsProxy};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn echo_proxy(
    config: cutover::config::TlsListenerConfig,
    settings: ProxySettings,
) -> (TlsProxy, Backend, Arc<Routes>) {
    let backend = Backend::echo_headers().await;
    let routes = Arc::new(Routes::new());
    routes.set(SERVICE, live(&upstream(Slot::Blue, backend.addr)));
    let proxy = TlsProxy::start(&routes, default_listener(SERVICE), config, settings).await;
    (proxy, backend, routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_exact_then_the_one_label_wildcard_then_the_default_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    let addr = proxy.addr;
    let cases = [
        (Some("a.test"), "CN = a.test"),
        (Some("A.TEST"), "CN = a.test"),
        (Some("x.wild.test"), "CN = wild"),
        // RFC 6125: the wildcard covers one label only.
        (Some("a.b.wild.test"), "CN = default.test"),
        (Some("wild.test"), "CN = default.test"),
        (Some("unknown.test"), "CN = default.test"),
        (None, "CN = default.test"),
    ];
    for (sni, want) in cases {
        let got = blocking(move || tls::served_subject(addr, sni)).await;
        let got = got.unwrap_or_else(|e| panic!("{sni:?}: {e}"));
        assert!(
            got.ends_with(want),
            "SNI {sni:?}: served {got}, expected {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_and_clients_without_sni_are_refused_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    cfg.refuse_unknown_sni = true;
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    let addr = proxy.addr;
    assert!(blocking(move || tls::served_subject(addr, None))
        .await
        .is_err());
    assert!(
        blocking(move || tls::served_subject(addr, Some("unknown.test")))
            .await
            .is_err()
    );
    let known = blocking(move || tls::served_subject(addr, Some("a.test"))).await;
    assert!(known.unwrap().ends_with("CN = a.test"));
    // A real client gets a handshake failure, not the wrong certificate.
    let caf = ca.cert.clone();
    let out = blocking(move || tls::curl(addr, "nope.test", &caf, &[], "/")).await;
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_the_app_over_tls_with_x_forwarded_proto_https_and_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    cfg.hsts = Some(tls::hsts_year());
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    let (addr, caf) = (proxy.addr, ca.cert.clone());
    let out = blocking(move || {
        tls::curl(
            addr,
            "a.test",
            &caf,
            &["-i", "--http1.1", "-H", "X-Forwarded-Proto: http"],
            "/x",
        )
    })
    .await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
    assert!(!text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_off_by_default_and_a_trusted_proxys_proto_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let settings = ProxySettings {
        trusted_proxies: vec![cutover::config::IpNet::parse("127.0.0.1").unwrap()].into(),
        ..ProxySettings::default()
    };
    let (proxy, _b, _r) = echo_proxy(cfg, settings).await;
    let (addr, caf) = (proxy.addr, ca.cert.clone());
    let out = blocking(move || {
        tls::curl(
            addr,
            "a.test",
            &caf,
            &["-i", "-H", "X-Forwarded-Proto: http"],
            "/",
        )
    })
    .await;
    let text = stdout(&out).to_ascii_lowercase();
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(!text.contains("strict-transport-security"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated_by_alpn_and_http1_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    let (addr, caf) = (proxy.addr, ca.cert.clone());
    let out = blocking(move || {
        tls::curl(
            addr,
            "a.test",
            &caf,
            &[
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ],
            "/",
        )
    })
    .await;
    assert_eq!(stdout(&out), "2 200");
    let caf = ca.cert.clone();
    let out = blocking(move || {
        tls::curl(
            addr,
            "a.test",
            &caf,
            &[
                "--http1.1",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ],
            "/",
        )
    })
    .await;
    assert_eq!(stdout(&out), "1.1 200");
    // Turned off: ALPN never picks h2.
    let dir2 = tempfile::tempdir().unwrap();
    let (ca2, certs2) = three_certs(dir2.path());
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs2);
    cfg.http2 = false;
    let (proxy2, _b2, _r2) = echo_proxy(cfg, ProxySettings::default()).await;
    let (addr2, caf2) = (proxy2.addr, ca2.cert.clone());
    let out = blocking(move || {
        tls::curl(
            addr2,
            "a.test",
            &caf2,
            &["--http2", "-o", "/dev/null", "-w", "%{http_version}"],
            "/",
        )
    })
    .await;
    assert_eq!(stdout(&out), "1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_under_h2_load_loses_no_request_and_both_slots_answer() {
    tls::require("h2load", "nghttp2-client");
    let dir = tempfile::tempdir().unwrap();
    let (_ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let blue = Backend::text("blue").await;
    let green = Backend::text("green").await;
    let (ub, ug) = (
        upstream(Slot::Blue, blue.addr),
        upstream(Slot::Green, green.addr),
    );
    let routes = Arc::new(Routes::new());
    routes.set(SERVICE, live(&ub));
    let proxy = TlsProxy::start(
        &routes,
        default_listener(SERVICE),
        cfg,
        ProxySettings::default(),
    )
    .await;
    let addr = proxy.addr;
    let load = tokio::task::spawn_blocking(move || {
        std::process::Command::new("h2load")
            .args(["-n", "6000", "-c", "4", "-m", "8"])
            .arg(format!("https://127.0.0.1:{}/", addr.port()))
            .output()
            .expect("run h2load")
    });
    // Switch back and forth while the load runs.
    let mut switches = 0;
    while !load.is_finished() {
        let to = if switches % 2 == 0 { &ug } else { &ub };
        routes.set(SERVICE, live(to));
        switches += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = load.await.unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("6000 succeeded, 0 failed, 0 errored"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(text.contains("status codes: 6000 2xx"), "{text}");
    assert!(switches >= 2, "the load ended before a switch: {switches}");
    assert!(
        blue.hits() > 0 && green.hits() > 0,
        "blue {} green {}",
        blue.hits(),
        green.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let backend = Backend::upgrade_echo().await;
    let routes = Arc::new(Routes::new());
    routes.set(SERVICE, live(&upstream(Slot::Blue, backend.addr)));
    let proxy = TlsProxy::start(
        &routes,
        default_listener(SERVICE),
        cfg,
        ProxySettings::default(),
    )
    .await;
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="a.test")
s.sendall(b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
print(head.split(b"\r\n")[0].decode())
rest = head.split(b"\r\n\r\n", 1)[1]
s.sendall(b"ping over tls")
while len(rest) < 13:
    rest += s.recv(4096)
print(rest.decode())
"#;
    let (port, caf) = (proxy.addr.port().to_string(), ca.cert.display().to_string());
    let out = blocking(move || tls::python(script, &[&port, &caf])).await;
    assert_eq!(
        stdout(&out),
        "HTTP/1.1 101 Switching Protocols\nping over tls\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_is_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, certs) = three_certs(dir.path());
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    cfg.handshake_timeout = Duration::from_millis(500);
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut idle = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Half a ClientHello record header, then nothing.
    idle.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within(8, idle.read(&mut buf)).await;
    assert!(matches!(n, Ok(0) | Err(_)), "still open: {n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_files_reach_new_handshakes_while_load_runs_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let first = ca.leaf("site", "site-v1", &["site.test"], Key::EcdsaP256);
    let mut cfg = listener_config("127.0.0.1:0".parse().unwrap(), vec![files(&first)]);
    cfg.reload_interval = Duration::from_millis(200);
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    let stop = tokio::sync::watch::channel(false);
    let trigger = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(cutover::proxy::tls::reload::watch(
        proxy.edge.clone(),
        trigger.clone(),
        stop.0.subscribe(),
    ));
    // A load loop: one long-lived keep-alive connection and a new connection per
    // request, both counting failures, until told to stop by a file.
    let script = r#"
import socket, ssl, sys, os, time
port, ca, stopfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
def conn():
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="site.test")
def get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk: raise Exception("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < n:
        body += s.recv(65536)
    return head.split(b"\r\n")[0]
keep = conn()
keep_cn = keep.getpeercert()["subject"]
ok = fail = 0
subjects = set()
while not os.path.exists(stopfile):
    for s, close in ((keep, False), (None, True)):
        try:
            c = s or conn()
            if close:
                subjects.add(dict(x[0] for x in c.getpeercert()["subject"])["commonName"])
            line = get(c)
            if b" 200 " in line: ok += 1
            else: fail += 1
            if close: c.close()
        except Exception as e:
            fail += 1
            print("error", e, file=sys.stderr)
print(ok, fail, " ".join(sorted(subjects)), dict(x[0] for x in keep.getpeercert()["subject"])["commonName"])
"#;
    let stopfile = dir.path().join("stop");
    let (port, caf, sf) = (
        proxy.addr.port().to_string(),
        ca.cert.display().to_string(),
        stopfile.display().to_string(),
    );
    let load = tokio::task::spawn_blocking(move || tls::python(script, &[&port, &caf, &sf]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A broken file first: the old certificate stays and the error is recorded.
    std::fs::write(
        &first.0,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    within(
        10,
        harness::wait_until(|| proxy.edge.status()[0].1[0].error.is_some()),
    )
    .await;
    // Then the new certificate, written beside and renamed over (as tools do).
    let second = ca.leaf("site-next", "site-v2", &["site.test"], Key::EcdsaP256);
    std::fs::rename(&second.1, &first.1).unwrap();
    std::fs::rename(&second.0, &first.0).unwrap();
    within(
        10,
        harness::wait_until(|| proxy.edge.status()[0].1[0].error.is_none()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    std::fs::write(&stopfile, "").unwrap();
    let out = within(30, load).await.unwrap();
    let text = stdout(&out);
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        parts.len(),
        5,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, failed) = (parts[0].parse::<u64>().unwrap(), parts[1]);
    assert!(ok > 10, "{text}");
    assert_eq!(
        failed,
        "0",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        &parts[2..4],
        ["site-v1", "site-v2"],
        "new handshakes see both: {text}"
    );
    assert_eq!(
        parts[4], "site-v1",
        "the long-lived connection keeps its certificate"
    );
    let _ = stop.0.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_installed_at_runtime_wins_and_acme_tls_alpn_gets_only_the_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    let (proxy, _b, _r) = echo_proxy(cfg, ProxySettings::default()).await;
    let addr = proxy.addr;
    let pem = |pair: &(std::path::PathBuf, std::path::PathBuf)| {
        cutover::proxy::tls::certified_key_from_pem(
            &std::fs::read(&pair.0).unwrap(),
            &std::fs::read(&pair.1).unwrap(),
        )
        .unwrap()
    };
    let store = proxy.edge.store(addr).expect("a TLS listener");
    let dynamic = ca.leaf("dyn", "dynamic-a", &["a.test"], Key::EcdsaP256);
    store.set_dynamic("a.test", pem(&dynamic)).unwrap();
    let got = blocking(move || tls::served_subject(addr, Some("a.test"))).await;
    assert!(got.unwrap().ends_with("CN = dynamic-a"));
    assert!(store
        .status()
        .iter()
        .any(|c| c.source == "dynamic" && c.name == "a.test"));
    store.remove_dynamic("a.test");
    let got = blocking(move || tls::served_subject(addr, Some("a.test"))).await;
    assert!(got.unwrap().ends_with("CN = a.test"));

    // TLS-ALPN-01: only a client offering just `acme-tls/1` sees the challenge.
    let challenge = ca.leaf("chal", "acme-challenge", &["new.test"], Key::EcdsaP256);
    proxy
        .edge
        .challenges()
        .set_tls_alpn01("new.test", pem(&challenge));
    let script = r#"
import socket, ssl, sys
port, alpn, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(alpn.split(","))
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=name)
    import subprocess
    der = s.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem.encode(), capture_output=True).stdout.decode().strip()
    print(s.selected_alpn_protocol(), out)
except ssl.SSLError as e:
    print("refused")
"#;
    let port = addr.port().to_string();
    let run = move |alpn: &'static str, name: &'static str| {
        let port = port.clone();
        async move { stdout(&blocking(move || tls::python(script, &[&port, alpn, name])).await) }
    };
    assert_eq!(
        run("acme-tls/1", "new.test").await.trim(),
        "acme-tls/1 subject=CN = acme-challenge"
    );
    assert_eq!(
        run("h2,http/1.1", "new.test").await.trim(),
        "h2 subject=CN = default.test"
    );
    // No challenge for this name: refused, never a real certificate.
    assert_eq!(run("acme-tls/1", "a.test").await.trim(), "refused");
    proxy.edge.challenges().remove_tls_alpn01("new.test");
    assert_eq!(run("acme-tls/1", "new.test").await.trim(), "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_h2c_is_off_by_default_and_served_when_turned_on() {
    let backend = Backend::text("plain").await;
    let up = upstream(Slot::Blue, backend.addr);
    for h2c in [false, true] {
        let settings = ProxySettings {
            h2c,
            ..ProxySettings::default()
        };
        let (proxy, _routes) = harness::TestProxy::with_live(&up, settings).await;
        let url = proxy.url("/");
        let out = blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "5",
                    "--http2-prior-knowledge",
                    "-o",
                    "/dev/null",
                ])
                .args(["-w", "%{http_version} %{http_code}"])
                .arg(url)
                .output()
                .unwrap()
        })
        .await;
        if h2c {
            assert_eq!(stdout(&out), "2 200");
        } else {
            assert_ne!(stdout(&out), "2 200", "h2c must be off by default");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_takes_the_fast_path_and_still_overwrites_a_clients_proto() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = three_certs(dir.path());
    let cfg = listener_config("127.0.0.1:0".parse().unwrap(), certs);
    for fast_path in [true, false] {
        let settings = ProxySettings {
            fast_path,
            ..ProxySettings::default()
        };
        let (proxy, _b, _r) = echo_proxy(cfg.clone(), settings).await;
        let (addr, caf) = (proxy.addr, ca.cert.clone());
        // Two requests on one connection, the second with a body.
        let out = blocking(move || {
            tls::curl(
                addr,
                "a.test",
                &caf,
                &[
                    "--http1.1",
                    "-H",
                    "X-Forwarded-Proto: http",
                    "-H",
                    "X-Forwarded-For: 6.6.6.6",
                ],
                "/one",
            )
        })
        .await;
        let text = stdout(&out);
        assert!(
            text.contains("x-forwarded-proto: https\n"),
            "fast path {fast_path}: {text}"
        );
        assert!(
            text.contains("x-forwarded-for: 127.0.0.1\n"),
            "fast path {fast_path}: {text}"
        );
        let caf = ca.cert.clone();
        let out = blocking(move || {
            tls::curl(
                addr,
                "a.test",
                &caf,
                &[
                    "--http1.1",
                    "-d",
                    "hello",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ],
                "/two",
            )
        })
        .await;
        assert_eq!(stdout(&out), "200");
    }
}
