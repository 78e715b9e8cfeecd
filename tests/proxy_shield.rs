//! The shield and the burst trigger in the built-in proxy, in process, through the
//! `Router` calls the runner makes (`protect`, `apply`, `apply_weighted`), with real
//! sockets on 127.0.0.1 and hyper backends (`tests/support/backend.rs`). Every
//! behaviour runs on both proxy paths (the fast path serves guarded requests itself
//! unless the shield might retry them after a status; `tests/proxy_paths_agree.rs` has
//! the byte-level comparison).
//!
//! Nothing here asserts on speed: counts of requests, statuses and statistics only.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use backend::{dead_addr, reply, Backend};
use bytes::Bytes;
use cutover::config::{BurstConfig, ShieldConfig};
use cutover::domain::routing::Target;
use cutover::domain::stats::StatsSnapshot;
use cutover::domain::Slot;
use cutover::proxy::shield::Guard;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::proxy::ProxySettings;
use cutover::router::builtin::BuiltinRouter;
use cutover::router::Router;
use harness::{default_listener, http_client, within, HttpClient, TestProxy, SERVICE};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

struct Setup {
    router: BuiltinRouter,
    stats: Arc<StatsRegistry>,
    blue: std::net::SocketAddr,
    green: std::net::SocketAddr,
    proxy: TestProxy,
    client: HttpClient,
}

impl Setup {
    /// Blue (the previous release) is live; green is the new one at `green`.
    async fn new(blue: std::net::SocketAddr, green: std::net::SocketAddr, fast: bool) -> Setup {
        let routes = Arc::new(Routes::new());
        let stats = Arc::new(StatsRegistry::new([SERVICE]));
        let router = BuiltinRouter::new(routes.clone(), stats.clone());
        let settings = ProxySettings {
            slot_header: true,
            fast_path: fast,
            ..ProxySettings::default()
        };
        let proxy = TestProxy::start(&routes, default_listener(SERVICE), settings).await;
        let s = Setup {
            router,
            stats,
            blue,
            green,
            proxy,
            client: http_client(),
        };
        s.router
            .apply(SERVICE, Some(s.target(Slot::Blue)), None)
            .await
            .unwrap();
        s
    }

    fn target(&self, slot: Slot) -> Target {
        let addr = match slot {
            Slot::Blue => self.blue,
            Slot::Green => self.green,
        };
        Target::new(SERVICE, slot, addr)
    }

    /// What the runner does at the switch: guard green, then route to it.
    async fn switch(&self, shield: &ShieldConfig, burst: Option<&BurstConfig>) -> Arc<Guard> {
        let guard = self
            .router
            .protect(
                SERVICE,
                self.target(Slot::Green),
                self.target(Slot::Blue),
                shield,
                burst,
            )
            .expect("the built-in router guards");
        self.router
            .apply(SERVICE, Some(self.target(Slot::Green)), None)
            .await
            .unwrap();
        guard
    }

    async fn send(&self, method: Method, body: &'static str) -> (u16, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(self.proxy.url("/x"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = self.client.request(req).await.expect("a response");
        let status = resp.status().as_u16();
        let slot = resp
            .headers()
            .get("x-cutover-slot")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, slot, String::from_utf8_lossy(&body).into_owned())
    }

    fn snap(&self, slot: Slot) -> StatsSnapshot {
        self.stats.get(SERVICE, slot).unwrap().snapshot()
    }

    fn retries(&self) -> u64 {
        self.router.shield_retries(SERVICE, Slot::Green)
    }
}

/// Answers 200 with "blue:<request body>".
async fn blue_echo() -> Backend {
    Backend::start(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        reply(200, format!("blue:{}", String::from_utf8_lossy(&body)))
    })
    .await
}

fn shield_on_status(budget: f64) -> ShieldConfig {
    ShieldConfig {
        on_status: true,
        budget,
        ..ShieldConfig::default()
    }
}

const PATHS: [bool; 2] = [true, false];

