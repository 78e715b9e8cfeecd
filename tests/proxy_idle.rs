//! What an idle client connection keeps, and the connection-affine general path.
//!
//! Issue #16: an idle keep-alive client connection lets go of its upstream connection
//! after `IDLE_RELEASE` (1 s), holds no buffers while it waits and is parked without a
//! task (until its keep-alive deadline, or the listener drains), yet is served as
//! before when it sends again; a client that sends again sooner reuses its upstream
//! connection. And the benchmark's third build, the general path with an upstream
//! connection owned by the client connection (`CUTOVER_PROXY_AFFINE=1`), keeps one
//! upstream connection per client connection across keep-alive requests, replaces
//! one the app closed without failing a request, and still carries chunked bodies,
//! pipelined requests and upgrades. Real sockets on 127.0.0.1:0, scripted backends.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover::domain::Slot;
use cutover::proxy::ProxySettings;
use harness::{upstream, within, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// A backend whose every connection is handed to `script`; counts connections.
async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(s));
        }
    });
    (addr, count)
}

/// Reads one request head from a backend's socket; `None` at EOF.
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

/// Answers `ok` to every request; reports on `closed` when the proxy closes.
fn answering(
    closed: mpsc::UnboundedSender<()>,
    close_after_each: bool,
) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync {
    move |mut s| {
        let closed = closed.clone();
        Box::pin(async move {
            while read_request(&mut s).await.is_some() {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                if close_after_each {
                    return;
                }
            }
            let _ = closed.send(());
        })
    }
}

/// Reads one `Content-Length` response; returns its status line and body.
async fn read_response(c: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed in the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return (head.lines().next().unwrap().to_string(), body);
        }
        let mut chunk = [0u8; 4096];
        let n = c.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn settings(fast: bool, affine: bool) -> ProxySettings {
    ProxySettings {
        fast_path: fast,
        affine_upstream: affine,
        ..ProxySettings::default()
    }
}

