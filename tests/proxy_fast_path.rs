//! The proxy's fast path (`src/proxy/h1`) at the byte level: real sockets on
//! 127.0.0.1:0, raw TCP clients, and backends that are either hyper
//! (`tests/support/backend.rs`) or scripted byte by byte, so framing corner cases
//! (chunked, close-delimited, pipelined, 1xx, garbage) are exactly what the test says.
//! Where behaviour must not depend on the path, the same exchange runs with the fast
//! path on and off (`ProxySettings::fast_path`) and the results are compared.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backend::Backend;
use cutover::domain::Slot;
use cutover::proxy::stats::SlotStats;
use cutover::proxy::table::{Routes, ServiceRoute};
use cutover::proxy::upstream::Upstream;
use cutover::proxy::{serve, ListenerRoutes, Proxy, ProxySettings};
use harness::{settled, within, SERVICE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A proxy on 127.0.0.1:0 whose live slot (blue) is `backend`.
struct TestProxy {
    addr: SocketAddr,
    stats: Arc<SlotStats>,
    _stop: oneshot::Sender<()>,
}

async fn proxy_to(backend: SocketAddr, fast_path: bool) -> TestProxy {
    let stats = Arc::new(SlotStats::default());
    let routes = Arc::new(Routes::new());
    let live = Upstream {
        slot: Slot::Blue,
        endpoint: backend.into(),
        stats: stats.clone(),
        tls: None,
    };
    routes.set(
        SERVICE,
        ServiceRoute {
            live: Some(live),
            preview: None,
        },
    );
    let settings = ProxySettings {
        fast_path,
        slot_header: true,
        ..ProxySettings::default()
    };
    let listener = ListenerRoutes {
        by_host: HashMap::new(),
        default: Some(SERVICE.into()),
        preview_only: false,
    };
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = Proxy::new(routes, settings);
    tokio::spawn(serve(proxy, tcp, listener, async move {
        let _ = stopped.await;
    }));
    TestProxy {
        addr,
        stats,
        _stop: stop,
    }
}

/// A backend whose every connection is handed to `script`.
async fn scripted<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(script(s));
        }
    });
    addr
}

/// A backend answering `200 ok` to each request, and how many connections it took;
/// with `keep_alive` off it closes each connection after its first answer.
async fn ok_backend(keep_alive: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    let addr = scripted(move |mut s| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            while read_request(&mut s).await.is_some() {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                if !keep_alive {
                    return;
                }
            }
        }
    })
    .await;
    (addr, connections)
}

/// Reads one request head (through the blank line) from a scripted backend's socket;
/// `None` at EOF.
async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// One parsed response as a client sees it.
#[derive(Debug, PartialEq)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `s`, whose bytes so far are in `buf`: head, then a body by
/// `Content-Length`, chunked (decoded) or until EOF.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await.expect("response head");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if (100..200).contains(&status) {
        Vec::new()
    } else if resp.header("transfer-encoding") == Some("chunked") {
        read_chunked(s, buf).await
    } else if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().unwrap();
        while buf.len() < n {
            fill(s, buf).await.expect("body");
        }
        buf.drain(..n).collect()
    } else {
        while fill(s, buf).await.is_some() {}
        std::mem::take(buf)
    };
    Resp { body, ..resp }
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(s, buf).await.expect("chunk size");
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&buf[..line_end])
                .split(';')
                .next()
                .unwrap(),
            16,
        )
        .unwrap();
        buf.drain(..line_end + 2);
        if size == 0 {
            while !buf.windows(2).any(|w| w == b"\r\n") {
                fill(s, buf).await.expect("trailers");
            }
            // Trailers (none expected by these tests) end with an empty line.
            let end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
            buf.drain(..end + 2);
            return body;
        }
        while buf.len() < size + 2 {
            fill(s, buf).await.expect("chunk data");
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Reads more into `buf`; `None` at EOF.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(n)
        }
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

// ---------------------------------------------------------------- framing

