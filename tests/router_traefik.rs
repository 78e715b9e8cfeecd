//! The Traefik router against a real Traefik (file provider, API, Prometheus metrics):
//! switches under live load with zero failed requests, leaves Traefik untouched when the
//! new release fails its checks, fails cleanly when the API is unreachable, rolls back,
//! and rolls back on Traefik's own metrics.

#[path = "support/routers.rs"]
mod routers;
mod support;

use cutover::domain::Slot;
use support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_under_live_load_switches_traefik_with_zero_failed_requests() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_traefik(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.api));
    h.start().await;

    let during = routers::v1_to_v2_under_load(&h, lb.public, "traefik").await;
    assert_eq!(
        during.failed(),
        0,
        "failed requests during v1 → v2 through Traefik: {during:?}"
    );

    let file = std::fs::read_to_string(&lb.file).expect("Cutover's dynamic file");
    assert!(
        file.contains("- name: web-green\n            weight: 100"),
        "{file}"
    );
    assert!(
        lb.file.with_extension("yml.prev").exists(),
        "the previous file is kept"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    let status = h.status().await;
    assert_eq!(status.observed_live, Some(Slot::Green));
    assert!(!status.drift, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_checks_never_reaches_traefik() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .unhealthy_threshold(2)
        .watch("1s")
        .build()
        .await;
    let lb = routers::start_traefik(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.api));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = std::fs::read_to_string(&lb.file).unwrap();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert_eq!(
        std::fs::read_to_string(&lb.file).unwrap(),
        before,
        "Traefik's file changed"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_traefik_api_fails_the_deployment_and_traffic_stays() {
    let mut h = Harness::builder().watch("1s").build().await;
    let lb = routers::start_traefik(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.api));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = std::fs::read_to_string(&lb.file).unwrap();
    h.stop_daemon(nix::sys::signal::Signal::SIGTERM).await;

    let nowhere = routers::free_addr();
    h.edit_config(
        &format!("api = \"{}\"", lb.api),
        &format!("api = \"{nowhere}\""),
    );
    h.start().await;
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 1, "{v2}");
    assert!(
        v2.stdout.contains("switch failed") && v2.stdout.contains(&nowhere.to_string()),
        "{v2}"
    );
    assert_eq!(
        std::fs::read_to_string(&lb.file).unwrap(),
        before,
        "the previous file is back"
    );
    assert_eq!(routers::answered_by(lb.public).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_points_traefik_back_at_the_previous_release() {
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_traefik(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.api));
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    assert_eq!(routers::answered_by(lb.public).await, "v2");
    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(routers::answered_by(lb.public).await, "v1");
    assert_eq!(h.status().await.observed_live, Some(Slot::Blue));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefiks_own_metrics_roll_back_an_erroring_release() {
    let mut h = Harness::builder()
        .behaviour("[v2]\nerror_rate = 0.3\n")
        .watch("8s")
        .without_latency_trigger()
        .build()
        .await;
    let lb = routers::start_traefik(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.api));
    h.start().await;
    routers::erroring_v2_rolled_back_by_router_statistics(&h, lb.public).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_step_splits_traefiks_traffic_by_weight_and_promote_moves_it_all() {
    let mut h = routers::held_canary_harness().await;
    let lb = routers::start_traefik(h.dir()).await;
    routers::use_router(&h, &lb.router_toml(lb.api));
    h.start().await;
    let before_first = routers::canary_step_through(&h, lb.public, "traefik").await;
    // Cutover's `apply` returns once Traefik's API shows the new weights, and Traefik
    // routes by them from then on: its weighted round robin puts the canary (weight 25
    // of 100) within the first four requests of a round.
    assert!(
        before_first < 4,
        "{before_first} requests reached v1 after the split was confirmed, before v2's first"
    );
}
