//! Every way the built-in proxy reaches a slot with `upstream_tls` speaks TLS (issue 13,
//! items 4/5): WebSocket upgrades and `CONNECT` tunnels, mirrored copies, and the
//! shield's retry on the previous slot; each against real local TLS servers with a
//! test CA made by openssl, and each refused when the slot's certificate is not
//! trusted (an upstream failure; a failed copy never touches the client's answer).
//! HTTP hooks over HTTPS are in `tests/e2e_hooks.rs`.
//!
//! Fails (never skips) when `openssl` is missing: `.ci/run` installs it.

#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls_client.rs"]
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use cutover::config::ShieldConfig;
use cutover::domain::routing::{MirrorReport, MirrorSpec, Target};
use cutover::domain::Slot;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::proxy::ProxySettings;
use cutover::router::builtin::BuiltinRouter;
use cutover::router::Router;
use cutover::tls::ClientTls;
use harness::*;
use tls::{https_server, https_tunnel_echo, TestCerts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn settings() -> ProxySettings {
    ProxySettings {
        slot_header: true,
        ..ProxySettings::default()
    }
}

/// Sends `head` on a new connection to the proxy; the stream and the response head.
async fn open(proxy: &TestProxy, head: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_head(&mut s).await.to_ascii_lowercase();
    (s, got)
}

async fn echo(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.expect("echo");
    back
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked WebSocket text frame carrying `text` (client frames are masked, RFC 6455 §5.3).
fn ws_frame(text: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn a_websocket_upgrade_to_a_tls_upstream_is_tunnelled_over_tls_and_refused_when_untrusted() {
    within(20, async {
        let certs = TestCerts::new();
        let (addr, hits) = https_tunnel_echo(&certs).await;
        let mut blue = upstream(Slot::Blue, addr);
        blue.tls = Some(Arc::new(certs.trusting()));
        let (proxy, routes) = TestProxy::with_live(&blue, settings()).await;

        let (mut ws, head) = open(&proxy, UPGRADE).await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("x-cutover-slot: blue"), "{head}");
        for text in [&b"hello over tls"[..], b"a second frame"] {
            let frame = ws_frame(text);
            assert_eq!(echo(&mut ws, &frame).await, frame);
        }
        assert_eq!(*hits.lock().unwrap(), 1);
        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.status_class[0]), (1, 1), "{b:?}");

        // The same app without its CA: the handshake fails, 502, the upstream's fault,
        // and the app never sees the upgrade.
        let mut green = upstream(Slot::Green, addr);
        green.tls = Some(Arc::new(ClientTls::default()));
        routes.set(SERVICE, live(&green));
        let (_, head) = open(&proxy, UPGRADE).await;
        assert!(head.starts_with("http/1.1 502"), "{head}");
        assert!(head.contains("x-cutover-slot: green"), "{head}");
        assert_eq!(*hits.lock().unwrap(), 1, "nothing reached the app");
        assert_eq!(settled(&green.stats, 1).await.upstream_failed, 1);

        // The open tunnel is not affected by the switch.
        let frame = ws_frame(b"still here");
        assert_eq!(echo(&mut ws, &frame).await, frame);
    })
    .await;
}

#[tokio::test]
async fn a_connect_passed_on_to_a_tls_slot_is_tunnelled_over_tls_and_refused_when_untrusted() {
    within(20, async {
        let certs = TestCerts::new();
        let (addr, hits) = https_tunnel_echo(&certs).await;
        let mut blue = upstream(Slot::Blue, addr);
        blue.tls = Some(Arc::new(certs.trusting()));
        let connecting = ProxySettings {
            allow_connect: true,
            ..settings()
        };
        let (proxy, routes) = TestProxy::with_live(&blue, connecting).await;
        let connect = "CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n";

        let (mut tunnel, head) = open(&proxy, connect).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("x-cutover-slot: blue"), "{head}");
        assert_eq!(
            echo(&mut tunnel, b"bytes in the tunnel").await,
            b"bytes in the tunnel"
        );
        assert_eq!(*hits.lock().unwrap(), 1);

        let mut green = upstream(Slot::Green, addr);
        green.tls = Some(Arc::new(ClientTls::default()));
        routes.set(SERVICE, live(&green));
        let (_, head) = open(&proxy, connect).await;
        assert!(head.starts_with("http/1.1 502"), "{head}");
        assert_eq!(*hits.lock().unwrap(), 1, "nothing reached the app");
        assert_eq!(settled(&green.stats, 1).await.upstream_failed, 1);
    })
    .await;
}