#[tokio::test]
async fn chunked_responses_pass_through_whole_and_the_connection_stays_usable() {
    within(20, async {
        // Chunks written separately, with a pause, so they arrive in several reads.
        let backend = scripted(|mut s| async move {
            while read_request(&mut s).await.is_some() {
                let parts: [&[u8]; 4] = [
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                    b"lo\r\n",
                    b"7;ext=1\r\n, world\r\n",
                    b"0\r\n\r\n",
                ];
                for p in parts {
                    s.write_all(p).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .await;
        let proxy = proxy_to(backend, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..2 {
            c.write_all(GET).await.unwrap();
            let r = read_response(&mut c, &mut buf).await;
            assert_eq!((r.status, r.body.as_slice()), (200, &b"hello, world"[..]));
            assert_eq!(r.header("x-cutover-slot"), Some("blue"));
        }
        assert!(buf.is_empty(), "nothing beyond the two responses: {buf:?}");
        let s = settled(&proxy.stats, 2).await;
        assert_eq!((s.requests, s.status_class[1], s.errors()), (2, 2, 0));
    })
    .await;
}

#[tokio::test]
async fn a_close_delimited_response_reaches_the_client_whole_and_then_closes_it() {
    within(20, async {
        let backend = scripted(|mut s| async move {
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(b"second part").await.unwrap();
        })
        .await;
        let proxy = proxy_to(backend, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(GET).await.unwrap();
        let r = read_response(&mut c, &mut Vec::new()).await;
        assert_eq!(r.body, b"first part, second part");
        assert_eq!(r.header("connection"), Some("close"));
        let s = settled(&proxy.stats, 1).await;
        assert_eq!((s.status_class[1], s.errors()), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_upstream_connection() {
    within(20, async {
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let backend = scripted(move |mut s| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                while let Some(head) = read_request(&mut s).await {
                    let path = head.split(' ').nth(1).unwrap().to_string();
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len());
                    s.write_all(resp.as_bytes()).await.unwrap();
                }
            }
        })
        .await;
        let proxy = proxy_to(backend, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        for want in ["/one", "/two", "/three"] {
            let r = read_response(&mut c, &mut buf).await;
            assert_eq!(String::from_utf8_lossy(&r.body), want);
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one upstream connection, reused");
    })
    .await;
}

#[tokio::test]
async fn clients_that_close_after_each_request_share_one_upstream_connection() {
    within(20, async {
        let (backend, connections) = ok_backend(true).await;
        let proxy = proxy_to(backend, true).await;
        for i in 0..10 {
            let mut c = TcpStream::connect(proxy.addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).await.unwrap();
            assert!(all.starts_with(b"HTTP/1.1 200 OK\r\n"), "client {i}");
            assert!(all.ends_with(b"\r\n\r\nok"), "client {i}");
        }
        // Each client connection closed; its upstream connection waited for the next.
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one upstream connection for ten client connections"
        );
        let s = settled(&proxy.stats, 10).await;
        assert_eq!((s.status_class[1], s.upstream_failed), (10, 0));
    })
    .await;
}

#[tokio::test]
async fn an_upstream_that_closes_after_every_response_costs_no_failed_request() {
    within(30, async {
        // Keep-alive in name only: the upstream closes right after each response, the
        // way an app server's idle timeout does at the worst moment.
        let (backend, _) = ok_backend(false).await;
        let proxy = proxy_to(backend, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        for i in 0..50 {
            c.write_all(GET).await.unwrap();
            let r = read_response(&mut c, &mut buf).await;
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"ok"[..]),
                "request {i}"
            );
            if i % 2 == 0 {
                // Sometimes give the FIN time to arrive, sometimes not.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let s = settled(&proxy.stats, 50).await;
        assert_eq!((s.status_class[1], s.upstream_failed), (50, 0));
    })
    .await;
}

#[tokio::test]
async fn bytes_an_upstream_sends_past_the_end_of_a_response_never_reach_the_client() {
    within(20, async {
        let answers: [&'static [u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nforged",
        ];
        for answer in answers {
            // Each connection answers its first request with `answer` and any later
            // one with "clean"; the extra bytes must not be taken as a response.
            let backend = scripted(move |mut s| async move {
                let mut first = true;
                while read_request(&mut s).await.is_some() {
                    let reply: &[u8] = if first {
                        answer
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean"
                    };
                    first = false;
                    s.write_all(reply).await.unwrap();
                }
            })
            .await;
            let proxy = proxy_to(backend, true).await;
            let mut c = TcpStream::connect(proxy.addr).await.unwrap();
            let mut buf = Vec::new();
            c.write_all(GET).await.unwrap();
            assert_eq!(read_response(&mut c, &mut buf).await.body, b"ok");
            c.write_all(GET).await.unwrap();
            let r = read_response(&mut c, &mut buf).await;
            assert_eq!(r.body, b"ok", "{answer:?}: the second answer comes from a new upstream connection");
            assert!(buf.is_empty(), "{buf:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn early_hints_are_passed_on_before_the_final_response() {
    within(20, async {
        let backend = scripted(|mut s| async move {
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
                .await
                .unwrap();
        })
        .await;
        let proxy = proxy_to(backend, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(GET).await.unwrap();
        let mut buf = Vec::new();
        let hints = read_response(&mut c, &mut buf).await;
        assert_eq!(hints.status, 103);
        assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
        let r = read_response(&mut c, &mut buf).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"done"[..]));
        let s = settled(&proxy.stats, 1).await;
        assert_eq!(
            (s.requests, s.status_class[1]),
            (1, 1),
            "recorded once, as the 200"
        );
    })
    .await;
}

#[tokio::test]
async fn responses_that_cannot_be_framed_or_an_unasked_101_get_502_and_count_against_the_slot() {
    within(20, async {
        let bad: [&'static [u8]; 3] = [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"220 smtp.example ESMTP ready\r\n\r\n",
        ];
        for answer in bad {
            let backend = scripted(move |mut s| async move {
                read_request(&mut s).await;
                let _ = s.write_all(answer).await;
            })
            .await;
            let proxy = proxy_to(backend, true).await;
            let mut c = TcpStream::connect(proxy.addr).await.unwrap();
            c.write_all(GET).await.unwrap();
            let r = read_response(&mut c, &mut Vec::new()).await;
            assert_eq!(
                (r.status, r.header("x-cutover-slot")),
                (502, Some("blue")),
                "{answer:?}"
            );
            let s = settled(&proxy.stats, 1).await;
            assert_eq!(s.upstream_failed, 1, "{answer:?}");
        }
    })
    .await;
}

// ---------------------------------------------------------------- bodies

#[tokio::test]
async fn request_bodies_arrive_intact_below_and_above_the_fast_path_limit() {
    within(30, async {
        let app = Backend::start(|req| async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
            backend::reply(200, format!("{} {sum}", body.len()))
        })
        .await;
        let proxy = proxy_to(app.addr, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        for len in [10_000usize, 200_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
            let head = format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
            c.write_all(head.as_bytes()).await.unwrap();
            // Head and body in separate writes, the body in two halves.
            c.write_all(&body[..len / 2]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(&body[len / 2..]).await.unwrap();
            let r = read_response(&mut c, &mut buf).await;
            assert_eq!(String::from_utf8_lossy(&r.body), format!("{len} {sum}"));
        }
        let s = settled(&proxy.stats, 2).await;
        assert_eq!((s.status_class[1], s.errors()), (2, 0));
    })
    .await;
}

#[tokio::test]
async fn a_large_response_body_is_passed_on_byte_for_byte() {
    within(30, async {
        let app = Backend::start(|_| async move {
            let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
            backend::reply(200, body)
        })
        .await;
        let proxy = proxy_to(app.addr, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(GET).await.unwrap();
        let r = read_response(&mut c, &mut Vec::new()).await;
        assert_eq!(r.body.len(), 3_000_000);
        assert!(r
            .body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 253) as u8));
        assert_eq!(settled(&proxy.stats, 1).await.requests, 1);
    })
    .await;
}

// ---------------------------------------------------------------- hand-over

#[tokio::test]
async fn garbage_after_good_requests_on_one_connection_gets_400_and_the_proxy_serves_on() {
    within(20, async {
        let app = Backend::text("ok").await;
        let proxy = proxy_to(app.addr, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut c, &mut buf).await.status, 200);
        c.write_all(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut c, &mut buf).await;
        assert_eq!(r.status, 400);
        let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
        fresh.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut fresh, &mut Vec::new()).await.body, b"ok");
        assert_eq!(app.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_after_plain_requests_on_the_same_connection_still_tunnels() {
    within(20, async {
        let app = Backend::upgrade_echo().await;
        let proxy = proxy_to(app.addr, true).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        assert_eq!(
            read_response(&mut c, &mut buf).await.body,
            b"not an upgrade"
        );
        c.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut c, &mut buf).await;
        assert_eq!(r.status, 101);
        c.write_all(b"ping").await.unwrap();
        while buf.len() < 4 {
            fill(&mut c, &mut buf).await.expect("echo");
        }
        assert_eq!(buf, b"ping");
    })
    .await;
}

// ---------------------------------------------------------------- same answers either way

/// Sends `raw` through a proxy with the fast path on and off to an echo-headers
/// backend; returns (what the backend saw, the response minus `date`) for each.
async fn both_ways(raw: &[u8]) -> [(u16, String, Vec<(String, String)>); 2] {
    let mut out = Vec::new();
    for fast in [true, false] {
        let app = Backend::echo_headers().await;
        let proxy = proxy_to(app.addr, fast).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(raw).await.unwrap();
        let r = read_response(&mut c, &mut Vec::new()).await;
        let mut headers: Vec<_> = r
            .headers
            .into_iter()
            .filter(|(n, _)| n != "date" && n != "content-length")
            .collect();
        headers.sort();
        out.push((
            r.status,
            String::from_utf8_lossy(&r.body).into_owned(),
            headers,
        ));
    }
    out.try_into().unwrap()
}

#[tokio::test]
async fn the_fast_and_general_paths_forward_the_same_headers_both_ways() {
    within(30, async {
        let requests: [&[u8]; 3] = [
            GET,
            b"GET /q?x=1 HTTP/1.1\r\nHost: Shop.Test:8080\r\nConnection: keep-alive\r\n\
              Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: secret\r\n\
              X-Forwarded-For: 10.1.1.1\r\nX-Forwarded-For: 10.2.2.2\r\nAccept: */*\r\n\r\n",
            b"DELETE /item/7 HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\
              X-Forwarded-Host: outer.test\r\nx-cutover-preview-not: 1\r\n\
              Cookie: session=1; theme=dark\r\nConnection: close\r\n\r\n",
        ];
        for raw in requests {
            let [fast, general] = both_ways(raw).await;
            assert_eq!(fast, general, "{}", String::from_utf8_lossy(raw));
            assert_eq!(fast.0, 200);
            assert!(fast.1.contains("x-forwarded-for: "), "{}", fast.1);
        }
    })
    .await;
}

// ---------------------------------------------------------------- hostile input

#[tokio::test]
async fn mangled_requests_never_take_the_proxy_down_or_reach_the_backend_as_garbage() {
    within(60, async {
        let app = Backend::start(|req| async move {
            // Whatever reaches the backend went through a parser on the way: it must
            // be a well-formed request (hyper would refuse anything else).
            backend::reply(200, format!("{} {}", req.method(), req.uri().path()))
        })
        .await;
        let proxy = proxy_to(app.addr, true).await;
        let seeds: [&[u8]; 4] = [
            GET,
            b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nCookie: a=1; cutover-preview=x\r\n\r\nhello",
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(6);
        let mut statuses: HashMap<String, usize> = HashMap::new();
        let specials = b"\r\n:; ,\0\x7f\xff0123456789abcdefHTTP/1.1chunkedContent-Length";
        for i in 0..400 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(0..bytes.len());
                match rng.u8(0..4) {
                    0 => bytes[at] = specials[rng.usize(0..specials.len())],
                    1 => bytes.insert(at, specials[rng.usize(0..specials.len())]),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => {
                        let end = rng.usize(at..bytes.len());
                        let dup = bytes[at..end].to_vec();
                        bytes.splice(at..at, dup);
                    }
                }
            }
            let mut c = TcpStream::connect(proxy.addr).await.unwrap();
            let _ = c.write_all(&bytes).await;
            let _ = c.shutdown().await;
            // Whatever the answer, the proxy must end the exchange (answer or close)
            // without help; the test's own timeout catches a hang.
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut sink)).await;
            let status = String::from_utf8_lossy(sink.get(9..12).unwrap_or(b"---")).into_owned();
            *statuses.entry(status).or_default() += 1;
        }
        // The mutations must exercise both outcomes: forwarded and refused.
        assert!(statuses.get("200").is_some_and(|n| *n > 20), "{statuses:?}");
        assert!(statuses.get("400").is_some_and(|n| *n > 20), "{statuses:?}");
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(GET).await.unwrap();
        let r = read_response(&mut c, &mut Vec::new()).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"GET /"[..]));
        let s = proxy.stats.snapshot();
        assert_eq!(s.upstream_failed, 0, "no mangled request made the backend fail: {s:?}");
    })
    .await;
}

// ---------------------------------------------------------------- after a switch

#[tokio::test]
async fn the_old_slots_idle_upstream_connection_is_closed_once_idle_too_long() {
    within(30, async {
        // Blue reports when the proxy closes its connection.
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let blue_addr = scripted(move |mut s| {
            let closed = closed_tx.clone();
            async move {
                while read_request(&mut s).await.is_some() {
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nblue")
                        .await
                        .unwrap();
                }
                let _ = closed.send(());
            }
        })
        .await;
        let green = Backend::text("green").await;
        let blue = harness::upstream(Slot::Blue, blue_addr);
        let (proxy, routes) = harness::TestProxy::with_live(&blue, ProxySettings::default()).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut c, &mut buf).await.body, b"blue");

        routes.set(
            SERVICE,
            harness::live(&harness::upstream(Slot::Green, green.addr)),
        );
        c.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut c, &mut buf).await.body, b"green");
        assert!(
            closed_rx.try_recv().is_err(),
            "kept while young (reusable if traffic returns)"
        );

        // Past the idle limit, the next request through this client connection lets
        // the old slot's connection go.
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        c.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut c, &mut buf).await.body, b"green");
        // Closed by that request itself, not by the client connection's idle timeout
        // (10 s) later on.
        let closed = tokio::time::timeout(Duration::from_secs(3), closed_rx.recv()).await;
        assert!(
            matches!(closed, Ok(Some(()))),
            "blue's connection was not closed"
        );
    })
    .await;
}
