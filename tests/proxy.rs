//! The built-in proxy end to end, in process: real sockets on 127.0.0.1:0, hyper test
//! backends (`tests/support/backend.rs`), `proxy::serve` with hand-built routes.
//! Normal traffic goes through hyper's client; hostile input through raw TCP.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backend::Backend;
use bytes::Bytes;
use cutover::domain::endpoint::Endpoint;
use cutover::domain::Slot;
use cutover::proxy::preview::PreviewAccess;
use cutover::proxy::table::{Routes, ServiceRoute};
use cutover::proxy::{ListenerRoutes, ProxySettings};

const PREVIEW_SECRET: &str = "the-preview-secret-0123";
use harness::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

// ---------------------------------------------------------------- switching

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_switches_under_concurrent_load_lose_no_request() {
    within(60, async {
        let blue_app = Backend::text("blue").await;
        let green_app = Backend::text("green").await;
        let blue = upstream(Slot::Blue, blue_app.addr);
        let green = upstream(Slot::Green, green_app.addr);
        let (proxy, routes) = TestProxy::with_live(&blue, settings()).await;
        let client = http_client();
        let switching = Arc::new(AtomicBool::new(true));

        let mut clients = JoinSet::new();
        for _ in 0..16 {
            let (client, url, switching) = (client.clone(), proxy.url("/"), switching.clone());
            clients.spawn(async move {
                let (mut blue, mut green) = (0u64, 0u64);
                // At least 10 requests each; keep going while switches happen (capped).
                while blue + green < 10 || (switching.load(Ordering::SeqCst) && blue + green < 400)
                {
                    let r = get(&client, &url).await;
                    assert_eq!(r.status, 200, "{r:?}");
                    match r.slot.as_deref() {
                        Some("blue") if r.body == "blue" => blue += 1,
                        Some("green") if r.body == "green" => green += 1,
                        _ => panic!("unexpected answer {r:?}"),
                    }
                }
                (blue, green)
            });
        }
        for i in 0..200 {
            routes.set(SERVICE, live(if i % 2 == 0 { &green } else { &blue }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        switching.store(false, Ordering::SeqCst);

        let (mut seen_blue, mut seen_green) = (0, 0);
        while let Some(done) = clients.join_next().await {
            let (b, g) = done.expect("client task");
            seen_blue += b;
            seen_green += g;
        }
        assert!(seen_blue > 0 && seen_green > 0, "both slots answered");
        let b = settled(&blue.stats, seen_blue).await;
        let g = settled(&green.stats, seen_green).await;
        assert_eq!(b.requests, seen_blue);
        assert_eq!(g.requests, seen_green);
        assert_eq!(
            b.status_class[1] + g.status_class[1],
            seen_blue + seen_green
        );
        assert_eq!(
            b.errors() + g.errors() + b.client_failed + g.client_failed,
            0
        );
    })
    .await;
}

#[tokio::test]
async fn a_slot_given_by_host_name_is_resolved_when_dialled_on_both_paths() {
    within(30, async {
        for fast_path in [true, false] {
            let app = Backend::text("named").await;
            let by_name = Endpoint::host("localhost", app.addr.port()).unwrap();
            let blue = upstream(Slot::Blue, by_name);
            let settings = ProxySettings {
                fast_path,
                slot_header: true,
                ..ProxySettings::default()
            };
            let (proxy, routes) = TestProxy::with_live(&blue, settings).await;
            let client = http_client();
            for _ in 0..5 {
                let r = get(&client, &proxy.url("/")).await;
                assert_eq!(
                    (r.status, r.slot.as_deref(), r.body.as_str()),
                    (200, Some("blue"), "named"),
                    "fast path {fast_path}: {r:?}"
                );
            }
            assert_eq!(settled(&blue.stats, 5).await.status_class[1], 5);

            // A name that does not resolve is the upstream's failure: 502, recorded.
            let nowhere = upstream(
                Slot::Green,
                Endpoint::host("no-such-host.invalid", 80).unwrap(),
            );
            routes.set(SERVICE, live(&nowhere));
            let r = get(&client, &proxy.url("/")).await;
            assert_eq!((r.status, r.slot.as_deref()), (502, Some("green")), "{r:?}");
            assert_eq!(settled(&nowhere.stats, 1).await.upstream_failed, 1);
        }
    })
    .await;
}

#[tokio::test]
async fn a_slow_request_started_on_blue_completes_after_the_switch_to_green() {
    within(20, async {
        let blue_app = Backend::slow(Duration::from_secs(1), "blue").await;
        let green_app = Backend::text("green").await;
        let blue = upstream(Slot::Blue, blue_app.addr);
        let green = upstream(Slot::Green, green_app.addr);
        let (proxy, routes) = TestProxy::with_live(&blue, settings()).await;
        let client = http_client();

        let slow = tokio::spawn({
            let (client, url) = (client.clone(), proxy.url("/slow"));
            async move { get(&client, &url).await }
        });
        wait_until(|| blue.stats.in_flight() == 1).await;
        routes.set(SERVICE, live(&green));

        let fresh = get(&client, &proxy.url("/")).await;
        assert_eq!((fresh.status, fresh.slot.as_deref()), (200, Some("green")));
        let slow = slow.await.unwrap();
        assert_eq!((slow.status, slow.slot.as_deref()), (200, Some("blue")));
        assert_eq!(slow.body, "blue");
        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.status_class[1]), (1, 1));
    })
    .await;
}

// ---------------------------------------------------------------- upgrades

async fn open_upgrade(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    (s, head)
}

async fn echo(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.expect("echo");
    back
}

#[tokio::test]
async fn an_upgraded_connection_echoes_and_keeps_working_after_a_switch() {
    within(20, async {
        let blue_app = Backend::upgrade_echo().await;
        let green_app = Backend::upgrade_echo().await;
        let blue = upstream(Slot::Blue, blue_app.addr);
        let green = upstream(Slot::Green, green_app.addr);
        let (proxy, routes) = TestProxy::with_live(&blue, settings()).await;

        let (mut tunnel, head) = open_upgrade(proxy.addr).await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        assert!(head.contains("x-cutover-slot: blue"), "{head}");
        assert_eq!(echo(&mut tunnel, b"hello").await, b"hello");

        routes.set(SERVICE, live(&green));
        assert_eq!(echo(&mut tunnel, b"still here").await, b"still here");
        let (mut second, head) = open_upgrade(proxy.addr).await;
        assert!(head.contains("x-cutover-slot: green"), "{head}");
        assert_eq!(echo(&mut second, b"hi green").await, b"hi green");
        assert_eq!((blue_app.hits(), green_app.hits()), (1, 1));

        // The 101 is recorded and leaves the in-flight count while the tunnel is open.
        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.status_class[0]), (1, 1));
    })
    .await;
}

