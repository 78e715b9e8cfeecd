//! Restarting or upgrading Cutover itself under load, with the real binary (issue #11
//! item 5): on SIGHUP the daemon hands its listening sockets to a new daemon started
//! from the same binary path and exits once that one serves; no request fails, and a
//! new daemon that cannot start leaves the old one serving.

mod support;

use std::time::Duration;

use cutover::demo::load::Load;
use cutover::domain::Slot;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{cmdline_of, wait_until, Harness};

/// The pid holding the state directory's lock (written by the holder).
fn lock_holder(h: &Harness) -> Option<u32> {
    std::fs::read_to_string(h.state_dir().join("cutover.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sends SIGHUP to `pid` and waits until another daemon holds the lock and answers,
/// and `pid` is gone. Returns the new daemon's pid.
async fn hand_over(h: &Harness, pid: u32) -> u32 {
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP");
    let new = wait_until(60, "a new daemon to hold the state lock", || async {
        lock_holder(h).filter(|p| *p != pid)
    })
    .await;
    wait_until(30, "the new daemon's API to answer", || async {
        h.client().get::<serde_json::Value>("/healthz").await.ok()
    })
    .await;
    wait_until(60, "the old daemon to exit", || async {
        cmdline_of(pid).is_none().then_some(())
    })
    .await;
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_hand_overs_under_load_fail_no_request_and_the_last_daemon_deploys() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let mut pid = lock_holder(&h).expect("the daemon holds the lock");
    assert_eq!(pid, h.daemon_pid());

    let load = Load::start(h.proxy, "/", 100, 8, Duration::from_secs(300));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pids = vec![pid];
    let mut slow = None;
    for i in 0..10 {
        if i == 4 {
            // A request in flight on the old daemon when it hands over: it finishes.
            let proxy = h.proxy;
            slow = Some(tokio::spawn(async move {
                support::http_get(proxy, "/slow?ms=2000").await
            }));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        pid = hand_over(&h, pid).await;
        assert!(!pids.contains(&pid), "a new process each time");
        pids.push(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = load.stop().await;
    println!("load across 10 hand-overs: {stats:?}");
    assert!(stats.sent > 300, "{stats:?}");
    let slow = slow.unwrap().await.unwrap();
    assert_eq!(slow, Ok((200, "slept 2000ms\n".to_string())));
    assert_eq!(
        stats.failed(),
        0,
        "requests failed across 10 hand-overs: {stats:?}\n{}",
        h.daemon_logs()
    );
    assert_eq!(stats.by_version.keys().collect::<Vec<_>>(), ["v1"]);

    // The tenth daemon has the whole control plane: it deploys.
    let out = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(h.status().await.live, Some(Slot::Green));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_daemon_that_cannot_start_leaves_the_old_one_serving() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let pid = h.daemon_pid();
    let good = std::fs::read_to_string(&h.config_path).unwrap();

    // The next daemon reads this config and exits 2.
    std::fs::write(&h.config_path, format!("{good}\n[nonsense\n")).unwrap();
    let load = Load::start(h.proxy, "/", 50, 4, Duration::from_secs(120));
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    wait_until(30, "the old daemon to say it serves on", || async {
        h.daemon_logs().contains("did not take over").then_some(())
    })
    .await;
    std::fs::write(&h.config_path, good).unwrap();
    wait_until(30, "the API to answer again", || async {
        h.client().get::<serde_json::Value>("/healthz").await.ok()
    })
    .await;
    assert_eq!(
        lock_holder(&h),
        Some(pid),
        "the old daemon holds its lock again"
    );
    let stats = load.stop().await;
    assert_eq!(stats.failed(), 0, "{stats:?}");
    assert!(stats.sent > 0);
    // Its control plane is back: it deploys.
    assert_eq!(h.cli(&["deploy", "web", "v2"]).await.code, 0);
}
