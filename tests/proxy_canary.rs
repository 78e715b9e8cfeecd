//! Progressive delivery in the built-in proxy, end to end and in process: weighted
//! splits, sticky cookies, preview by header and cookie, and mirroring, driven through
//! the `Router` API (`BuiltinRouter`) the orchestrator uses, with real sockets on
//! 127.0.0.1:0 and hyper test backends (`tests/support/backend.rs`).
//!
//! The split is deterministic, so its counts are asserted exactly. Nothing here
//! asserts on wall-clock speed: "the client is never delayed by the mirror" is shown
//! by a mirror target that is held shut while every client request completes.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy_harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::{reply, Backend};
use bytes::Bytes;
use cutover::domain::routing::{MirrorReport, MirrorSpec, Target};
use cutover::domain::Slot;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::proxy::{serve_with_grace, ListenerRoutes, Proxy, ProxySettings};
use cutover::router::builtin::BuiltinRouter;
use cutover::router::Router;
use harness::{within, SERVICE};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

// ---------------------------------------------------------------- harness

/// A proxy serving `web` through a `BuiltinRouter`, with a blue and a green backend.
struct Setup {
    router: BuiltinRouter,
    stats: Arc<StatsRegistry>,
    blue: Backend,
    green: Backend,
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    _stop: oneshot::Sender<()>,
}

impl Setup {
    /// Blue and green answer 200 with their name; blue is live.
    async fn new() -> Setup {
        Self::with(
            Backend::text("blue").await,
            Backend::text("green").await,
            ProxySettings {
                slot_header: true,
                ..ProxySettings::default()
            },
        )
        .await
    }

    async fn with(blue: Backend, green: Backend, settings: ProxySettings) -> Setup {
        let routes = Arc::new(Routes::new());
        let stats = Arc::new(StatsRegistry::new([SERVICE]));
        let router = BuiltinRouter::new(routes.clone(), stats.clone());
        let proxy = Proxy::new(routes, settings);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = ListenerRoutes {
            by_host: HashMap::new(),
            default: Some(SERVICE.to_string()),
            preview_only: false,
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        tokio::spawn(serve_with_grace(
            proxy,
            tcp,
            listener,
            shutdown,
            Duration::from_secs(1),
        ));
        let s = Setup {
            router,
            stats,
            blue,
            green,
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _stop: stop,
        };
        s.router.apply(SERVICE, Some(s.blue()), None).await.unwrap();
        s
    }

    fn blue(&self) -> Target {
        Target::new(SERVICE, Slot::Blue, self.blue.addr)
    }

    fn green(&self) -> Target {
        Target::new(SERVICE, Slot::Green, self.green.addr)
    }

    async fn split(&self, percent: u8) {
        self.router
            .apply_weighted(SERVICE, self.blue(), self.green(), percent)
            .await
            .unwrap();
    }

    async fn send(
        &self,
        method: Method,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}/path?q=1", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .expect("request through the proxy");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, headers, "").await
    }

    /// `n` GETs without cookies, 16 at a time; how many each slot answered.
    async fn count_slots(self: &Arc<Self>, n: usize) -> (usize, usize) {
        let mut tasks = JoinSet::new();
        for worker in 0..16 {
            let s = self.clone();
            tasks.spawn(async move {
                let mut green = 0;
                let mut total = 0;
                for _ in (worker..n).step_by(16) {
                    let r = s.get(&[]).await;
                    assert_eq!(r.status, 200);
                    green += usize::from(r.slot() == "green");
                    total += 1;
                }
                (total - green, green)
            });
        }
        let mut out = (0, 0);
        while let Some(r) = tasks.join_next().await {
            let (b, g) = r.unwrap();
            out = (out.0 + b, out.1 + g);
        }
        out
    }

    async fn report(&self) -> MirrorReport {
        self.router
            .mirror_report(SERVICE)
            .await
            .expect("a mirror report")
    }

