//! The Caddy router against a real Caddy (admin API): a deployment under live load
//! through Caddy (failed requests measured and bounded, see docs/routers.md), a release
//! that fails its checks never reaches Caddy, a change Caddy rejects fails the
//! deployment with Caddy's own message, and a rollback restores routing.

#[path = "support/routers.rs"]
mod routers;
mod support;

use cutover::domain::Slot;
use support::Harness;

/// The most failed requests accepted for one switch (Caddy replaces its servers on
/// every admin change; docs/routers.md has the measurements).
const MAX_FAILED_PER_SWITCH: u64 = 64;

async fn upstreams(lb: &routers::Caddy) -> String {
    support::http_get(lb.admin, "/id/cutover-web/upstreams")
        .await
        .expect("caddy admin")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_under_live_load_switches_caddy_with_a_bounded_number_of_failed_requests() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_caddy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.admin));
    h.start().await;

    let during = routers::v1_to_v2_under_load(&h, lb.public, "caddy").await;
    assert!(
        during.failed() <= MAX_FAILED_PER_SWITCH,
        "failed requests during v1 → v2 through Caddy: {during:?}"
    );
    let status = h.status().await;
    let green = status
        .slots
        .iter()
        .find(|s| s.record.slot == Slot::Green)
        .unwrap();
    assert!(upstreams(&lb)
        .await
        .contains(green.record.addr.as_deref().unwrap()));
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    assert_eq!(status.observed_live, Some(Slot::Green));
    assert!(!status.drift, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_checks_never_reaches_caddy() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .unhealthy_threshold(2)
        .watch("1s")
        .build()
        .await;
    let lb = routers::start_caddy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.admin));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = support::http_get(lb.admin, "/config/").await.unwrap().1;
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert_eq!(
        support::http_get(lb.admin, "/config/").await.unwrap().1,
        before,
        "Caddy's config changed"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_caddy_rejects_fails_the_deployment_and_traffic_stays() {
    let mut h = Harness::builder().watch("1s").build().await;
    let lb = routers::start_caddy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.admin));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;

    // The handler Cutover is told to change does not exist: Caddy says so.
    h.edit_config(
        "kind = \"caddy\"",
        "kind = \"caddy\"\nid = \"no-such-handler\"",
    );
    h.start().await;
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert!(
        v2.stdout.contains("switch failed") && v2.stdout.contains("no-such-handler"),
        "Caddy's own message expected:\n{v2}"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;

    // No admin endpoint there at all.
    let nowhere = routers::free_addr();
    h.edit_config(
        &format!("admin = \"{}\"", lb.admin),
        &format!("admin = \"{nowhere}\""),
    );
    h.start().await;
    let v3 = h.cli(&["deploy", "web", "v3"]).await;
    assert_eq!(v3.code, 1, "{v3}");
    assert!(
        v3.stdout.contains("caddy admin API") && v3.stdout.contains(&nowhere.to_string()),
        "{v3}"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_points_caddy_back_at_the_previous_release() {
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_caddy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.admin));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(routers::answered_by(lb.public).await, "v1");
    assert_eq!(h.status().await.observed_live, Some(Slot::Blue));
}

/// The recommended path when Caddy must stay in front and no request may fail: its
/// `reverse_proxy` dials Cutover's built-in proxy (set once), and Cutover switches
/// behind it, so Caddy's config never changes during a deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_of_the_built_in_proxy_switches_with_zero_failed_requests() {
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_caddy_to(h.dir(), &h.proxy.to_string()).await;
    h.start().await;

    let (during, seen) =
        routers::deploy_and_ten_switches_behind(&h, lb.public, "caddy → built-in proxy").await;
    assert_eq!(during.failed(), 0, "v1 → v2 behind Caddy: {during:?}");
    assert_eq!(seen.failed(), 0, "{seen:?}");
    assert!(
        seen.by_version.contains_key("v1") && seen.by_version.contains_key("v2"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_step_splits_caddys_traffic_by_weight_and_promote_moves_it_all() {
    let mut h = routers::held_canary_harness().await;
    let lb = routers::start_caddy(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.admin));
    h.start().await;
    routers::canary_step_through(&h, lb.public, "caddy").await;
}
