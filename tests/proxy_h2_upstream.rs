//! HTTP/2 streams without a body go upstream through the fast path's HTTP/1.1 code
//! (`src/proxy/h1/exchange.rs`, `src/proxy/direct.rs`). Whatever way an HTTP/1.1 app
//! frames its answer, the HTTP/2 client gets it whole; an app that breaks its answer
//! is the slot's failure; a guarded new slot that refuses the connection is shielded
//! as on the other paths. Real TLS listener (ALPN `h2`), hyper's HTTP/2 client, and an
//! app that writes scripted bytes on a real socket so the framing is exactly what the
//! test says. Nothing here asserts on speed.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/h2.rs"]
mod h2;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::{dead_addr, Backend};
use cutover::config::ShieldConfig;
use cutover::domain::routing::Target;
use cutover::domain::Slot;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::proxy::ProxySettings;
use cutover::router::builtin::BuiltinRouter;
use cutover::router::Router;
use h2::H2;
use harness::{default_listener, within, SERVICE};
use http::Method;
use tls::{listener_config, three_certs, TlsProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted app answers for a request line's path, as written pieces (each
/// flushed, with a pause between them so they arrive in separate reads); `close` ends
/// the connection after the answer.
fn answer(path: &str) -> (Vec<Vec<u8>>, bool) {
    let big = vec![b'x'; 200_000];
    let s = |t: &str| t.as_bytes().to_vec();
    match path {
        "/length" => (vec![s("HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-app: a\r\n\r\nlength")], false),
        "/chunked" => (
            vec![
                s("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nchu"),
                s("nks\r\n5;e=1\r\n of h\r\n"),
                s("1\r\n2\r\n0\r\nx-trailer: t\r\n\r\n"),
            ],
            false,
        ),
        "/close" => (vec![s("HTTP/1.1 200 OK\r\n\r\nuntil "), s("close")], true),
        "/big" => {
            let mut head = s("HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n");
            head.extend_from_slice(&big[..1000]);
            (vec![head, big[1000..].to_vec()], false)
        }
        "/early" => (
            vec![s("HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter")],
            false,
        ),
        "/empty" => (vec![s("HTTP/1.1 204 No Content\r\nx-app: e\r\n\r\n")], false),
        "/hangup" => (vec![], true),
        "/short" => (vec![s("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")], true),
        "/garbage" => (vec![s("HTTP/1.1 abc\r\n\r\n")], true),
        _ => (vec![s("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")], false),
    }
}

/// The scripted app: its address, the request heads it read, the connections it took.
struct App {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    conns: Arc<AtomicUsize>,
}

async fn app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (heads.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_conn(conn, seen.clone()));
        }
    });
    App { addr, heads, conns }
}

async fn serve_conn(mut conn: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        seen.lock().unwrap().push(head);
        let (pieces, close) = answer(&path);
        for p in pieces {
            if conn.write_all(&p).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if close {
            return;
        }
    }
}

struct Edge {
    router: BuiltinRouter,
    stats: Arc<StatsRegistry>,
    proxy: TlsProxy,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Edge {
    async fn new(live: SocketAddr) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let (ca, certs) = three_certs(dir.path());
        let config = listener_config("127.0.0.1:0".parse().unwrap(), certs);
        let routes = Arc::new(Routes::new());
        let stats = Arc::new(StatsRegistry::new([SERVICE]));
        let router = BuiltinRouter::new(routes.clone(), stats.clone());
        let settings = ProxySettings {
            slot_header: true,
            ..ProxySettings::default()
        };
        let proxy = TlsProxy::start(&routes, default_listener(SERVICE), config, settings).await;
        let target = Target::new(SERVICE, Slot::Blue, live);
        router.apply(SERVICE, Some(target), None).await.unwrap();
        Edge {
            router,
            stats,
            proxy,
            ca: ca.cert,
            _dir: dir,
        }
    }

    async fn h2(&self) -> H2 {
        H2::connect(self.proxy.addr, &self.ca).await
    }

    async fn settled(&self, slot: Slot, n: u64) -> cutover::domain::stats::StatsSnapshot {
        harness::settled(&self.stats.get(SERVICE, slot).unwrap(), n).await
    }
}

