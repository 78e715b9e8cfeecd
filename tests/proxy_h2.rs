//! HTTP/2 behaves like HTTP/1.1 (issue #13, HTTP/2 item 3): the weighted split, sticky
//! cookies, preview, mirroring, per-slot statistics and switches, asserted over h2
//! streams on a real TLS listener (ALPN `h2`) with the same shapes as the HTTP/1.1
//! tests in `tests/proxy_canary.rs`; then what only HTTP/2 has: GOAWAY on drain, the
//! concurrent-stream limit, oversized header lists and rapid reset.
//!
//! Clients (`tests/support/h2.rs`): hyper's HTTP/2 client over rustls for well-behaved
//! traffic, a frame-level client for the rest. Races are ordered by gated backends
//! (held until the test opens them), never by sleeping.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/h2.rs"]
mod h2;
#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls.rs"]
mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use backend::{reply, Backend};
use cutover::domain::routing::{MirrorSpec, Target};
use cutover::domain::Slot;
use cutover::proxy::preview::PreviewAccess;
use cutover::proxy::table::{Routes, StatsRegistry};
use cutover::proxy::ProxySettings;
use cutover::router::builtin::BuiltinRouter;
use cutover::router::Router;
use h2::{Raw, H2};
use harness::{default_listener, wait_until, within, SERVICE};
use tls::{listener_config, three_certs, TlsProxy};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A TLS proxy serving `web` through a `BuiltinRouter`; blue is live.
struct Edge {
    router: BuiltinRouter,
    stats: Arc<StatsRegistry>,
    blue: Backend,
    green: Backend,
    proxy: TlsProxy,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Edge {
    /// Blue and green answer 200 with their name; the slot header is on.
    async fn new() -> Edge {
        let (blue, green) = (Backend::text("blue").await, Backend::text("green").await);
        Self::with(blue, green, slot_header()).await
    }

    async fn with(blue: Backend, green: Backend, settings: ProxySettings) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let (ca, certs) = three_certs(dir.path());
        let config = listener_config("127.0.0.1:0".parse().unwrap(), certs);
        let routes = Arc::new(Routes::new());
        let stats = Arc::new(StatsRegistry::new([SERVICE]));
        let router = BuiltinRouter::new(routes.clone(), stats.clone());
        let proxy = TlsProxy::start(&routes, default_listener(SERVICE), config, settings).await;
        let edge = Edge {
            router,
            stats,
            blue,
            green,
            proxy,
            ca: ca.cert,
            _dir: dir,
        };
        edge.router
            .apply(SERVICE, Some(edge.blue()), None)
            .await
            .unwrap();
        edge
    }

    fn blue(&self) -> Target {
        Target::new(SERVICE, Slot::Blue, self.blue.addr)
    }

    fn green(&self) -> Target {
        Target::new(SERVICE, Slot::Green, self.green.addr)
    }

    async fn h2(&self) -> H2 {
        H2::connect(self.proxy.addr, &self.ca).await
    }

    async fn raw(&self) -> Raw {
        Raw::connect(self.proxy.addr, &self.ca).await
    }

    async fn split(&self, percent: u8) {
        self.router
            .apply_weighted(SERVICE, self.blue(), self.green(), percent)
            .await
            .unwrap();
    }

    fn snapshot(&self, slot: Slot) -> cutover::domain::stats::StatsSnapshot {
        self.stats.get(SERVICE, slot).unwrap().snapshot()
    }

    /// The slot's statistics once `requests` are recorded and none is in flight.
    async fn settled(&self, slot: Slot, requests: u64) -> cutover::domain::stats::StatsSnapshot {
        harness::settled(&self.stats.get(SERVICE, slot).unwrap(), requests).await
    }
}

fn slot_header() -> ProxySettings {
    ProxySettings {
        slot_header: true,
        ..ProxySettings::default()
    }
}

/// A backend that answers 200 `name` only once the returned gate is opened.
async fn gated(name: &'static str) -> (Backend, watch::Sender<bool>) {
    let (open, gate) = watch::channel(false);
    let backend = Backend::start(move |_| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            reply(200, name)
        }
    })
    .await;
    (backend, open)
}

/// `n` concurrent streams on `conn`; how many blue and green answered (all 200 over h2).
type Headers = &'static [(&'static str, &'static str)];

