//! Supervision of the live release between deployments, with the real binary (issue
//! #11 item 4): a live release that dies is restarted, or traffic fails over to a warm
//! standby when the config allows it; the failure is an event, and status shows it.

mod support;

use cutover::domain::Slot;
use cutover::store::EventRecord;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{slot_pid, wait_until, Harness};

async fn event_kinds(h: &Harness) -> Vec<String> {
    let events: Vec<EventRecord> = h
        .client()
        .get("/api/v1/services/web/events?limit=200")
        .await
        .expect("events");
    events.into_iter().map(|e| e.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_release_that_dies_between_deployments_is_restarted() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let before = slot_pid(&h.status().await, Slot::Blue).expect("blue runs");

    kill(Pid::from_raw(before as i32), Signal::SIGKILL).unwrap();
    let after = wait_until(30, "the live release to run again", || async {
        slot_pid(&h.status().await, Slot::Blue).filter(|p| *p != before)
    })
    .await;
    assert_ne!(after, before);
    h.wait_serving("v1").await;

    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Blue));
    let health = wait_until(10, "a healthy round after the restart", || async {
        h.status().await.live_health.filter(|lh| lh.healthy)
    })
    .await;
    assert!(health.restarts >= 1, "{health:?}");
    let kinds = event_kinds(&h).await;
    for kind in ["live_unhealthy", "live_restarted"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let logs = h.daemon_logs();
    assert!(logs.contains("the live release failed"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_traffic_moves_to_the_healthy_warm_standby() {
    let mut h = Harness::builder()
        .watch("0s")
        .edit(
            "warm_for = \"60s\"\n",
            "warm_for = \"60s\"\n\n[services.web.supervise]\nfailover = true\n",
        )
        .build()
        .await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
    let status = h.status().await;
    assert_eq!(status.live, Some(Slot::Green));
    let green = slot_pid(&status, Slot::Green).expect("green runs");
    let blue = slot_pid(&status, Slot::Blue).expect("blue is the warm standby");

    kill(Pid::from_raw(green as i32), Signal::SIGKILL).unwrap();
    // Clients see v1 at once: the shield retries a refused connection on the warm
    // standby while it runs. The failover itself follows the next health round.
    h.wait_serving("v1").await;
    let status = wait_until(30, "the failover to blue", || async {
        let s = h.status().await;
        (s.live == Some(Slot::Blue)).then_some(s)
    })
    .await;
    assert_eq!(status.live, Some(Slot::Blue), "{status:?}");
    assert_eq!(
        slot_pid(&status, Slot::Blue),
        Some(blue),
        "the standby itself"
    );
    let kinds = event_kinds(&h).await;
    assert!(
        kinds.iter().any(|k| k == "live_failover"),
        "no live_failover in {kinds:?}"
    );
}