/// A proxy serving `web` through a `BuiltinRouter` whose slots serve TLS trusted as
/// `tls`, blue live at `blue`.
async fn routed(tls: ClientTls, blue: std::net::SocketAddr) -> (BuiltinRouter, TestProxy) {
    let routes = Arc::new(Routes::new());
    let stats = Arc::new(StatsRegistry::new([SERVICE]));
    let router = BuiltinRouter::new(routes.clone(), stats)
        .with_upstream_tls(HashMap::from([(SERVICE.to_string(), tls)]));
    router
        .apply(SERVICE, Some(Target::new(SERVICE, Slot::Blue, blue)), None)
        .await
        .unwrap();
    let proxy = TestProxy::start(&routes, default_listener(SERVICE), settings()).await;
    (router, proxy)
}

async fn report_when(router: &BuiltinRouter, cond: impl Fn(&MirrorReport) -> bool) -> MirrorReport {
    loop {
        let r = router
            .mirror_report(SERVICE)
            .await
            .expect("a mirror report");
        if cond(&r) {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn mirrored_copies_reach_a_tls_target_over_tls_and_an_untrusted_one_fails_without_touching_the_client(
) {
    within(30, async {
        let certs = TestCerts::new();
        let (blue, live_seen) = https_server(&certs, 200, "blue").await;
        let (green, mirror_seen) = https_server(&certs, 200, "green").await;
        let (router, proxy) = routed(certs.trusting(), blue).await;
        let spec = |addr| MirrorSpec {
            target: Target::new(SERVICE, Slot::Green, addr),
            percent: 100,
            methods: vec!["GET".into()],
        };
        router.mirror(SERVICE, Some(spec(green))).await.unwrap();
        let client = http_client();
        for i in 0..5 {
            let r = get(&client, &proxy.url(&format!("/item/{i}"))).await;
            assert_eq!((r.status, r.body.as_str()), (200, "blue"), "{r:?}");
        }
        let r = report_when(&router, |r| r.compared == 5).await;
        assert_eq!(
            (r.mirrored, r.mismatched, r.failed, r.dropped),
            (5, 0, 0, 0)
        );
        assert_eq!(live_seen.lock().unwrap().len(), 5);
        let copies = mirror_seen.lock().unwrap().clone();
        assert_eq!(copies.len(), 5, "{copies:?}");
        assert!(
            copies.iter().any(|(line, _)| line == "GET /item/4"),
            "{copies:?}"
        );

        // A target whose certificate another CA signed: every copy fails its
        // handshake, and every client still gets the live answer.
        let stranger = TestCerts::new();
        let (untrusted, untrusted_seen) = https_server(&stranger, 200, "stranger").await;
        router.mirror(SERVICE, Some(spec(untrusted))).await.unwrap();
        for _ in 0..5 {
            let r = get(&client, &proxy.url("/")).await;
            assert_eq!((r.status, r.body.as_str()), (200, "blue"), "{r:?}");
        }
        let r = report_when(&router, |r| r.failed == 5).await;
        assert_eq!((r.mirrored, r.compared, r.failed), (5, 0, 5), "{r:?}");
        assert!(untrusted_seen.lock().unwrap().is_empty());
        assert_eq!(live_seen.lock().unwrap().len(), 10);
    })
    .await;
}

#[tokio::test]
async fn the_shield_retries_a_failed_tls_slot_on_the_previous_one_over_tls() {
    within(30, async {
        let certs = TestCerts::new();
        let (blue, blue_seen) = https_server(&certs, 200, "blue").await;
        let (green, green_seen) = https_server(&certs, 503, "green is down").await;
        let (router, proxy) = routed(certs.trusting(), blue).await;
        let shield = ShieldConfig {
            on_status: true,
            budget: 1.0,
            ..ShieldConfig::default()
        };
        let guard = router.protect(
            SERVICE,
            Target::new(SERVICE, Slot::Green, green),
            Target::new(SERVICE, Slot::Blue, blue),
            &shield,
            None,
        );
        assert!(guard.is_some(), "the built-in router guards");
        router
            .apply(
                SERVICE,
                Some(Target::new(SERVICE, Slot::Green, green)),
                None,
            )
            .await
            .unwrap();
        let client = http_client();
        for i in 0..4 {
            let r = get(&client, &proxy.url(&format!("/r/{i}"))).await;
            assert_eq!(
                (r.status, r.slot.as_deref(), r.body.as_str()),
                (200, Some("blue"), "blue"),
                "{r:?}"
            );
        }
        // Each went to green over TLS first (it answered 503), then to blue over TLS.
        assert_eq!(green_seen.lock().unwrap().len(), 4);
        assert_eq!(blue_seen.lock().unwrap().len(), 4);
        assert_eq!(router.shield_retries(SERVICE, Slot::Green), 4);
    })
    .await;
}