// ---------------------------------------------------------------- headers

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways_and_forwarded_headers_are_added() {
    within(20, async {
        let app = Backend::echo_headers().await;
        let blue = upstream(Slot::Blue, app.addr);
        // The client (127.0.0.1) is a trusted proxy here: its X-Forwarded-For is
        // extended (an untrusted client's is replaced: tests/proxy_edge.rs).
        let trusting = ProxySettings {
            trusted_proxies: std::sync::Arc::from(vec![
                cutover::config::IpNet::parse("127.0.0.1").unwrap()
            ]),
            ..settings()
        };
        let (proxy, _routes) = TestProxy::with_live(&blue, trusting).await;
        let client = http_client();

        let req = request(
            &proxy.url("/h"),
            &[
                ("host", "shop.example"),
                ("connection", "x-custom"),
                ("x-custom", "secret"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("x-forwarded-for", "203.0.113.9"),
                ("accept", "text/plain"),
            ],
        );
        let seen = send(&client, req).await;
        assert_eq!(seen.status, 200);
        let lines: Vec<&str> = seen.body.lines().collect();
        for gone in [
            "x-custom:",
            "connection:",
            "keep-alive:",
            "te:",
            "proxy-authorization:",
        ] {
            assert!(
                !lines.iter().any(|l| l.starts_with(gone)),
                "{gone} leaked: {lines:?}"
            );
        }
        for kept in [
            "host: shop.example",
            "accept: text/plain",
            "x-forwarded-for: 203.0.113.9, 127.0.0.1",
            "x-forwarded-proto: http",
            "x-forwarded-host: shop.example",
        ] {
            assert!(lines.contains(&kept), "missing {kept}: {lines:?}");
        }

        let app = Backend::with_response_headers(&[
            ("connection", "x-resp"),
            ("x-resp", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "yes"),
        ])
        .await;
        let green = upstream(Slot::Green, app.addr);
        let (proxy, _routes) = TestProxy::with_live(&green, settings()).await;
        let r = get(&client, &proxy.url("/")).await;
        assert_eq!((r.status, r.slot.as_deref()), (200, Some("green")));
        assert_eq!(r.headers["x-kept"], "yes");
        for gone in ["connection", "x-resp", "keep-alive", "proxy-authenticate"] {
            assert!(
                !r.headers.contains_key(gone),
                "{gone} leaked: {:?}",
                r.headers
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------- hostile clients

#[tokio::test]
async fn garbage_gets_400_and_an_oversized_content_length_gets_413_and_serving_goes_on() {
    within(20, async {
        let app = Backend::text("ok").await;
        let blue = upstream(Slot::Blue, app.addr);
        let settings = ProxySettings {
            max_body_bytes: 1024,
            ..settings()
        };
        let (proxy, _routes) = TestProxy::with_live(&blue, settings).await;

        let answer = raw_exchange(proxy.addr, b"\x16\x03\x01 THIS IS NOT HTTP\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");

        let r = get(&http_client(), &proxy.url("/")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(app.hits(), 1, "neither refused request reached the backend");
        assert_eq!(settled(&blue.stats, 1).await.requests, 1);
    })
    .await;
}

#[tokio::test]
async fn a_slow_loris_client_is_cut_after_the_header_read_timeout_while_others_are_served() {
    within(20, async {
        let app = Backend::text("ok").await;
        let blue = upstream(Slot::Blue, app.addr);
        let settings = ProxySettings {
            header_read_timeout: Duration::from_millis(300),
            ..settings()
        };
        let (proxy, _routes) = TestProxy::with_live(&blue, settings).await;

        let mut loris = TcpStream::connect(proxy.addr).await.unwrap();
        loris
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Never: ")
            .await
            .unwrap();
        let r = get(&http_client(), &proxy.url("/")).await;
        assert_eq!(r.status, 200);

        // The proxy closes the connection (maybe after a 408): reading reaches EOF.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), loris.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the slow-loris connection was never cut");
        assert_eq!(app.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_and_counted_as_a_client_failure() {
    within(20, async {
        let app = Backend::start(|req| async move {
            match req.into_body().collect().await {
                Ok(b) => backend::reply(200, format!("got {} bytes", b.to_bytes().len())),
                Err(_) => backend::reply(400, "broken body"),
            }
        })
        .await;
        let blue = upstream(Slot::Blue, app.addr);
        let settings = ProxySettings {
            max_body_bytes: 1024,
            ..settings()
        };
        let (proxy, _routes) = TestProxy::with_live(&blue, settings).await;

        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let chunk = [b'a'; 800];
        let mut req =
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..2 {
            req.extend_from_slice(b"320\r\n");
            req.extend_from_slice(&chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        s.write_all(&req).await.unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");

        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.client_failed, b.errors()), (1, 1, 0));

        // Within the limit, the same upload goes through.
        let ok = http_client()
            .request(
                Request::post(proxy.url("/upload"))
                    .body(Full::new(Bytes::from_static(&[b'a'; 1000])))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = ok.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"got 1000 bytes");
    })
    .await;
}

// ---------------------------------------------------------------- routing

#[tokio::test]
async fn the_preview_header_and_the_preview_listener_reach_the_preview_slot() {
    within(20, async {
        let live_app = Backend::text("live").await;
        let preview_app = Backend::echo_headers().await;
        let blue = upstream(Slot::Blue, live_app.addr);
        let green = upstream(Slot::Green, preview_app.addr);
        let routes = Arc::new(Routes::new());
        routes.set(
            SERVICE,
            ServiceRoute {
                live: Some(blue.clone()),
                preview: Some(green.clone()),
            },
        );
        let with_secret = ProxySettings {
            preview: PreviewAccess::with_secret(PREVIEW_SECRET),
            ..settings()
        };
        let main = TestProxy::start(&routes, default_listener(SERVICE), with_secret).await;
        let preview_listener = ListenerRoutes {
            preview_only: true,
            ..default_listener(SERVICE)
        };
        let preview = TestProxy::start(&routes, preview_listener, settings()).await;
        let client = http_client();

        let r = get(&client, &main.url("/")).await;
        assert_eq!((r.slot.as_deref(), r.body.as_str()), (Some("blue"), "live"));
        // Without the secret the header opens nothing (and is not forwarded).
        let r = send(
            &client,
            request(&main.url("/"), &[("x-cutover-preview", "yes")]),
        )
        .await;
        assert_eq!(r.slot.as_deref(), Some("blue"));
        let r = send(
            &client,
            request(&main.url("/"), &[("x-cutover-preview", PREVIEW_SECRET)]),
        )
        .await;
        assert_eq!(r.slot.as_deref(), Some("green"));
        assert!(
            !r.body.contains("x-cutover-preview"),
            "preview header forwarded: {}",
            r.body
        );
        let r = get(&client, &preview.url("/")).await;
        assert_eq!((r.status, r.slot.as_deref()), (200, Some("green")));

        assert_eq!(settled(&green.stats, 2).await.requests, 2);
        assert_eq!(settled(&blue.stats, 2).await.requests, 2);
    })
    .await;
}

#[tokio::test]
async fn missing_slots_and_unknown_hosts_are_answered_by_the_proxy_and_not_recorded() {
    within(20, async {
        let app = Backend::text("web").await;
        let blue = upstream(Slot::Blue, app.addr);
        let routes = Arc::new(Routes::new());
        routes.set(SERVICE, live(&blue));
        routes.set("empty", ServiceRoute::default());
        let mut by_host = HashMap::new();
        by_host.insert("web.example".to_string(), SERVICE.to_string());
        by_host.insert("empty.example".to_string(), "empty".to_string());
        let listener = ListenerRoutes {
            by_host,
            default: None,
            preview_only: false,
        };
        let with_secret = ProxySettings {
            preview: PreviewAccess::with_secret(PREVIEW_SECRET),
            ..settings()
        };
        let proxy = TestProxy::start(&routes, listener, with_secret).await;
        let client = http_client();
        let url = proxy.url("/");

        let r = send(&client, request(&url, &[("host", "unknown.example")])).await;
        assert_eq!((r.status, r.body.as_str()), (404, "no service for host\n"));
        let r = send(&client, request(&url, &[("host", "empty.example")])).await;
        assert_eq!((r.status, r.body.as_str()), (503, "no live slot\n"));
        let r = send(
            &client,
            request(
                &url,
                &[
                    ("host", "web.example"),
                    ("x-cutover-preview", PREVIEW_SECRET),
                ],
            ),
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (503, "no preview slot\n"));
        let r = send(&client, request(&url, &[("host", "web.example")])).await;
        assert_eq!((r.status, r.body.as_str()), (200, "web"));

        assert_eq!(app.hits(), 1);
        assert_eq!(settled(&blue.stats, 1).await.requests, 1);
    })
    .await;
}

#[tokio::test]
async fn the_host_header_picks_the_service_ignoring_port_and_case() {
    within(20, async {
        let api_app = Backend::text("api").await;
        let web_app = Backend::text("web").await;
        let routes = Arc::new(Routes::new());
        routes.set("api", live(&upstream(Slot::Green, api_app.addr)));
        routes.set("web", live(&upstream(Slot::Blue, web_app.addr)));
        let mut by_host = HashMap::new();
        by_host.insert("api.example".to_string(), "api".to_string());
        let listener = ListenerRoutes {
            by_host,
            default: Some("web".into()),
            preview_only: false,
        };
        let proxy = TestProxy::start(&routes, listener, settings()).await;
        let client = http_client();
        let url = proxy.url("/");

        let r = send(&client, request(&url, &[("host", "API.Example:8080")])).await;
        assert_eq!((r.body.as_str(), r.slot.as_deref()), ("api", Some("green")));
        let r = send(&client, request(&url, &[("host", "www.example")])).await;
        assert_eq!((r.body.as_str(), r.slot.as_deref()), ("web", Some("blue")));
    })
    .await;
}

// ---------------------------------------------------------------- statistics

#[tokio::test]
async fn a_backend_500_is_passed_on_and_counted_as_an_error() {
    within(20, async {
        let app = Backend::status(500).await;
        let blue = upstream(Slot::Blue, app.addr);
        let (proxy, _routes) = TestProxy::with_live(&blue, settings()).await;
        let r = get(&http_client(), &proxy.url("/")).await;
        assert_eq!((r.status, r.body.as_str()), (500, "status 500"));
        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.status_class[4], b.errors()), (1, 1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_dead_upstream_gets_502_and_counts_as_upstream_failed() {
    within(20, async {
        let blue = upstream(Slot::Blue, backend::dead_addr().await);
        let (proxy, _routes) = TestProxy::with_live(&blue, settings()).await;
        let r = get(&http_client(), &proxy.url("/")).await;
        assert_eq!((r.status, r.slot.as_deref()), (502, Some("blue")));
        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.upstream_failed, b.errors()), (1, 1, 1));
    })
    .await;
}

#[tokio::test]
async fn an_upstream_silent_past_the_upstream_timeout_gets_504_and_counts_as_upstream_failed() {
    within(20, async {
        let app = Backend::slow(Duration::from_secs(5), "late").await;
        let blue = upstream(Slot::Blue, app.addr);
        let settings = ProxySettings {
            upstream_timeout: Duration::from_millis(200),
            ..settings()
        };
        let (proxy, _routes) = TestProxy::with_live(&blue, settings).await;
        let r = get(&http_client(), &proxy.url("/")).await;
        assert_eq!((r.status, r.slot.as_deref()), (504, Some("blue")));
        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.upstream_failed), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_client_leaving_mid_body_is_a_client_failure_not_an_error() {
    within(20, async {
        let app = Backend::trickle(200, Duration::from_millis(20)).await;
        let blue = upstream(Slot::Blue, app.addr);
        let (proxy, _routes) = TestProxy::with_live(&blue, settings()).await;

        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        wait_until(|| blue.stats.in_flight() == 1).await;
        drop(s);

        let b = settled(&blue.stats, 1).await;
        assert_eq!((b.requests, b.client_failed, b.errors()), (1, 1, 0));
        assert_eq!(b.status_class, [0; 5]);
    })
    .await;
}

// ---------------------------------------------------------------- shutdown

#[tokio::test]
async fn shutdown_lets_an_open_request_finish_and_stops_accepting() {
    within(20, async {
        let app = Backend::slow(Duration::from_millis(500), "done").await;
        let blue = upstream(Slot::Blue, app.addr);
        let (mut proxy, _routes) = TestProxy::with_live(&blue, settings()).await;
        let open = tokio::spawn({
            let url = proxy.url("/");
            async move { get(&http_client(), &url).await }
        });
        wait_until(|| blue.stats.in_flight() == 1).await;

        let served = proxy.shutdown();
        let r = open.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "done"));
        served.await.unwrap().expect("serve returns cleanly");
        assert!(
            TcpStream::connect(proxy.addr).await.is_err(),
            "still accepting"
        );
    })
    .await;
}

/// The defaults, with the `x-cutover-slot` response header on: these tests tell the
/// slots apart by it.
fn settings() -> ProxySettings {
    ProxySettings {
        slot_header: true,
        ..ProxySettings::default()
    }
}

/// A raw `GET /` on `stream`; the status line of the answer, if one comes within `wait`.
async fn raw_get(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_string)
}

#[tokio::test]
async fn a_listener_at_its_connection_cap_queues_new_clients_until_one_leaves() {
    within(30, async {
        let app = Backend::text("ok").await;
        let blue = upstream(Slot::Blue, app.addr);
        let settings = ProxySettings {
            max_connections: 2,
            ..ProxySettings::default()
        };
        let (proxy, _routes) = TestProxy::with_live(&blue, settings).await;
        // Two clients hold both connection slots (idle keep-alive connections).
        let mut first = TcpStream::connect(proxy.addr).await.unwrap();
        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        for s in [&mut first, &mut second] {
            let status = raw_get(s, Duration::from_secs(5)).await;
            assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
        }
        // A third is queued by the kernel, not served...
        let mut third = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(
            raw_get(&mut third, Duration::from_millis(500)).await,
            None,
            "served beyond the cap"
        );
        // ...until a slot is free: then it is answered.
        drop(first);
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("the queued client is served once a slot is free")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    })
    .await;
}
