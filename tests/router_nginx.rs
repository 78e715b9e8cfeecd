//! The nginx router against a real nginx: a deployment under live load through nginx
//! (failed requests measured and bounded, see docs/routers.md), a release that fails
//! its checks never reaches nginx, a configuration nginx rejects fails the deployment
//! with nginx's own message and leaves the old file, and a rollback restores routing.

#[path = "support/routers.rs"]
mod routers;
mod support;

use cutover::domain::Slot;
use support::Harness;

/// The most failed requests accepted for one switch (a reload closes idle keep-alive
/// client connections; docs/routers.md has the measurements).
const MAX_FAILED_PER_SWITCH: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_under_live_load_switches_nginx_with_a_bounded_number_of_failed_requests() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_nginx(h.dir()).await;
    routers::use_router(&h, &lb.router_toml());
    h.start().await;

    let during = routers::v1_to_v2_under_load(&h, lb.public, "nginx").await;
    assert!(
        during.failed() <= MAX_FAILED_PER_SWITCH,
        "failed requests during v1 → v2 through nginx: {during:?}"
    );

    let include = std::fs::read_to_string(&lb.include).unwrap();
    let prev = std::fs::read_to_string(lb.include.with_extension("conf.prev")).unwrap();
    assert!(include.contains("# cutover-slot green"), "{include}");
    assert!(
        prev.contains("# cutover-slot blue"),
        "the previous file is kept:\n{prev}"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    // An old worker of the previous configuration may still answer the verification
    // listener for a moment (see the rollback test below).
    let status = support::wait_until(10, "status to observe green through nginx", || async {
        let s = h.status().await;
        (s.observed_live == Some(Slot::Green)).then_some(s)
    })
    .await;
    assert!(!status.drift, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_checks_never_reaches_nginx() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .unhealthy_threshold(2)
        .watch("1s")
        .build()
        .await;
    let lb = routers::start_nginx(h.dir()).await;
    routers::use_router(&h, &lb.router_toml());
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = std::fs::read_to_string(&lb.include).unwrap();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert_eq!(
        std::fs::read_to_string(&lb.include).unwrap(),
        before,
        "nginx's include changed"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_nginx_rejects_fails_the_deployment_and_keeps_the_old_file() {
    let mut h = Harness::builder().watch("1s").build().await;
    let lb = routers::start_nginx(h.dir()).await;
    routers::use_router(&h, &lb.router_toml());
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = std::fs::read_to_string(&lb.include).unwrap();

    // Someone broke the main config since: `nginx -t` fails, nothing is reloaded.
    let conf = std::fs::read_to_string(&lb.conf).unwrap();
    std::fs::write(
        &lb.conf,
        conf.replace(
            "keepalive_timeout 75s;",
            "keepalive_timeout 75s; no_such_directive on;",
        ),
    )
    .unwrap();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert!(
        v2.stdout.contains("failed the test")
            && v2
                .stdout
                .contains("unknown directive \"no_such_directive\""),
        "nginx's own message expected:\n{v2}"
    );
    assert_eq!(
        std::fs::read_to_string(&lb.include).unwrap(),
        before,
        "the old include is back"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_points_nginx_back_at_the_previous_release() {
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_nginx(h.dir()).await;
    routers::use_router(&h, &lb.router_toml());
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}");
    // The router verified the reload on nginx's verification listener; on the public
    // one an old worker of the previous configuration can still take a fresh
    // connection for a moment after a reload (seen once under a loaded full run).
    support::wait_until(10, "nginx's public port to answer v1", || async {
        (routers::answered_by(lb.public).await == "v1").then_some(())
    })
    .await;
    // The same holds for the verification listener `observed_live` asks: an old worker
    // answers with green's address, which the rewritten file no longer lists, so the
    // observation is "unknown" (None) for that moment (seen once in a loaded full run).
    support::wait_until(10, "status to observe blue through nginx", || async {
        (h.status().await.observed_live == Some(Slot::Blue)).then_some(())
    })
    .await;
}

/// The recommended path when nginx must stay in front and no request may fail: nginx's
/// upstream is Cutover's built-in proxy (one fixed address, set once), and Cutover
/// switches behind it. nginx never reloads, so its keep-alive connections are never
/// cut: zero failed requests across a deployment and ten rollbacks under live load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_the_built_in_proxy_switches_with_zero_failed_requests() {
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_nginx(h.dir()).await;
    // The one and only nginx change: point the upstream at Cutover's proxy, reload once.
    std::fs::write(
        &lb.include,
        format!("upstream web {{ server {}; keepalive 64; }}\n", h.proxy),
    )
    .unwrap();
    let reload = std::process::Command::new(routers::require("nginx", "apt-get install -y nginx"))
        .arg("-c")
        .arg(&lb.conf)
        .args(["-s", "reload"])
        .status()
        .expect("run nginx -s reload");
    assert!(reload.success(), "{}", lb.server.logs());
    h.start().await;

    let (during, seen) =
        routers::deploy_and_ten_switches_behind(&h, lb.public, "nginx → built-in proxy").await;
    assert_eq!(during.failed(), 0, "v1 → v2 behind nginx: {during:?}");
    assert_eq!(seen.failed(), 0, "{seen:?}");
    assert!(
        seen.by_version.contains_key("v1") && seen.by_version.contains_key("v2"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_step_splits_nginxs_traffic_by_weight_and_promote_moves_it_all() {
    let mut h = routers::held_canary_harness().await;
    let lb = routers::start_nginx(h.dir()).await;
    routers::use_router(&h, &lb.router_toml());
    h.start().await;
    routers::canary_step_through(&h, lb.public, "nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_given_by_host_name_is_written_as_is_and_nginx_routes_to_it() {
    use cutover::config::NginxRouterConfig;
    use cutover::domain::endpoint::Endpoint;
    use cutover::domain::routing::Target;
    use cutover::router::nginx::NginxRouter;
    use cutover::router::Router;

    let dir = tempfile::tempdir().unwrap();
    let lb = routers::start_nginx(dir.path()).await;
    let app = routers::named_app("named").await;
    let c = lb.conf.display().to_string();
    let router = NginxRouter::new(
        "web",
        NginxRouterConfig {
            include: lb.include.clone(),
            upstream: "web".into(),
            test_command: ["nginx", "-t", "-q", "-c", &c].map(String::from).into(),
            reload_command: ["nginx", "-c", &c, "-s", "reload"].map(String::from).into(),
            verify_listen: lb.verify,
            verify_path: "/".into(),
            timeout: std::time::Duration::from_secs(10),
            keepalive: 16,
        },
    );
    let target = Target {
        slot: Slot::Green,
        endpoint: Endpoint::host("localhost", app.port()).unwrap(),
        identity: "web-green".into(),
    };
    router.apply("web", Some(target), None).await.unwrap();
    let include = std::fs::read_to_string(&lb.include).unwrap();
    assert!(
        include.contains(&format!("server localhost:{} max_fails=0;", app.port())),
        "{include}"
    );
    assert_eq!(
        router.observed_live("web").await.unwrap(),
        Some(Slot::Green)
    );
    // Right after the reload, an old worker may still take a new connection.
    support::wait_until(10, "nginx answers from the named slot", || async {
        let answer = support::http_get(lb.public, "/").await.ok()?;
        (answer == (200, "named".to_string())).then_some(())
    })
    .await;
}
