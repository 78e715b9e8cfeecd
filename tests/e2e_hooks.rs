//! Hooks end to end with the real binary: `pre_switch` and `post_switch` commands run
//! in order around a switch under live load, their results show in the history, and a
//! failing `pre_switch` hook fails the deployment without moving a request; an
//! `https://` HTTP hook is called over TLS with its `ca_file`, and fails naming the key
//! to set without it.

mod support;
#[path = "support/tls_client.rs"]
mod tls;

use std::time::Duration;

use cutover::demo::load::Load;
use serde_json::Value;
use support::Harness;

/// Two hooks that append "pre"/"post" and the slot to `log`; the `pre_switch` one
/// fails (exit 1, with a message on stderr) while `flag` exists.
fn hooks_toml(log: &str, flag: &str) -> String {
    format!(
        r#"
[[services.web.hooks]]
name = "migrate"
at = "pre_switch"
command = ["sh", "-c", 'if [ -e "{flag}" ]; then echo "migration 42 failed" >&2; exit 1; fi; echo "pre $CUTOVER_SLOT $CUTOVER_VERSION" >> "{log}"; echo "migrated for $CUTOVER_SERVICE #$CUTOVER_DEPLOYMENT_ID"']
timeout = "10s"

[[services.web.hooks]]
name = "announce"
at = "post_switch"
command = ["sh", "-c", 'echo "post $CUTOVER_SLOT" >> "{log}"; echo "announced, previous: $CUTOVER_PREVIOUS_SLOT $CUTOVER_PREVIOUS_VERSION"']
"#
    )
}