async fn count_slots(conn: &H2, n: usize, headers: Headers) -> (usize, usize) {
    let mut streams = JoinSet::new();
    for _ in 0..n {
        let conn = conn.clone();
        streams.spawn(async move { conn.get("/path?q=1", headers).await });
    }
    let (mut blue, mut green) = (0, 0);
    while let Some(r) = streams.join_next().await {
        let r = r.unwrap();
        assert_eq!((r.status, r.version), (200, http::Version::HTTP_2));
        match r.slot() {
            "blue" => blue += 1,
            "green" => green += 1,
            other => panic!("slot {other}"),
        }
    }
    (blue, green)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_over_h2_sends_exactly_the_weight_on_one_connection_and_on_many() {
    within(60, async {
        let e = Edge::new().await;
        e.split(25).await;
        let one = e.h2().await;
        assert_eq!(count_slots(&one, 400, &[]).await, (300, 100));
        let mut conns = JoinSet::new();
        for _ in 0..4 {
            let conn = e.h2().await;
            conns.spawn(async move { count_slots(&conn, 100, &[]).await });
        }
        let (mut blue, mut green) = (0, 0);
        while let Some(r) = conns.join_next().await {
            let (b, g) = r.unwrap();
            (blue, green) = (blue + b, green + g);
        }
        assert_eq!((blue, green), (300, 100));
        // Per-slot statistics: every stream recorded once, in the slot that answered.
        let (b, g) = (
            e.settled(Slot::Blue, 600).await,
            e.settled(Slot::Green, 200).await,
        );
        assert_eq!((b.requests, g.requests), (600, 200));
        assert_eq!((e.blue.hits(), e.green.hits()), (600, 200));
        assert_eq!(
            (b.status_class[1], g.status_class[1]),
            (600, 200),
            "all 2xx"
        );
        assert_eq!((b.upstream_failed, g.upstream_failed), (0, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_set_on_one_stream_pins_the_later_streams() {
    within(60, async {
        let e = Edge::new().await;
        e.split(25).await;
        let conn = e.h2().await;
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(conn.get("/", &[]).await);
        }
        let green = first.iter().find(|r| r.slot() == "green").unwrap();
        let blue = first.iter().find(|r| r.slot() == "blue").unwrap();
        assert_eq!(green.cookie().unwrap(), "cutover-slot-web=green");
        assert_eq!(blue.cookie().unwrap(), "cutover-slot-web=blue");
        for percent in [25u8, 50, 90] {
            e.split(percent).await;
            let on_green = count_slots(&conn, 40, &[("cookie", "cutover-slot-web=green")]).await;
            assert_eq!(
                on_green,
                (0, 40),
                "green clients stay on green at {percent}%"
            );
            // An h2 client may send its cookies as separate fields (RFC 9113 §8.2.3).
            let crumbs = &[("cookie", "a=1"), ("cookie", "cutover-slot-web=blue")];
            assert_eq!(count_slots(&conn, 40, crumbs).await, (40, 0));
        }
        let r = conn.get("/", &[("cookie", "cutover-slot-web=green")]).await;
        assert!(r.cookie().is_none(), "the cookie already says green");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_fields_of_one_h2_request_reach_the_app_as_one_cookie_header() {
    within(30, async {
        let (blue, green) = (Backend::echo_headers().await, Backend::text("green").await);
        let e = Edge::with(blue, green, slot_header()).await;
        let conn = e.h2().await;
        let r = conn.get("/", &[("cookie", "a=1"), ("cookie", "b=2")]).await;
        assert_eq!(r.body.matches("cookie:").count(), 1, "{}", r.body);
        assert!(r.body.contains("cookie: a=1; b=2\n"), "{}", r.body);
        // With the proxy's own cookie among them: stripped, the rest joined.
        let crumbs = [
            ("cookie", "a=1"),
            ("cookie", "cutover-slot-web=blue"),
            ("cookie", "b=2"),
        ];
        let r = conn.get("/", &crumbs).await;
        assert!(r.body.contains("cookie: a=1; b=2\n"), "{}", r.body);
        assert!(!r.body.contains("cutover-slot"), "{}", r.body);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_over_h2_needs_the_secret_by_header_or_cookie() {
    const SECRET: &str = "the-preview-secret-0123";
    within(30, async {
        let settings = ProxySettings {
            preview_cookie: "beta".into(),
            preview: PreviewAccess::with_secret(SECRET),
            ..slot_header()
        };
        let (blue, green) = (Backend::echo_headers().await, Backend::echo_headers().await);
        let e = Edge::with(blue, green, settings).await;
        e.router
            .apply(SERVICE, Some(e.blue()), Some(e.green()))
            .await
            .unwrap();
        let conn = e.h2().await;
        let r = conn.get("/", &[("x-cutover-preview", SECRET)]).await;
        assert_eq!(r.slot(), "green");
        assert!(!r.body.contains("x-cutover-preview"), "{}", r.body);
        let cookie = format!("session=abc; beta={SECRET}");
        let r = conn.get("/", &[("cookie", &cookie)]).await;
        assert_eq!(r.slot(), "green");
        assert!(r.body.contains("cookie: session=abc\n"), "{}", r.body);
        assert!(!r.body.contains("beta"), "{}", r.body);
        // Without the secret nothing unreleased is reachable.
        let refused: [&[(&str, &str)]; 4] = [
            &[],
            &[("x-cutover-preview", "guess")],
            &[("cookie", "beta=guess")],
            &[("cookie", "cutover-slot-web=green")],
        ];
        for headers in refused {
            let r = conn.get("/", headers).await;
            assert_eq!((r.status, r.slot()), (200, "blue"), "{headers:?}");
        }
        assert_eq!(e.green.hits(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_over_h2_copies_every_stream_and_the_client_gets_the_live_answer() {
    within(30, async {
        let e = Edge::new().await;
        let target = Backend::text("from the mirror").await;
        let spec = MirrorSpec {
            target: Target::new(SERVICE, Slot::Green, target.addr),
            percent: 100,
            methods: vec!["GET".into()],
        };
        e.router.mirror(SERVICE, Some(spec)).await.unwrap();
        let conn = e.h2().await;
        assert_eq!(count_slots(&conn, 20, &[]).await, (20, 0));
        wait_until(|| target.hits() == 20).await;
        let report = loop {
            let r = e.router.mirror_report(SERVICE).await.unwrap();
            if r.compared == 20 {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(
            (report.mirrored, report.mismatched, report.failed),
            (20, 0, 0)
        );
        // Copies are not traffic: only the live slot recorded the streams.
        assert_eq!(e.settled(Slot::Blue, 20).await.requests, 20);
        assert_eq!(e.snapshot(Slot::Green).requests, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_open_on_the_old_slot_finish_there_after_a_switch_and_new_ones_go_to_the_new() {
    within(30, async {
        let (blue, open) = gated("blue").await;
        let e = Edge::with(blue, Backend::text("green").await, slot_header()).await;
        let conn = e.h2().await;
        let mut old = JoinSet::new();
        for _ in 0..10 {
            let conn = conn.clone();
            old.spawn(async move { conn.get("/", &[]).await });
        }
        wait_until(|| e.blue.hits() == 10).await;
        e.router
            .apply(SERVICE, Some(e.green()), None)
            .await
            .unwrap();
        // The old streams are still held: new streams on the same connection already
        // go to green.
        assert_eq!(count_slots(&conn, 5, &[]).await, (0, 5));
        assert_eq!(e.snapshot(Slot::Blue).in_flight, 10);
        open.send(true).unwrap();
        while let Some(r) = old.join_next().await {
            let r = r.unwrap();
            assert_eq!((r.status, r.slot(), r.body.as_str()), (200, "blue", "blue"));
        }
        assert_eq!(e.settled(Slot::Blue, 10).await.requests, 10);
        assert_eq!(e.settled(Slot::Green, 5).await.requests, 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_sends_goaway_and_the_open_stream_still_completes() {
    within(30, async {
        let (blue, open) = gated("blue").await;
        let mut e = Edge::with(blue, Backend::text("green").await, slot_header()).await;
        let mut raw = e.raw().await;
        let authority = raw.authority.clone();
        raw.send(&h2::get(1, &authority, "/")).await;
        wait_until(|| e.blue.hits() == 1).await;
        e.proxy.shutdown();
        let away = raw.until(|f| f.kind == h2::GOAWAY).await;
        assert_eq!(away.error_code(), h2::NO_ERROR);
        open.send(true).unwrap();
        let head = raw.until(|f| f.kind == h2::HEADERS && f.stream == 1).await;
        assert_eq!(head.payload[0], 0x88, "HPACK static index 8: `:status 200`");
        if head.flags & h2::END_STREAM == 0 {
            raw.until(|f| f.stream == 1 && f.flags & h2::END_STREAM != 0)
                .await;
        }
        // Then the server closes the connection.
        while raw.next().await.is_some() {}
        assert_eq!(e.settled(Slot::Blue, 1).await.requests, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_advertises_128_streams_and_refuses_more_without_harming_the_rest() {
    within(60, async {
        let (blue, open) = gated("blue").await;
        let e = Edge::with(blue, Backend::text("green").await, slot_header()).await;
        let mut raw = e.raw().await;
        let settings = raw
            .until(|f| f.kind == h2::SETTINGS && f.flags & h2::ACK == 0)
            .await;
        assert_eq!(settings.setting(h2::MAX_CONCURRENT_STREAMS), Some(128));
        let authority = raw.authority.clone();
        let burst: Vec<u8> = (0..130u32)
            .flat_map(|i| h2::get(2 * i + 1, &authority, "/"))
            .collect();
        raw.send(&burst).await;
        let mut refused = Vec::new();
        while refused.len() < 2 {
            let f = raw.until(|f| f.kind == h2::RST_STREAM).await;
            assert_eq!(f.error_code(), h2::REFUSED_STREAM, "stream {}", f.stream);
            refused.push(f.stream);
        }
        assert_eq!(refused, [257, 259], "the streams past the 128th");
        wait_until(|| e.blue.hits() == 128).await;
        open.send(true).unwrap();
        let mut done = std::collections::BTreeSet::new();
        while done.len() < 128 {
            let f = raw.next().await.expect("the connection stays open");
            assert_ne!(f.kind, h2::GOAWAY, "{f:?}");
            if matches!(f.kind, h2::HEADERS | h2::DATA) && f.flags & h2::END_STREAM != 0 {
                done.insert(f.stream);
            }
        }
        assert!(done.iter().all(|s| *s < 257));
        // The same connection and a new one keep serving.
        raw.send(&h2::get(261, &authority, "/")).await;
        raw.until(|f| f.stream == 261 && f.flags & h2::END_STREAM != 0)
            .await;
        assert_eq!(e.h2().await.get("/", &[]).await.status, 200);
        assert_eq!(e.settled(Slot::Blue, 130).await.requests, 130);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_gets_431_and_other_streams_carry_on() {
    within(30, async {
        let (blue, open) = gated("blue").await;
        let settings = ProxySettings {
            max_header_bytes: 16 * 1024,
            ..slot_header()
        };
        let e = Edge::with(blue, Backend::text("green").await, settings).await;
        let conn = e.h2().await;
        let held = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.get("/held", &[]).await })
        };
        wait_until(|| e.blue.hits() == 1).await;
        let big = "x".repeat(20 * 1024);
        let r = conn.get("/", &[("x-big", big.as_str())]).await;
        assert_eq!(r.status, 431);
        assert_eq!(
            e.blue.hits(),
            1,
            "the oversized request never reached the app"
        );
        open.send(true).unwrap();
        assert_eq!(held.await.unwrap().body, "blue");
        // Just within the limit, and afterwards, on the same connection: served.
        let fits = "y".repeat(8 * 1024);
        assert_eq!(
            conn.get("/", &[("x-fits", fits.as_str())]).await.status,
            200
        );
        assert_eq!(conn.get("/", &[]).await.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_that_connection_with_goaway_and_others_are_served() {
    within(30, async {
        let e = Edge::new().await;
        let bystander = e.h2().await;
        let mut raw = e.raw().await;
        let authority = raw.authority.clone();
        let mut burst = Vec::new();
        for i in 0..500u32 {
            let id = 2 * i + 1;
            burst.extend(h2::get(id, &authority, "/"));
            burst.extend(h2::frame(h2::RST_STREAM, 0, id, &h2::CANCEL.to_be_bytes()));
        }
        raw.send(&burst).await;
        let away = raw.until(|f| f.kind == h2::GOAWAY).await;
        assert_eq!(away.error_code(), h2::ENHANCE_YOUR_CALM);
        while raw.next().await.is_some() {}
        assert_eq!(bystander.get("/", &[]).await.status, 200);
        assert_eq!(e.h2().await.get("/", &[]).await.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_resets_counts_as_the_clients_failure_not_the_slots() {
    within(30, async {
        let (blue, _open) = gated("blue").await;
        let e = Edge::with(blue, Backend::text("green").await, slot_header()).await;
        let mut raw = e.raw().await;
        let authority = raw.authority.clone();
        raw.send(&h2::get(1, &authority, "/")).await;
        wait_until(|| e.blue.hits() == 1).await;
        let cancel = h2::frame(h2::RST_STREAM, 0, 1, &h2::CANCEL.to_be_bytes());
        raw.send(&cancel).await;
        let s = e.settled(Slot::Blue, 1).await;
        assert_eq!((s.requests, s.client_failed, s.upstream_failed), (1, 1, 0));
        // The connection carries on.
        raw.send(&h2::get(3, &authority, "/")).await;
        wait_until(|| e.blue.hits() == 2).await;
    })
    .await;
}