#[tokio::test]
async fn an_idle_client_connection_lets_go_of_its_upstream_connection_and_is_served_again() {
    within(20, async {
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let (addr, conns) = scripted(answering(closed_tx, false)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, addr), settings(true, false)).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        assert_eq!(read_response(&mut c, &mut buf).await.1, b"ok");

        // Idle past the release time (1 s), well inside the keep-alive time (10 s).
        let closed = tokio::time::timeout(Duration::from_secs(3), closed_rx.recv()).await;
        assert!(
            matches!(closed, Ok(Some(()))),
            "the upstream connection was not released"
        );
        // The client connection is still open and served, on a new upstream connection.
        c.write_all(GET).await.unwrap();
        let (status, body) = read_response(&mut c, &mut buf).await;
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("HTTP/1.1 200 OK", &b"ok"[..])
        );
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn a_client_that_sends_again_soon_reuses_its_upstream_connection() {
    within(20, async {
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let (addr, conns) = scripted(answering(closed_tx, false)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, addr), settings(true, false)).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..5 {
            c.write_all(GET).await.unwrap();
            assert_eq!(read_response(&mut c, &mut buf).await.1, b"ok");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one upstream connection");
        assert!(closed_rx.try_recv().is_err(), "and still open");
    })
    .await;
}

#[tokio::test]
async fn pipelined_requests_after_an_idle_wait_are_answered_in_order() {
    within(20, async {
        let (closed_tx, _closed_rx) = mpsc::unbounded_channel();
        let (addr, _) = scripted(answering(closed_tx, false)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, addr), settings(true, false)).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        read_response(&mut c, &mut buf).await;
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        // Three requests in one write, the last one split in two writes.
        c.write_all(&[GET, GET, &GET[..10]].concat()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(&GET[10..]).await.unwrap();
        for _ in 0..3 {
            assert_eq!(read_response(&mut c, &mut buf).await.1, b"ok");
        }
    })
    .await;
}

/// Reads until EOF (or a reset): the proxy closed the connection.
async fn closed(c: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 256];
    loop {
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_connection_idle_past_the_release_still_closes_at_its_keep_alive_deadline() {
    within(20, async {
        let (closed_tx, _closed_rx) = mpsc::unbounded_channel();
        let (addr, _) = scripted(answering(closed_tx, false)).await;
        let mut s = settings(true, false);
        s.header_read_timeout = Duration::from_millis(2_500);
        let (proxy, _routes) = TestProxy::with_live(&upstream(Slot::Blue, addr), s).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        read_response(&mut c, &mut buf).await;
        let answered = std::time::Instant::now();
        // Past `IDLE_RELEASE` (1 s) it waits outside the fast path, still open...
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut probe = [0u8; 1];
        assert!(
            matches!(c.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "closed at the release instead of the keep-alive deadline"
        );
        // ...and is closed once `header_read_timeout` since the response has passed,
        // not a fresh `header_read_timeout` after it left the fast path.
        assert!(closed(&mut c).await);
        let after = answered.elapsed();
        assert!(
            after >= Duration::from_millis(2_400) && after < Duration::from_secs(6),
            "closed {after:?} after the response"
        );
    })
    .await;
}

#[tokio::test]
async fn draining_closes_a_connection_idle_outside_the_fast_path_at_once() {
    within(20, async {
        let (closed_tx, _closed_rx) = mpsc::unbounded_channel();
        let (addr, _) = scripted(answering(closed_tx, false)).await;
        let mut s = settings(true, false);
        s.header_read_timeout = Duration::from_secs(30);
        let (mut proxy, _routes) = TestProxy::with_live(&upstream(Slot::Blue, addr), s).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(GET).await.unwrap();
        read_response(&mut c, &mut buf).await;
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let stopping = std::time::Instant::now();
        let _ = proxy.stop.take().unwrap().send(());
        // Closed when lingering (1 s) ends and draining starts, long before the
        // 5 s grace period or the 30 s keep-alive deadline.
        assert!(closed(&mut c).await);
        let after = stopping.elapsed();
        assert!(
            after < Duration::from_secs(4),
            "closed {after:?} after the stop"
        );
        let served = proxy.served.take().unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(3), served)
            .await
            .is_ok());
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_parked_without_a_task_and_served_again() {
    within(30, async {
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let (addr, _) = scripted(answering(closed_tx, false)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, addr), settings(true, false)).await;
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        // The listener, its idle set's watcher, the backend's accept loop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let baseline = tasks();
        const N: usize = 50;
        let mut clients = Vec::new();
        let mut buf = Vec::new();
        for _ in 0..N {
            let mut c = TcpStream::connect(proxy.addr).await.unwrap();
            c.write_all(GET).await.unwrap();
            assert_eq!(read_response(&mut c, &mut buf).await.1, b"ok");
            assert!(buf.is_empty());
            clients.push(c);
        }
        assert!(tasks() >= baseline + N, "one task per busy connection");
        // After `IDLE_RELEASE` (1 s) every upstream connection is closed (the
        // backend's tasks end) and every client connection is parked: no task left
        // for any of the 50 open connections.
        for _ in 0..N {
            closed_rx.recv().await.unwrap();
        }
        while tasks() > baseline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Each is served again (a new task per busy period), in any order.
        for c in clients.iter_mut().rev() {
            c.write_all(GET).await.unwrap();
            let (status, body) = read_response(c, &mut buf).await;
            assert_eq!(
                (status.as_str(), body.as_slice()),
                ("HTTP/1.1 200 OK", &b"ok"[..])
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_parked_connection_whose_client_leaves_is_closed_and_frees_its_slot() {
    within(30, async {
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let (addr, _) = scripted(answering(closed_tx, false)).await;
        const N: usize = 4;
        let capped = ProxySettings {
            max_connections: N,
            ..settings(true, false)
        };
        let (proxy, _routes) = TestProxy::with_live(&upstream(Slot::Blue, addr), capped).await;
        let mut buf = Vec::new();
        for round in 0..2 {
            // N connections, all the listener allows, each served once and parked
            // (its upstream connection closed after `IDLE_RELEASE`).
            let mut clients = Vec::new();
            for _ in 0..N {
                let mut c = TcpStream::connect(proxy.addr).await.unwrap();
                c.write_all(GET).await.unwrap();
                assert_eq!(read_response(&mut c, &mut buf).await.1, b"ok");
                clients.push(c);
            }
            for _ in 0..N {
                closed_rx.recv().await.unwrap();
            }
            // A parked connection's socket is still watched: one more request on
            // each is answered.
            if round == 0 {
                for c in &mut clients {
                    c.write_all(GET).await.unwrap();
                    assert_eq!(read_response(c, &mut buf).await.1, b"ok");
                }
                for _ in 0..N {
                    closed_rx.recv().await.unwrap();
                }
            }
            // The clients leave while parked: each EOF closes its connection and
            // frees its slot, so the next round's N connections are all served.
            for c in &mut clients {
                c.shutdown().await.unwrap();
            }
            for mut c in clients {
                assert!(closed(&mut c).await, "a parked connection was closed");
            }
        }
    })
    .await;
}

// ------------------------------------------------- the connection-affine general path

#[tokio::test]
async fn the_affine_path_keeps_one_upstream_connection_per_client_connection() {
    within(20, async {
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let (addr, conns) = scripted(answering(closed_tx, false)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, addr), settings(false, true)).await;
        let (mut a, mut b) = (
            TcpStream::connect(proxy.addr).await.unwrap(),
            TcpStream::connect(proxy.addr).await.unwrap(),
        );
        let (mut abuf, mut bbuf) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            a.write_all(GET).await.unwrap();
            assert_eq!(read_response(&mut a, &mut abuf).await.1, b"ok");
            b.write_all(GET).await.unwrap();
            assert_eq!(read_response(&mut b, &mut bbuf).await.1, b"ok");
        }
        // Pipelined on one connection: in order, on the same upstream connection.
        a.write_all(&[GET, GET].concat()).await.unwrap();
        for _ in 0..2 {
            assert_eq!(read_response(&mut a, &mut abuf).await.1, b"ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 2, "one per client connection");
        // The upstream connection goes with its client connection.
        drop(a);
        let closed = tokio::time::timeout(Duration::from_secs(3), closed_rx.recv()).await;
        assert!(matches!(closed, Ok(Some(()))));
    })
    .await;
}

#[tokio::test]
async fn the_affine_path_replaces_a_connection_the_app_closed_without_a_failed_request() {
    within(20, async {
        let (closed_tx, _closed_rx) = mpsc::unbounded_channel();
        // Closes after every response without saying so.
        let (addr, conns) = scripted(answering(closed_tx, true)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, addr), settings(false, true)).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..5 {
            c.write_all(GET).await.unwrap();
            let (status, body) = read_response(&mut c, &mut buf).await;
            assert_eq!(
                (status.as_str(), body.as_slice()),
                ("HTTP/1.1 200 OK", &b"ok"[..])
            );
            // Let the close arrive, as between a real client's requests.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 5);
    })
    .await;
}

#[tokio::test]
async fn the_affine_path_carries_chunked_bodies_and_upgrades() {
    within(20, async {
        let echo = backend::Backend::upgrade_echo().await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, echo.addr), settings(false, true)).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let head = harness::read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // A chunked request body reaches the app whole (echoed back).
        let echo_body = backend::Backend::start(|req| async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            backend::reply(200, body)
        })
        .await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, echo_body.addr), settings(false, true))
                .await;
        let out = harness::raw_exchange(
            proxy.addr,
            b"POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("\r\n\r\nabcde"), "{out}");

        // A chunked response reaches the client whole (3 chunks of 1 KiB).
        let chunked = backend::Backend::trickle(3, Duration::from_millis(20)).await;
        let (proxy, _routes) =
            TestProxy::with_live(&upstream(Slot::Blue, chunked.addr), settings(false, true))
                .await;
        let out = harness::raw_exchange(
            proxy.addr,
            b"GET /t HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{out}");
        assert!(out.ends_with("0\r\n\r\n"), "the last chunk arrived: {out}");
    })
    .await;
}
