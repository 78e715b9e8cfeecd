//! Races between a deployment and what else touches its slots, with the real binary
//! (issue #11, bugs 1 and 2): a request in flight on a warm standby finishes before a
//! new release replaces it, and the standby reaper never stops a release that a new
//! deployment has just started.

mod support;

use std::time::Duration;

use cutover::domain::Slot;
use cutover::store::DeploymentOutcome;
use support::{http_get, within, Harness};

/// A request of `ms` milliseconds through the proxy, started now, to the live slot.
fn slow_request(h: &Harness, ms: u64) -> tokio::task::JoinHandle<Result<(u16, String), String>> {
    let proxy = h.proxy;
    tokio::spawn(async move { http_get(proxy, &format!("/slow?ms={ms}")).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_into_a_warm_standby_lets_its_in_flight_requests_finish() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);

    // A long request on blue while it is live...
    let slow = slow_request(&h, 6000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...blue becomes the warm standby...
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 0, "{v2}");
    assert_eq!(h.status().await.live, Some(Slot::Green));
    // ...and the next release goes into blue while the request still runs there.
    let v3 = h.cli(&["deploy", "web", "v3"]).await;
    assert_eq!(v3.code, 0, "{v3}");

    let answer = within(30, "the slow request", slow).await.unwrap();
    assert_eq!(
        answer,
        Ok((200, "slept 6000ms\n".to_string())),
        "the request in flight on the standby was cut\n{}",
        h.daemon_logs()
    );
    assert_eq!(h.status().await.live, Some(Slot::Blue));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_reaper_never_stops_a_release_a_new_deployment_started() {
    let mut h = Harness::builder()
        .watch("0s")
        .edit("warm_for = \"60s\"", "warm_for = \"1s\"")
        .build()
        .await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);

    // A long request on blue, then blue becomes a standby that expires after 1 s: the
    // reaper starts draining it while the request still runs.
    let slow = slow_request(&h, 8000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A deployment into blue begins during the reaper's drain.
    let id = h.deploy_no_wait("v3").await;
    let d = h.wait_finished(id, 90).await;
    assert_eq!(
        d.outcome,
        Some(DeploymentOutcome::Succeeded),
        "{:?}\n{}",
        d.reason,
        h.daemon_logs()
    );
    let answer = within(30, "the slow request", slow).await.unwrap();
    assert_eq!(answer, Ok((200, "slept 8000ms\n".to_string())));

    // The reaper's turn came and went: v3 still runs and serves.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue), "{status:?}");
    let blue = &status.slots[Slot::Blue.index()];
    assert!(blue.running, "v3's release was stopped: {status:?}");
    assert_eq!(blue.record.version.as_deref(), Some("v3"));
    let (code, body) = h.get_proxy("/").await.expect("the proxy answers");
    assert_eq!((code, body.trim()), (200, "hello from v3"));
}
