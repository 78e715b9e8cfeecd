//! The web dashboard in a real browser: headless Chromium driven by selenium
//! (`tests/dashboard/drive.py`) against the real daemon, with `read_requires_token` on.
//! The page asks for the token, refuses a wrong one, shows the live release, the
//! proxy's per-slot counters and the traffic split, renders a hostile API message as
//! text, sends nothing when a confirmation is cancelled, deploys v2 and rolls back from
//! its buttons; the daemon's own history then names the dashboard as who asked.
//! Raw requests check what a browser cannot see: the files are open (they hold no
//! data) while the data stay behind the token, the security headers, and the Host check.
//!
//! Needs `chromium`, `chromium-driver` (Debian) and `selenium` (PyPI): `scripts/test`
//! installs them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Harness, SERVICE, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw GET with this `Host` and no token; the whole answer.
async fn raw_get(api: SocketAddr, host: &str, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(api).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the API answered in time")
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn with_read_token() -> support::Builder {
    let token_line = format!("token = \"{TOKEN}\"\n");
    Harness::builder()
        .watch("1s")
        .without_latency_trigger()
        .edit(
            &token_line,
            &format!("{token_line}read_requires_token = true\n"),
        )
}

#[tokio::test]
async fn the_dashboard_files_are_open_but_the_data_need_the_token() {
    let mut h = with_read_token().build().await;
    h.start().await;
    let host = h.api.to_string();
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let answer = raw_get(h.api, &host, path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(
            header(&answer, "content-type").is_some_and(|v| v.starts_with(kind)),
            "{path}: {answer}"
        );
        let csp = header(&answer, "content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: CSP {csp:?}");
        }
        assert_eq!(header(&answer, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&answer, "referrer-policy"), Some("no-referrer"));
    }
    // The data it shows are not open.
    let data = raw_get(h.api, &host, "/api/v1/services").await;
    assert!(data.starts_with("HTTP/1.1 401"), "{data}");
    // A page reached under another name (DNS rebinding) gets nothing, not even the files.
    let rebound = raw_get(h.api, "attacker.example", "/dashboard").await;
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
}

/// v1 deployed and live, `served` requests through the proxy.
async fn v1_live(h: &mut Harness, served: usize) {
    h.start().await;
    let first = h.deploy_no_wait("v1").await;
    h.wait_finished(first, 60).await;
    h.wait_serving("v1").await;
    for _ in 0..served {
        let (status, _) = h.get_proxy("/").await.expect("the proxy answers");
        assert_eq!(status, 200);
    }
}

/// Runs `tests/dashboard/drive.py` in `flow`; its JSON summary.
async fn drive(h: &Harness, served: usize, flow: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/drive.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(h.api.to_string())
        .arg(TOKEN)
        .arg(served.to_string())
        .arg(flow)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser session ended in time")
        .expect("python3 runs (scripts/test installs chromium, chromium-driver, selenium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser session failed:\n{stdout}\n{stderr}\ndaemon:\n{}",
        h.daemon_logs()
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a summary")
}

#[tokio::test]
async fn a_person_deploys_and_rolls_back_from_the_dashboard_in_a_real_browser() {
    let mut h = with_read_token().build().await;
    const SERVED: usize = 25;
    v1_live(&mut h, SERVED).await;
    let summary = drive(&h, SERVED, "blue-green").await;
    assert_eq!(
        summary["live_before"], summary["live_after_rollback"],
        "{summary}"
    );

    // The daemon's own record: the page's deploy and rollback, each once, by the
    // dashboard; the refused and the cancelled ones left nothing.
    let history = h.cli(&["history", SERVICE, "--json"]).await.json();
    let runs = history.as_array().expect("a list");
    let by_page: Vec<(String, String, String)> = runs
        .iter()
        .filter(|d| d["triggered_by"] == "dashboard")
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["version"].as_str().unwrap_or_default().to_string(),
                d["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(runs.len(), 3, "{history}");
    assert!(
        by_page.contains(&("deploy".into(), "v2".into(), "succeeded".into()))
            && by_page.iter().any(|(kind, ..)| kind == "rollback")
            && by_page.len() == 2,
        "{by_page:?}"
    );
    let status = h.status().await;
    assert_eq!(status.live_version.as_deref(), Some("v1"));
}

#[tokio::test]
async fn a_canary_held_at_its_step_shows_its_split_and_is_promoted_from_the_page() {
    let strategy = "[services.web.strategy]\nkind = \"canary\"\n\
                    steps = [ { weight = 20, pause = \"until-promoted\", analyze = false } ]\n\n\
                    [services.web.watch]";
    let mut h = with_read_token()
        .edit("[services.web.watch]", strategy)
        .build()
        .await;
    v1_live(&mut h, 5).await;
    let summary = drive(&h, 5, "canary").await;
    assert_ne!(
        summary["live_after_promote"],
        serde_json::Value::Null,
        "{summary}"
    );

    let history = h.cli(&["history", SERVICE, "--json"]).await.json();
    let last = &history.as_array().expect("a list")[0];
    assert_eq!(last["version"], "v2", "{history}");
    assert_eq!(last["outcome"], "succeeded", "{history}");
    assert_eq!(last["triggered_by"], "dashboard", "{history}");
    assert_eq!(h.status().await.live_version.as_deref(), Some("v2"));
}