/// The check records of one deployment in the history, as (phase, name, ok, detail).
fn hook_records(deployment: &Value) -> Vec<(String, String, bool, String)> {
    deployment["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["phase"].as_str().unwrap_or("").starts_with("hook:"))
        .map(|c| {
            (
                c["phase"].as_str().unwrap_or("").to_string(),
                c["name"].as_str().unwrap_or("").to_string(),
                c["ok"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn phases(deployment: &Value) -> Vec<String> {
    deployment["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["phase"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_the_switch_under_load_and_a_failing_pre_switch_hook_moves_nothing() {
    let mut h = Harness::builder()
        .watch("2s")
        .without_latency_trigger()
        .build()
        .await;
    let log = h.dir().join("hooks.log");
    let flag = h.dir().join("fail-migrations");
    let mut config = std::fs::read_to_string(&h.config_path).expect("read config");
    config.push_str(&hooks_toml(&log.to_string_lossy(), &flag.to_string_lossy()));
    std::fs::write(&h.config_path, config).expect("write config");
    h.start().await;

    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}");

    let load = Load::start(h.proxy, "/", 40, 8, Duration::from_secs(300));
    support::wait_until(20, "the load to reach v1", || async {
        load.stats().by_version.contains_key("v1").then_some(())
    })
    .await;

    // v2: both hooks run, in order, around the switch; no request fails.
    let before = load.stats();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    let during_v2 = load.stats().since(&before);
    assert_eq!(v2.code, 0, "deploy v2:\n{v2}");
    eprintln!(
        "v1 → v2 with hooks: {} requests sent, {} failed",
        during_v2.sent,
        during_v2.failed()
    );
    assert_eq!(
        during_v2.failed(),
        0,
        "failed requests during v1 → v2: {during_v2:?}"
    );
    assert!(during_v2.by_version.contains_key("v2"), "{during_v2:?}");
    let lines = std::fs::read_to_string(&log).expect("the hooks wrote their file");
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["pre blue v1", "post blue", "pre green v2", "post green"],
        "hooks ran in order, with the slot being brought live"
    );

    // v3: the pre_switch hook fails; the deployment fails and traffic stays on v2.
    std::fs::write(&flag, "").expect("write flag");
    let live_before = h.status().await.live;
    let before = load.stats();
    let v3 = h.cli(&["deploy", "web", "v3"]).await;
    let during_v3 = load.stats().since(&before);
    assert_eq!(
        v3.code, 1,
        "deploy v3 (failing pre_switch hook) must fail:\n{v3}"
    );
    eprintln!(
        "v2 → v3 with a failing pre_switch hook: {} requests sent, {} failed",
        during_v3.sent,
        during_v3.failed()
    );
    assert_eq!(
        during_v3.failed(),
        0,
        "failed requests during v3: {during_v3:?}"
    );
    assert!(
        !during_v3.by_version.contains_key("v3"),
        "a request reached v3: {during_v3:?}"
    );
    let status = h.status().await;
    assert_eq!(status.live, live_before, "the live slot changed");
    assert_eq!(status.live_version.as_deref(), Some("v2"));
    let total = load.stop().await;
    assert_eq!(total.failed(), 0, "{total:?}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        4,
        "the failing hook wrote nothing and no post_switch hook ran"
    );

    // The history shows every hook's result with its output.
    let history = h.cli(&["history", "web", "--json"]).await;
    assert_eq!(history.code, 0, "{history}");
    let list = history.json();
    let list = list.as_array().expect("history is a list");
    let by_version = |v: &str| {
        list.iter()
            .find(|d| d["version"] == v)
            .unwrap_or_else(|| panic!("no {v} in the history: {history}"))
            .clone()
    };
    let v2 = by_version("v2");
    let records = hook_records(&v2);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0].0.as_str(), records[0].1.as_str(), records[0].2),
        ("hook:pre_switch", "migrate", true)
    );
    assert!(
        records[0].3.starts_with("exit 0\nmigrated for web #"),
        "{records:?}"
    );
    assert_eq!(
        (records[1].0.as_str(), records[1].1.as_str(), records[1].2),
        ("hook:post_switch", "announce", true)
    );
    assert_eq!(records[1].3, "exit 0\nannounced, previous: blue v1");
    let phases_v2 = phases(&v2);
    let at = |name: &str| phases_v2.iter().position(|p| p == name);
    assert!(
        at("smoke") < at("hooks_pre_switch")
            && at("hooks_pre_switch") < at("switch")
            && at("switch") < at("hooks_post_switch")
            && at("hooks_post_switch") < at("watch")
            && at("smoke").is_some(),
        "{phases_v2:?}"
    );

    let v3 = by_version("v3");
    assert_eq!(v3["outcome"], "failed", "{v3}");
    let reason = v3["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("pre_switch hook `migrate` failed: exit 1: migration 42 failed"),
        "{reason}"
    );
    assert!(v3["switched_at"].is_null(), "v3 never took traffic: {v3}");
    let records = hook_records(&v3);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1, "migrate");
    assert!(!records[0].2);
    assert_eq!(records[0].3, "exit 1\nmigration 42 failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_hook_is_called_over_tls_with_its_ca_and_fails_naming_the_key_without_it() {
    let certs = tls::TestCerts::new();
    let (addr, seen) = tls::https_server(&certs, 200, "warmed").await;
    let mut h = Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .build()
        .await;
    let mut config = std::fs::read_to_string(&h.config_path).expect("read config");
    config.push_str(&format!(
        r#"
[[services.web.hooks]]
name = "warm"
at = "pre_switch"
http = {{ url = "https://127.0.0.1:{port}/warm", ca_file = "{ca}", body = "v" }}

[[services.web.hooks]]
name = "announce"
at = "after_success"
http = {{ url = "https://127.0.0.1:{port}/announce" }}
"#,
        port = addr.port(),
        ca = certs.ca.display()
    ));
    std::fs::write(&h.config_path, config).expect("write config");
    h.start().await;

    // The trusted hook passes (an abort-by-default pre_switch hook); the untrusted one
    // (the system store does not know the test CA) fails and only warns.
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "deploy v1:\n{v1}");
    assert_eq!(
        seen.lock().unwrap().clone(),
        [("POST /warm".to_string(), "v".to_string())],
        "only the trusted hook's request reached the server"
    );
    let history = h.cli(&["history", "web", "--json"]).await;
    assert_eq!(history.code, 0, "{history}");
    let list = history.json();
    let v1 = list
        .as_array()
        .and_then(|l| l.iter().find(|d| d["version"] == "v1"))
        .unwrap_or_else(|| panic!("no v1 in the history: {history}"))
        .clone();
    let records = hook_records(&v1);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!((records[0].1.as_str(), records[0].2), ("warm", true));
    assert!(records[0].3.starts_with("HTTP 200 OK"), "{records:?}");
    assert_eq!((records[1].1.as_str(), records[1].2), ("announce", false));
    assert!(
        records[1].3.contains(
            "certificate not trusted: it is not signed by a CA in the system store; add ca_file"
        ),
        "{records:?}"
    );
}
