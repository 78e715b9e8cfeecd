//! The HAProxy router against a real HAProxy: switches through the runtime API under
//! live load with zero failed requests, leaves HAProxy untouched when the new release
//! fails its checks, fails cleanly when the API refuses or is gone, rolls back, and
//! rolls back on its own statistics.

#[path = "support/routers.rs"]
mod routers;
mod support;

use support::Harness;

fn servers_state(text: &str) -> String {
    // Drop the per-line "time since last change" column so two reads compare equal.
    text.lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && !l.starts_with('#') {
                f.remove(9);
            }
            f.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_under_live_load_switches_haproxy_with_zero_failed_requests() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_haproxy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(&lb.admin));
    h.start().await;

    let during = routers::v1_to_v2_under_load(&h, lb.public, "haproxy").await;
    assert_eq!(
        during.failed(),
        0,
        "failed requests during v1 → v2 through HAProxy: {during:?}"
    );

    let state = lb.command("show servers state web").await;
    let status = h.status().await;
    let green = status
        .slots
        .iter()
        .find(|s| s.record.slot == cutover::domain::Slot::Green)
        .unwrap();
    let addr: std::net::SocketAddr = green.record.addr.clone().unwrap().parse().unwrap();
    assert!(
        state.lines().any(|l| l.contains(" green 127.0.0.1 2 ") && l.contains(&format!(" {} ", addr.port()))),
        "green must be ready at {addr}:\n{state}"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    assert_eq!(status.observed_live, Some(cutover::domain::Slot::Green));
    assert!(!status.drift, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_checks_never_reaches_haproxy() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .unhealthy_threshold(2)
        .watch("1s")
        .build()
        .await;
    let lb = routers::start_haproxy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(&lb.admin));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = servers_state(&lb.command("show servers state web").await);

    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "an unhealthy v2 must fail:\n{v2}");
    assert_eq!(
        servers_state(&lb.command("show servers state web").await),
        before,
        "HAProxy changed"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_missing_runtime_api_fails_the_deployment_and_traffic_stays() {
    let mut h = Harness::builder().watch("1s").build().await;
    let lb = routers::start_haproxy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(&lb.admin));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;

    // A socket at `level operator` may not change servers: HAProxy says so.
    h.edit_config(
        &lb.admin.display().to_string(),
        &lb.operator.display().to_string(),
    );
    h.start().await;
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert!(
        v2.stdout.contains("switch failed") && v2.stdout.contains("ermission denied"),
        "HAProxy's own words expected:\n{v2}"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;

    // No socket at all.
    let gone = h.dir().join("nowhere.sock");
    h.edit_config(
        &lb.operator.display().to_string(),
        &gone.display().to_string(),
    );
    h.start().await;
    let v3 = h.cli(&["deploy", "web", "v3"]).await;
    assert_eq!(v3.code, 1, "{v3}");
    assert!(
        v3.stdout.contains("haproxy runtime API at unix:") && v3.stdout.contains("nowhere.sock"),
        "{v3}"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_points_haproxy_back_at_the_previous_release() {
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_haproxy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(&lb.admin));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(routers::answered_by(lb.public).await, "v1");
    assert_eq!(
        h.status().await.observed_live,
        Some(cutover::domain::Slot::Blue)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxys_own_statistics_roll_back_an_erroring_release() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nerror_rate = 0.3\n")
        .watch("8s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_haproxy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(&lb.admin));
    h.start().await;
    routers::erroring_v2_rolled_back_by_router_statistics(&h, lb.public).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_step_splits_haproxys_traffic_by_weight_and_promote_moves_it_all() {
    let mut h = routers::held_canary_harness().await;
    let lb = routers::start_haproxy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(&lb.admin));
    h.start().await;
    routers::canary_step_through(&h, lb.public, "haproxy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_given_by_host_name_is_resolved_when_the_switch_is_applied() {
    use cutover::config::{AdminAddr, HaproxyRouterConfig};
    use cutover::domain::endpoint::Endpoint;
    use cutover::domain::routing::Target;
    use cutover::domain::Slot;
    use cutover::router::haproxy::HaproxyRouter;
    use cutover::router::Router;

    let dir = tempfile::tempdir().unwrap();
    let lb = routers::start_haproxy(dir.path()).await;
    let app = routers::named_app("named").await;
    let router = HaproxyRouter::new(
        "web",
        HaproxyRouterConfig {
            admin: AdminAddr::Unix(lb.admin.clone()),
            backend: "web".into(),
            blue_server: "blue".into(),
            green_server: "green".into(),
            weight: 100,
            timeout: std::time::Duration::from_secs(5),
        },
    );
    let target = Target {
        slot: Slot::Green,
        endpoint: Endpoint::host("localhost", app.port()).unwrap(),
        identity: "web-green".into(),
    };
    router.apply("web", Some(target), None).await.unwrap();
    let state = lb.command("show servers state web").await;
    assert!(
        state
            .lines()
            .any(|l| l.contains(" green 127.0.0.1 2 ") && l.contains(&format!(" {} ", app.port()))),
        "green must be ready at 127.0.0.1:{}:\n{state}",
        app.port()
    );
    assert_eq!(
        router.observed_live("web").await.unwrap(),
        Some(Slot::Green)
    );
    let (status, body) = support::http_get(lb.public, "/").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "named"));
}