#[tokio::test]
async fn with_the_shield_no_get_fails_when_the_new_release_fails_every_request_under_load() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let green = Backend::status(503).await;
        let s = Arc::new(Setup::new(blue.addr, green.addr, fast).await);
        s.switch(&shield_on_status(1.0), None).await;
        let mut load = JoinSet::new();
        for _ in 0..20 {
            let s = s.clone();
            load.spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..10 {
                    statuses.push(s.send(Method::GET, "").await);
                }
                statuses
            });
        }
        let mut answers = Vec::new();
        while let Some(r) = within(30, load.join_next()).await {
            answers.extend(r.unwrap());
        }
        assert_eq!(answers.len(), 200);
        for (status, slot, body) in &answers {
            assert_eq!(
                (*status, slot.as_str(), body.as_str()),
                (200, "blue", "blue:"),
                "fast={fast}"
            );
        }
        // The signal stays honest: every failure is green's, in its own counters.
        let g = s.snap(Slot::Green);
        assert_eq!(g.requests, 200, "fast={fast}");
        assert_eq!(g.status_class[4], 200, "fast={fast}");
        assert_eq!(g.errors(), 200);
        assert_eq!(s.retries(), 200);
        assert_eq!(s.snap(Slot::Blue).status_class[1], 200);
        assert_eq!(green.hits(), 200);
    }
}

#[tokio::test]
async fn connection_failures_are_retried_by_default_for_any_method_and_statuses_are_not() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let s = Setup::new(blue.addr, dead_addr().await, fast).await;
        s.switch(&ShieldConfig::default(), None).await;
        assert_eq!(
            s.send(Method::GET, "").await,
            (200, "blue".into(), "blue:".into())
        );
        assert_eq!(
            s.send(Method::POST, "small body").await,
            (200, "blue".into(), "blue:small body".into()),
            "fast={fast}: a POST that never reached the new release is retried with its body"
        );
        let g = s.snap(Slot::Green);
        assert_eq!((g.requests, g.upstream_failed), (2, 2), "fast={fast}");
        assert_eq!(s.retries(), 2);

        // The default does not retry on a status.
        let green = Backend::status(503).await;
        let s = Setup::new(blue.addr, green.addr, fast).await;
        s.switch(&ShieldConfig::default(), None).await;
        assert_eq!(s.send(Method::GET, "").await.0, 503, "fast={fast}");
        assert_eq!(s.retries(), 0);
    }
}

#[tokio::test]
async fn a_post_answered_with_a_failure_status_is_never_retried() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let green = Backend::status(503).await;
        let s = Setup::new(blue.addr, green.addr, fast).await;
        s.switch(&shield_on_status(1.0), None).await;
        assert_eq!(s.send(Method::POST, "order").await.0, 503, "fast={fast}");
        assert_eq!(blue.hits(), 0, "the new release may have acted on it");
        assert_eq!(s.send(Method::GET, "").await.0, 200);
        assert_eq!(s.retries(), 1);
        assert_eq!(s.snap(Slot::Green).status_class[4], 2);
    }
}

#[tokio::test]
async fn once_the_budget_is_spent_failures_reach_the_client() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let s = Setup::new(blue.addr, dead_addr().await, fast).await;
        let shield = ShieldConfig {
            budget: 0.0,
            budget_min: 3,
            ..ShieldConfig::default()
        };
        s.switch(&shield, None).await;
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(s.send(Method::GET, "").await.0);
        }
        assert_eq!(
            statuses.iter().filter(|&&c| c == 200).count(),
            3,
            "fast={fast}"
        );
        assert_eq!(
            statuses.iter().filter(|&&c| c == 502).count(),
            7,
            "fast={fast}"
        );
        assert_eq!(s.retries(), 3);
        assert_eq!(s.snap(Slot::Green).upstream_failed, 10);
    }
}

#[tokio::test]
async fn nothing_is_retried_when_no_previous_release_runs() {
    for fast in PATHS {
        let s = Setup::new(dead_addr().await, dead_addr().await, fast).await;
        // A first deployment: no previous release, so the runner guards nothing.
        s.router
            .apply(SERVICE, Some(s.target(Slot::Green)), None)
            .await
            .unwrap();
        assert_eq!(s.send(Method::GET, "").await.0, 502);
        // And a guard naming the same slot twice is refused.
        let same = s.router.protect(
            SERVICE,
            s.target(Slot::Green),
            s.target(Slot::Green),
            &ShieldConfig::default(),
            None,
        );
        assert!(same.is_none());
        // A guard removed (the previous release stopped): no more retries.
        let blue = blue_echo().await;
        let s = Setup::new(blue.addr, dead_addr().await, fast).await;
        s.switch(&ShieldConfig::default(), None).await;
        s.router.unprotect(SERVICE);
        assert_eq!(s.send(Method::GET, "").await.0, 502, "fast={fast}");
        assert_eq!(blue.hits(), 0);
    }
}