#[tokio::test]
async fn every_way_an_http11_app_frames_its_answer_reaches_the_h2_client_whole() {
    within(30, async {
        let app = app().await;
        let e = Edge::new(app.addr).await;
        let conn = e.h2().await;
        let get = |path: &'static str| {
            let conn = conn.clone();
            async move { conn.request(Method::GET, path, &[]).await.unwrap() }
        };
        let r = get("/length").await;
        assert_eq!((r.status, r.body.as_str()), (200, "length"));
        assert_eq!(r.headers["x-app"], "a");
        assert_eq!(r.slot(), "blue");
        let r = get("/chunked").await;
        assert_eq!((r.status, r.body.as_str()), (200, "chunks of h2"));
        assert!(r.headers.get("transfer-encoding").is_none());
        let trailers = r
            .trailers
            .expect("the app's trailer fields, as HTTP/2 trailers");
        assert_eq!(trailers["x-trailer"], "t");
        let r = get("/close").await;
        assert_eq!((r.status, r.body.as_str()), (200, "until close"));
        let r = get("/big").await;
        assert_eq!((r.status, r.body.len()), (200, 200_000));
        assert!(r.body.bytes().all(|b| b == b'x'));
        let r = get("/early").await;
        assert_eq!((r.status, r.body.as_str()), (200, "after"));
        let r = get("/empty").await;
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        assert_eq!(r.headers["x-app"], "e");
        let r = conn.request(Method::HEAD, "/length", &[]).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        assert_eq!(r.headers["content-length"], "6");

        let s = e.settled(Slot::Blue, 7).await;
        assert_eq!((s.requests, s.upstream_failed, s.client_failed), (7, 0, 0));
        // The app saw HTTP/1.1 heads in origin form, Host from :authority.
        let heads = app.heads.lock().unwrap().clone();
        assert!(
            heads[0].starts_with("GET /length HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(heads[0].contains("\r\nhost: a.test:"), "{}", heads[0]);
        assert!(
            heads[0].contains("\r\nx-forwarded-proto: https\r\n"),
            "{}",
            heads[0]
        );
    })
    .await;
}

#[tokio::test]
async fn sequential_streams_reuse_one_upstream_connection() {
    within(30, async {
        let app = app().await;
        let e = Edge::new(app.addr).await;
        let conn = e.h2().await;
        for _ in 0..20 {
            let r = conn.request(Method::GET, "/length", &[]).await.unwrap();
            assert_eq!(r.body, "length");
        }
        assert_eq!(app.conns.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn an_app_that_breaks_its_answer_is_the_slots_failure_and_the_client_is_told() {
    within(30, async {
        let app = app().await;
        let e = Edge::new(app.addr).await;
        let conn = e.h2().await;
        for path in ["/hangup", "/garbage"] {
            let r = conn.request(Method::GET, path, &[]).await.unwrap();
            assert_eq!(r.status, 502, "{path}");
            assert_eq!(r.slot(), "blue");
        }
        // A body cut short: the head went out, so the stream ends with an error.
        assert!(conn.request(Method::GET, "/short", &[]).await.is_err());
        let s = e.settled(Slot::Blue, 3).await;
        assert_eq!((s.requests, s.upstream_failed, s.client_failed), (3, 3, 0));
        // The connection carries on.
        let r = conn.request(Method::GET, "/length", &[]).await.unwrap();
        assert_eq!(r.body, "length");
    })
    .await;
}

#[tokio::test]
async fn an_empty_post_over_h2_reaches_the_app_announcing_its_empty_body() {
    within(30, async {
        let app = app().await;
        let e = Edge::new(app.addr).await;
        let r = e
            .h2()
            .await
            .request(Method::POST, "/length", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let head = app.heads.lock().unwrap()[0].clone();
        assert!(head.starts_with("POST /length HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 0\r\n"), "{head}");
    })
    .await;
}

#[tokio::test]
async fn h2_streams_to_a_guarded_new_slot_that_refuses_are_answered_by_the_previous() {
    within(30, async {
        let blue = Backend::text("blue").await;
        let green = dead_addr().await;
        let e = Edge::new(blue.addr).await;
        let (blue_t, green_t) = (
            Target::new(SERVICE, Slot::Blue, blue.addr),
            Target::new(SERVICE, Slot::Green, green),
        );
        e.router
            .protect(
                SERVICE,
                green_t.clone(),
                blue_t,
                &ShieldConfig::default(),
                None,
            )
            .expect("the built-in router guards");
        e.router.apply(SERVICE, Some(green_t), None).await.unwrap();
        let conn = e.h2().await;
        for _ in 0..4 {
            let r = conn.request(Method::GET, "/", &[]).await.unwrap();
            assert_eq!((r.status, r.body.as_str(), r.slot()), (200, "blue", "blue"));
        }
        let g = e.settled(Slot::Green, 4).await;
        assert_eq!(
            (g.requests, g.upstream_failed),
            (4, 4),
            "each refusal counts"
        );
        assert_eq!(e.settled(Slot::Blue, 4).await.requests, 4);
        assert_eq!(e.router.shield_retries(SERVICE, Slot::Green), 4);
        assert_eq!(blue.hits(), 4);
    })
    .await;
}