    /// Polls the mirror report until `cond` holds.
    async fn report_when(&self, cond: impl Fn(&MirrorReport) -> bool) -> MirrorReport {
        loop {
            let r = self.report().await;
            if cond(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn requests(&self, slot: Slot) -> u64 {
        self.stats.get(SERVICE, slot).unwrap().snapshot().requests
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn slot(&self) -> &str {
        self.headers["x-cutover-slot"].to_str().unwrap()
    }

    /// `name=value` of the response's `Set-Cookie`, ready to send back as `Cookie`.
    fn cookie(&self) -> Option<String> {
        let v = self.headers.get("set-cookie")?.to_str().unwrap();
        Some(v.split(';').next().unwrap().to_string())
    }
}

fn mirror_spec(target: Target, percent: u8, methods: &[&str]) -> MirrorSpec {
    MirrorSpec {
        target,
        percent,
        methods: methods.iter().map(|m| m.to_string()).collect(),
    }
}

/// What a recording mirror target saw: (method, `x-cutover-mirror`, body) per request.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A backend that records every request, then waits for `gate` to open before
/// answering `status`.
async fn gated_target(status: u16, gate: watch::Receiver<bool>) -> (Backend, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let backend = Backend::start(move |req| {
        let log = log.clone();
        let mut gate = gate.clone();
        async move {
            let method = req.method().to_string();
            let mark = req
                .headers()
                .get("x-cutover-mirror")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            log.lock().unwrap().push((method, mark, body));
            let _ = gate.wait_for(|open| *open).await;
            reply(status, "from the mirror")
        }
    })
    .await;
    (backend, seen)
}

// ---------------------------------------------------------------- weighted split

#[tokio::test]
async fn a_weighted_split_sends_exactly_the_weight_to_the_canary() {
    within(120, async {
        let s = Arc::new(Setup::new().await);
        assert!(s.router.supports_weights());
        for percent in [1u8, 10, 50, 99] {
            s.split(percent).await;
            let (blue, green) = s.count_slots(5000).await;
            assert_eq!(green, 50 * percent as usize, "{percent}% of 5000 to green");
            assert_eq!(blue + green, 5000);
        }
        assert_eq!(
            s.router.weights(SERVICE),
            Some((Slot::Blue, Slot::Green, 99))
        );
        // Every request is recorded in the slot that answered it.
        assert_eq!(s.requests(Slot::Green), 50 * (1 + 10 + 50 + 99));
        assert_eq!(s.requests(Slot::Blue), 20_000 - 50 * (1 + 10 + 50 + 99));
        assert_eq!(s.green.hits() as u64, s.requests(Slot::Green));
    })
    .await;
}

#[tokio::test]
async fn a_weight_change_applies_from_the_next_request() {
    within(60, async {
        let s = Arc::new(Setup::new().await);
        s.split(10).await;
        assert_eq!(s.count_slots(1000).await, (900, 100));
        s.split(25).await;
        assert_eq!(s.count_slots(1000).await, (750, 250));
        s.split(0).await;
        assert_eq!(s.count_slots(200).await, (200, 0));
        s.split(100).await;
        assert_eq!(s.count_slots(200).await, (0, 200));
    })
    .await;
}

#[tokio::test]
async fn apply_clears_the_split_and_sets_no_more_cookies() {
    within(30, async {
        let s = Arc::new(Setup::new().await);
        s.split(50).await;
        let r = s.get(&[]).await;
        assert!(
            r.cookie().is_some(),
            "a split response sets the sticky cookie"
        );
        s.router.apply(SERVICE, Some(s.blue()), None).await.unwrap();
        assert_eq!(s.router.weights(SERVICE), None);
        assert_eq!(s.count_slots(200).await, (200, 0));
        let r = s.get(&[("cookie", "cutover-slot-web=green")]).await;
        assert_eq!(
            r.slot(),
            "blue",
            "no split: the sticky cookie means nothing"
        );
        assert!(r.headers.get("set-cookie").is_none());
    })
    .await;
}

// ---------------------------------------------------------------- stickiness

#[tokio::test]
async fn stickiness_holds_across_weight_changes_for_both_slots() {
    within(30, async {
        let s = Setup::new().await;
        s.split(10).await;
        // Ten requests at 10 % hold exactly one green answer; both come with cookies.
        let mut replies = Vec::new();
        for _ in 0..10 {
            replies.push(s.get(&[]).await);
        }
        let green = replies.iter().find(|r| r.slot() == "green").unwrap();
        let blue = replies.iter().find(|r| r.slot() == "blue").unwrap();
        let green_cookie = green.cookie().unwrap();
        let blue_cookie = blue.cookie().unwrap();
        assert_eq!(green_cookie, "cutover-slot-web=green");
        assert_eq!(blue_cookie, "cutover-slot-web=blue");
        let set = green.headers["set-cookie"].to_str().unwrap();
        assert!(set.contains("Path=/") && set.contains("HttpOnly") && set.contains("SameSite=Lax"));

        for percent in [10u8, 25, 50, 90] {
            s.split(percent).await;
            for _ in 0..40 {
                let r = s.get(&[("cookie", &green_cookie)]).await;
                assert_eq!(
                    r.slot(),
                    "green",
                    "a green client stays on green at {percent}%"
                );
                assert!(r.cookie().is_none(), "the cookie already says green");
                let r = s.get(&[("cookie", &format!("a=1; {blue_cookie}"))]).await;
                assert_eq!(
                    r.slot(),
                    "blue",
                    "a blue client stays on blue at {percent}%"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_sticky_cookie_naming_no_slot_of_the_split_is_ignored() {
    within(30, async {
        let s = Arc::new(Setup::new().await);
        // At 0 % green takes no part in the split: its cookie is ignored.
        s.split(0).await;
        let r = s.get(&[("cookie", "cutover-slot-web=green")]).await;
        assert_eq!(r.slot(), "blue");
        assert_eq!(r.cookie().as_deref(), Some("cutover-slot-web=blue"));
        // An unknown value, or another service's cookie, is ignored: weights decide.
        s.split(50).await;
        let mut slots = Vec::new();
        for cookie in [
            "cutover-slot-web=purple",
            "cutover-slot-api=green",
            "cutover-slot-web=purple",
            "cutover-slot-api=green",
        ] {
            slots.push(s.get(&[("cookie", cookie)]).await.slot().to_string());
        }
        assert_eq!(slots, ["blue", "green", "blue", "green"]);
    })
    .await;
}

#[tokio::test]
async fn a_service_without_stickiness_splits_by_weight_alone_and_sets_no_cookie() {
    within(30, async {
        let s = Setup::new().await;
        s.router.set_sticky(SERVICE, false);
        s.split(50).await;
        let mut slots = Vec::new();
        for _ in 0..4 {
            let r = s.get(&[("cookie", "cutover-slot-web=green")]).await;
            assert!(r.cookie().is_none());
            slots.push(r.slot().to_string());
        }
        assert_eq!(slots, ["blue", "green", "blue", "green"]);
    })
    .await;
}

// ---------------------------------------------------------------- preview

#[tokio::test]
async fn preview_by_cookie_or_header_reaches_the_preview_slot_and_neither_is_forwarded() {
    const SECRET: &str = "the-preview-secret-0123";
    within(30, async {
        let settings = ProxySettings {
            preview_cookie: "beta".into(),
            preview: cutover::proxy::preview::PreviewAccess::with_secret(SECRET),
            slot_header: true,
            ..ProxySettings::default()
        };
        let s = Setup::with(
            Backend::echo_headers().await,
            Backend::echo_headers().await,
            settings,
        )
        .await;
        s.router
            .apply(SERVICE, Some(s.blue()), Some(s.green()))
            .await
            .unwrap();
        let r = s
            .get(&[(
                "cookie",
                &format!("session=abc; beta={SECRET}; cutover-slot-web=blue"),
            )])
            .await;
        assert_eq!(r.slot(), "green");
        assert!(r.body.contains("cookie: session=abc\n"), "{}", r.body);
        assert!(
            !r.body.contains("beta") && !r.body.contains("cutover-slot"),
            "{}",
            r.body
        );

        let r = s
            .get(&[("x-cutover-preview", SECRET), ("cookie", "beta")])
            .await;
        assert_eq!(r.slot(), "green");
        assert!(
            !r.body.contains("x-cutover-preview") && !r.body.contains("cookie:"),
            "{}",
            r.body
        );

        // Preview wins over a split and sets no sticky cookie.
        s.split(0).await;
        let r = s.get(&[("cookie", &format!("beta={SECRET}"))]).await;
        assert_eq!(r.slot(), "green");
        assert!(r.cookie().is_none());
        let r = s
            .get(&[("cookie", &format!("cutover-preview={SECRET}"))])
            .await;
        assert_eq!(
            r.slot(),
            "blue",
            "the default cookie name is not the configured one"
        );
    })
    .await;
}

// ---------------------------------------------------------------- mirroring

#[tokio::test]
async fn mirroring_never_changes_or_waits_for_the_clients_response_and_counts_mismatches() {
    within(30, async {
        let (open, gate) = watch::channel(false);
        let (target, seen) = gated_target(500, gate).await;
        let s = Setup::new().await;
        let target = Target::new(SERVICE, Slot::Green, target.addr);
        s.router
            .mirror(
                SERVICE,
                Some(mirror_spec(target, 100, &["GET", "HEAD", "OPTIONS"])),
            )
            .await
            .unwrap();
        // The mirror target is held shut: every client request still completes, with
        // the live answer, untouched.
        for _ in 0..10 {
            let r = s.get(&[]).await;
            assert_eq!((r.status, r.body.as_str(), r.slot()), (200, "blue", "blue"));
        }
        let during = s.report_when(|r| r.mirrored == 10).await;
        assert_eq!(during.compared, 0, "no mirror answer yet");
        open.send(true).unwrap();
        let r = s.report_when(|r| r.compared == 10).await;
        assert_eq!(
            (r.mirrored, r.mismatched, r.failed, r.dropped),
            (10, 10, 0, 0)
        );
        assert!(r.live_latency_sum_us > 0 && r.mirror_latency_sum_us > 0);
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .all(|(m, mark, _)| m == "GET" && mark == "1"));
        // Copies are not real traffic: no slot recorded them.
        assert_eq!(s.requests(Slot::Blue), 10);
        assert_eq!(s.requests(Slot::Green), 0);
    })
    .await;
}

#[tokio::test]
async fn only_safe_methods_are_mirrored_unless_configured() {
    within(30, async {
        let (_open, gate) = watch::channel(true);
        let (target, seen) = gated_target(200, gate).await;
        let s = Setup::new().await;
        let target = Target::new(SERVICE, Slot::Green, target.addr);
        let safe = mirror_spec(target.clone(), 100, &["GET", "HEAD", "OPTIONS"]);
        s.router.mirror(SERVICE, Some(safe)).await.unwrap();
        for _ in 0..3 {
            assert_eq!(s.send(Method::POST, &[], "order").await.status, 200);
            assert_eq!(s.send(Method::DELETE, &[], "").await.status, 200);
            assert_eq!(s.get(&[]).await.status, 200);
        }
        let r = s.report_when(|r| r.compared == 3).await;
        assert_eq!((r.mirrored, r.mismatched), (3, 0));
        let methods: Vec<String> = seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
        assert_eq!(methods, ["GET", "GET", "GET"]);

        // POST when configured: the copy carries the same body.
        let with_post = mirror_spec(target, 100, &["POST"]);
        s.router.mirror(SERVICE, Some(with_post)).await.unwrap();
        assert_eq!(s.send(Method::POST, &[], "order #7").await.body, "blue");
        let r = s.report_when(|r| r.compared == 1).await;
        assert_eq!(r.mirrored, 1, "a new mirror starts a new report");
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.0.as_str(), last.2.as_str()), ("POST", "order #7"));
    })
    .await;
}

#[tokio::test]
async fn a_mirror_copies_exactly_its_percentage_and_stops_when_told() {
    within(30, async {
        let (_open, gate) = watch::channel(true);
        let (target_backend, _seen) = gated_target(200, gate).await;
        let s = Arc::new(Setup::new().await);
        let target = Target::new(SERVICE, Slot::Green, target_backend.addr);
        s.router
            .mirror(SERVICE, Some(mirror_spec(target, 10, &["GET"])))
            .await
            .unwrap();
        s.count_slots(200).await;
        let r = s.report_when(|r| r.compared == 20).await;
        assert_eq!(r.mirrored, 20);
        s.router.mirror(SERVICE, None).await.unwrap();
        s.count_slots(200).await;
        assert_eq!(target_backend.hits(), 20, "nothing mirrored after the stop");
        assert_eq!(s.report().await.mirrored, 20, "the report stays readable");
    })
    .await;
}

#[tokio::test]
async fn a_stuck_mirror_target_costs_dropped_copies_not_client_latency() {
    within(30, async {
        let (_open, gate) = watch::channel(false);
        let (target, _seen) = gated_target(200, gate).await;
        let s = Setup::new().await;
        let target = Target::new(SERVICE, Slot::Green, target.addr);
        s.router
            .mirror(SERVICE, Some(mirror_spec(target, 100, &["GET"])))
            .await
            .unwrap();
        // The target never answers: 64 copies hang, every later one is dropped, and
        // every client request completes with the live answer meanwhile.
        for _ in 0..100 {
            let r = s.get(&[]).await;
            assert_eq!((r.status, r.body.as_str()), (200, "blue"));
        }
        let r = s.report_when(|r| r.mirrored == 64).await;
        assert_eq!((r.dropped, r.compared, r.failed), (36, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_failing_mirror_target_is_counted_as_failed_and_clients_never_see_it() {
    within(30, async {
        let s = Setup::new().await;
        let target = Target::new(SERVICE, Slot::Green, backend::dead_addr().await);
        s.router
            .mirror(SERVICE, Some(mirror_spec(target.clone(), 100, &["GET"])))
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(s.get(&[]).await.body, "blue");
        }
        let r = s.report_when(|r| r.failed == 5).await;
        assert_eq!((r.mirrored, r.compared), (5, 0));
        let bad = mirror_spec(target, 0, &["GET"]);
        assert!(s.router.mirror(SERVICE, Some(bad)).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_forwarded_but_not_mirrored() {
    within(30, async {
        let (_open, gate) = watch::channel(true);
        let (target, seen) = gated_target(200, gate).await;
        let s = Setup::new().await;
        let target = Target::new(SERVICE, Slot::Green, target.addr);
        let spec = mirror_spec(target, 100, &["POST"]);
        s.router.mirror(SERVICE, Some(spec)).await.unwrap();
        let big = vec![b'x'; 64 * 1024 + 1];
        assert_eq!(s.send(Method::POST, &[], big).await.body, "blue");
        let at_limit = vec![b'y'; 64 * 1024];
        assert_eq!(s.send(Method::POST, &[], at_limit).await.body, "blue");
        let r = s.report_when(|r| r.compared == 1).await;
        assert_eq!((r.mirrored, r.dropped), (1, 0));
        let bodies: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.2.len()).collect();
        assert_eq!(
            bodies,
            [64 * 1024],
            "only the body within the limit was copied"
        );
    })
    .await;
}