#[tokio::test]
async fn the_burst_trigger_switches_back_after_exactly_n_failures() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let green = Backend::status(500).await;
        let s = Setup::new(blue.addr, green.addr, fast).await;
        let burst = BurstConfig {
            consecutive_failures: Some(5),
            failure_ratio: None,
            window: 20,
            min_requests: 10,
        };
        let off = ShieldConfig {
            enabled: false,
            ..ShieldConfig::default()
        };
        let guard = s.switch(&off, Some(&burst)).await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(s.send(Method::GET, "").await.0);
        }
        assert_eq!(&statuses[..5], &[500; 5], "fast={fast}");
        assert!(
            statuses[5..].iter().all(|&c| c == 200),
            "fast={fast}: {statuses:?}"
        );
        assert_eq!(
            green.hits(),
            5,
            "exactly N requests reached the failing release"
        );
        assert_eq!(
            s.router.observed_live(SERVICE).await.unwrap(),
            Some(Slot::Blue)
        );
        let why = within(5, guard.tripped()).await;
        assert!(why.contains("5 consecutive failures on green"), "{why}");
        assert!(guard.has_tripped());
    }
}

#[tokio::test]
async fn with_shield_and_trigger_a_failing_canary_costs_no_client_a_failure() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let green = Backend::status(502).await;
        let s = Setup::new(blue.addr, green.addr, fast).await;
        let burst = BurstConfig {
            consecutive_failures: Some(3),
            failure_ratio: None,
            window: 20,
            min_requests: 10,
        };
        let guard = s
            .router
            .protect(
                SERVICE,
                s.target(Slot::Green),
                s.target(Slot::Blue),
                &shield_on_status(0.1),
                Some(&burst),
            )
            .unwrap();
        s.router
            .apply_weighted(SERVICE, s.target(Slot::Blue), s.target(Slot::Green), 50)
            .await
            .unwrap();
        for _ in 0..40 {
            assert_eq!(s.send(Method::GET, "").await.0, 200, "fast={fast}");
        }
        assert_eq!(green.hits(), 3);
        assert!(guard.has_tripped());
        assert!(s.router.weights(SERVICE).is_none(), "the split ended");
        assert_eq!(s.snap(Slot::Green).status_class[4], 3);
    }
}

#[tokio::test]
async fn client_errors_never_count_towards_the_trigger_nor_get_retried() {
    for fast in PATHS {
        let blue = blue_echo().await;
        let green = Backend::status(404).await;
        let s = Setup::new(blue.addr, green.addr, fast).await;
        let burst = BurstConfig {
            consecutive_failures: Some(2),
            failure_ratio: Some(0.5),
            window: 4,
            min_requests: 2,
        };
        let guard = s.switch(&shield_on_status(1.0), Some(&burst)).await;
        for _ in 0..10 {
            assert_eq!(s.send(Method::GET, "").await.0, 404, "fast={fast}");
        }
        assert!(!guard.has_tripped());
        assert_eq!(s.retries(), 0);
        assert_eq!(blue.hits(), 0);
    }
}

