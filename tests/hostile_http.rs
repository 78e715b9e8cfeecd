//! Hostile HTTP against the real proxy (in process, real sockets on 127.0.0.1:0), on
//! both paths: request smuggling and framing tricks, malformed heads, oversized heads,
//! slow clients. For every case: what the client is answered, what the app behind
//! the proxy received (a raw-socket backend that records bytes), and that normal
//! traffic keeps flowing afterwards.
//!
//! The rule every case checks: the backend only ever sees requests the proxy framed
//! itself, each with at most one framing header, and one response goes back for each
//! request it received; anything the proxy cannot frame unambiguously is refused
//! (4xx/5xx, connection closed) and never reaches the app.

#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/raw_backend.rs"]
mod raw_backend;

use std::net::SocketAddr;
use std::time::Duration;

use cutover::domain::Slot;
use cutover::proxy::ProxySettings;
use harness::{settled, upstream, within, TestProxy};
use raw_backend::{RawBackend, Received};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATHS: [bool; 2] = [true, false];

fn name(fast: bool) -> &'static str {
    if fast {
        "fast path"
    } else {
        "general path"
    }
}

/// Sends `bytes` on a fresh connection; everything the proxy sent back until it
/// closed (or 3 s of silence).
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every status line in `raw`.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// The framing rule: at most one of Content-Length / Transfer-Encoding, once.
fn well_framed(r: &Received) -> bool {
    let (cl, te) = (
        r.all("content-length").len(),
        r.all("transfer-encoding").len(),
    );
    cl + te <= 1 && !r.head.contains("\r\n ") && !r.head.contains("\r\n\t")
}

async fn normal_traffic_flows(addr: SocketAddr, fast: bool) {
    let out = send_raw(
        addr,
        b"GET /after HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        statuses(&out),
        [200],
        "{}: normal request after the attack: {out}",
        name(fast)
    );
}

/// Requests a proxy must refuse outright (the app never sees them).
const REFUSED: [(&str, &[u8]); 18] = [
    ("two different Content-Lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("a Content-Length list that disagrees", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd"),
    ("a signed Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
    ("a space before the colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("an unknown transfer coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("chunked not last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("an obs-folded Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    ("a chunk size that overflows", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n"),
    ("a chunk size that is not hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n"),
    ("a NUL in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
    ("a space in a header name", b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n"),
    ("a space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("a TLS handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
    ("CONNECT", b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n"),
    ("CONNECT with an origin-form target", b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"),
];

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused_and_never_reach_the_app() {
    for fast in PATHS {
        let backend = RawBackend::start().await;
        let up = upstream(Slot::Blue, backend.addr);
        let settings = ProxySettings {
            fast_path: fast,
            ..ProxySettings::default()
        };
        let (proxy, _routes) = TestProxy::with_live(&up, settings).await;
        for (what, bytes) in REFUSED {
            let out = within(10, send_raw(proxy.addr, bytes)).await;
            let got = statuses(&out);
            assert!(
                got.iter().all(|s| (400..600).contains(s)) && got.len() <= 1,
                "{}: {what}: answered {got:?}: {out}",
                name(fast)
            );
            assert_eq!(
                backend.count(),
                0,
                "{}: {what} reached the app: {:?}",
                name(fast),
                backend.received()
            );
        }
        normal_traffic_flows(proxy.addr, fast).await;
        assert_eq!(backend.count(), 1);
    }
}

/// Requests whose framing the proxy resolves one way (RFC 9112 §6.3) and re-frames
/// for the app: whatever the client meant, the app and the proxy agree on where each
/// request ends, and each request the app got was answered once.
const REFRAMED: [(&str, &[u8]); 5] = [
    (
        "Content-Length and chunked (the smuggling classic)",
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "chunked and Content-Length",
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ),
    (
        "a chunk extension and a trailer",
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
    ),
    (
        "pipelined requests",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ),
    (
        "a repeated equal Content-Length",
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    ),
];

#[tokio::test]
async fn ambiguous_framing_is_resolved_once_and_the_app_sees_it_the_same_way() {
    for fast in PATHS {
        for (what, bytes) in REFRAMED {
            let backend = RawBackend::start().await;
            let up = upstream(Slot::Blue, backend.addr);
            let settings = ProxySettings {
                fast_path: fast,
                ..ProxySettings::default()
            };
            let (proxy, _routes) = TestProxy::with_live(&up, settings).await;
            let out = within(10, send_raw(proxy.addr, bytes)).await;
            let got = statuses(&out);
            let received = backend.received();
            for r in &received {
                assert!(
                    well_framed(r),
                    "{}: {what}: the app got {:?}",
                    name(fast),
                    r.head
                );
            }
            let answered = got.iter().filter(|s| **s == 200).count();
            assert_eq!(
                answered,
                received.len(),
                "{}: {what}: {got:?} for {} requests at the app: {out}",
                name(fast),
                received.len()
            );
            assert!(
                got.iter().all(|s| *s == 200 || (400..600).contains(s)),
                "{got:?}"
            );
            assert!(
                !received.is_empty(),
                "{}: {what}: nothing forwarded",
                name(fast)
            );
            // Nothing smuggled: after a request with both framings the connection is
            // closed (RFC 9112 §6.3), so what followed never reaches the app.
            assert!(
                !received.iter().any(|r| r.line().contains("/smuggled")),
                "{}: {what}: {received:?}",
                name(fast)
            );
            normal_traffic_flows(proxy.addr, fast).await;
        }
    }
}

#[tokio::test]
async fn oversized_heads_many_lines_and_stalled_bodies_are_the_clients_problem() {
    for fast in PATHS {
        let backend = RawBackend::start().await;
        let up = upstream(Slot::Blue, backend.addr);
        let settings = ProxySettings {
            fast_path: fast,
            client_body_timeout: Duration::from_millis(300),
            ..ProxySettings::default()
        };
        let (proxy, _routes) = TestProxy::with_live(&up, settings).await;
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 380 * 1024));
        let out = within(10, send_raw(proxy.addr, &big)).await;
        assert_eq!(
            statuses(&out),
            [431],
            "{}: a 380 KB unfinished head",
            name(fast)
        );
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let out = within(10, send_raw(proxy.addr, &many)).await;
        assert_eq!(statuses(&out), [431], "{}: 200 header lines", name(fast));
        let out = within(
            10,
            send_raw(
                proxy.addr,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx",
            ),
        )
        .await;
        assert_eq!(statuses(&out), [408], "{}: a stalled body", name(fast));
        normal_traffic_flows(proxy.addr, fast).await;
        let snap = within(10, settled(&up.stats, 2)).await;
        assert_eq!(
            (snap.upstream_failed, snap.client_failed),
            (0, 1),
            "{}",
            name(fast)
        );
        assert_eq!(
            backend.count(),
            1,
            "only the normal request reached the app"
        );
    }
}