#[tokio::test]
async fn a_disarmed_trigger_never_fires_and_the_previous_slot_is_never_guarded() {
    for fast in PATHS {
        let blue = Backend::status(503).await;
        let green = Backend::status(503).await;
        let s = Setup::new(blue.addr, green.addr, fast).await;
        let burst = BurstConfig {
            consecutive_failures: Some(1),
            failure_ratio: None,
            window: 20,
            min_requests: 10,
        };
        let guard = s.switch(&shield_on_status(1.0), Some(&burst)).await;
        s.router.end_trigger(SERVICE);
        // The operator switches back by hand: requests to blue are not guarded.
        s.router
            .apply(SERVICE, Some(s.target(Slot::Blue)), None)
            .await
            .unwrap();
        assert_eq!(s.send(Method::GET, "").await.0, 503);
        s.router
            .apply(SERVICE, Some(s.target(Slot::Green)), None)
            .await
            .unwrap();
        // Green is still shielded (retried on blue, which fails too: the client gets
        // blue's answer), but the trigger stays quiet.
        assert_eq!(s.send(Method::GET, "").await.0, 503, "fast={fast}");
        assert!(!guard.has_tripped());
        assert_eq!(
            s.router.observed_live(SERVICE).await.unwrap(),
            Some(Slot::Green)
        );
        assert_eq!(blue.hits(), 2);
        assert_eq!(green.hits(), 1);
    }
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_408_is_never_retried_and_never_counts_against_the_release(
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for fast in PATHS {
        let blue = blue_echo().await;
        let green = Backend::status(503).await;
        let routes = Arc::new(Routes::new());
        let stats = Arc::new(StatsRegistry::new([SERVICE]));
        let router = BuiltinRouter::new(routes.clone(), stats.clone());
        let settings = ProxySettings {
            fast_path: fast,
            client_body_timeout: std::time::Duration::from_millis(200),
            ..ProxySettings::default()
        };
        let proxy = TestProxy::start(&routes, default_listener(SERVICE), settings).await;
        let target = |slot, addr| Target::new(SERVICE, slot, addr);
        let burst = BurstConfig {
            consecutive_failures: Some(1),
            failure_ratio: None,
            window: 20,
            min_requests: 10,
        };
        let guard = router
            .protect(
                SERVICE,
                target(Slot::Green, green.addr),
                target(Slot::Blue, blue.addr),
                &shield_on_status(1.0),
                Some(&burst),
            )
            .unwrap();
        router
            .apply(SERVICE, Some(target(Slot::Green, green.addr)), None)
            .await
            .unwrap();
        let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf!")
            .await
            .unwrap();
        let mut answer = Vec::new();
        within(10, c.read_to_end(&mut answer)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "fast={fast}: {answer}");
        let g = stats.get(SERVICE, Slot::Green).unwrap();
        assert_eq!(g.snapshot().client_failed, 1);
        assert_eq!(g.snapshot().errors(), 0, "not the release's fault");
        assert_eq!(g.shield_retries(), [0, 0]);
        assert!(!guard.has_tripped());
        assert_eq!((blue.hits(), green.hits()), (0, 0));
    }
}

/// A keep-alive backend answering `ok` to every request; counts the connections it
/// accepted.
async fn counting_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Sends one keep-alive GET on `c` and reads its answer (a `content-length: 2` body).
async fn ask(c: &mut tokio::net::TcpStream) -> String {
    c.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (mut answer, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = within(10, c.read(&mut chunk)).await.unwrap();
        assert!(
            n > 0,
            "the proxy closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            if answer.len() >= end + 4 + 2 {
                return String::from_utf8_lossy(&answer).into_owned();
            }
        }
    }
}

/// Two client connections, two requests each, interleaved: the slot header of each
/// answer.
async fn two_clients_twice(proxy: std::net::SocketAddr) -> Vec<String> {
    let mut clients = [
        tokio::net::TcpStream::connect(proxy).await.unwrap(),
        tokio::net::TcpStream::connect(proxy).await.unwrap(),
    ];
    let mut slots = Vec::new();
    for i in [0, 1, 0, 1] {
        let answer = ask(&mut clients[i]).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let slot = answer
            .lines()
            .find_map(|l| l.strip_prefix("x-cutover-slot: "))
            .unwrap_or_default();
        slots.push(slot.to_string());
    }
    slots
}

/// With a previous release running (the watch, `warm_for`), requests without a body
/// to the new slot stay on the fast path, whose upstream connections belong to their
/// client connection: two clients, two upstream connections, each reused (the general
/// path's shared pool would take one). A refused connection is still retried on the
/// previous slot there, and counts against the new release.
#[tokio::test]
async fn guarded_requests_take_the_fast_path_which_retries_a_refused_connection() {
    let (green, green_conns) = counting_backend().await;
    let (blue, blue_conns) = counting_backend().await;
    let s = Setup::new(blue, green, true).await;
    s.switch(&ShieldConfig::default(), None).await;
    assert_eq!(two_clients_twice(s.proxy.addr).await, ["green"; 4]);
    assert_eq!(
        green_conns.load(Ordering::SeqCst),
        2,
        "one upstream connection per client connection: the fast path served them"
    );
    assert_eq!(s.snap(Slot::Green).requests, 4);

    // The new release refuses connections: every request is retried on blue.
    let s = Setup::new(blue, dead_addr().await, true).await;
    s.switch(&ShieldConfig::default(), None).await;
    assert_eq!(two_clients_twice(s.proxy.addr).await, ["blue"; 4]);
    assert_eq!(
        blue_conns.load(Ordering::SeqCst),
        2,
        "the retries went out on each client connection's own connection to blue"
    );
    let g = s.snap(Slot::Green);
    assert_eq!(
        (g.requests, g.upstream_failed),
        (4, 4),
        "each refusal counts against the new release"
    );
    assert_eq!(s.snap(Slot::Blue).requests, 4);
    assert_eq!(s.retries(), 4);
}
