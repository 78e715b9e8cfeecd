//! Tests of the hook executor (`hooks.rs`): real commands and a local HTTP server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::HttpHook;

fn command(script: &str, timeout: Duration) -> Hook {
    command_in(script, timeout, Path::new(""))
}

fn command_in(script: &str, timeout: Duration, dir: &Path) -> Hook {
    Hook {
        name: "h".into(),
        at: HookPoint::PreSwitch,
        action: HookAction::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            dir: dir.to_path_buf(),
        },
        timeout,
        on_failure: OnFailure::Abort,
    }
}

const SECS_5: Duration = Duration::from_secs(5);

/// Whether `pid` runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X")
    })
}

#[tokio::test]
async fn a_command_that_exits_zero_passes_with_its_output() {
    let run = run_hook(&command("echo to-stdout; echo to-stderr >&2", SECS_5), &[]).await;
    assert!(run.ok, "{run:?}");
    assert_eq!(run.status, "exit 0");
    assert!(run.output.contains("to-stdout"), "{run:?}");
    assert!(run.output.contains("to-stderr"), "{run:?}");
}

#[tokio::test]
async fn a_command_that_exits_one_fails_with_its_output_cleaned() {
    let run = run_hook(
        &command(
            "printf 'migrating\\n\\033[31mno such table\\033[0m\\r\\n'; exit 1",
            SECS_5,
        ),
        &[],
    )
    .await;
    assert!(!run.ok);
    assert_eq!(run.status, "exit 1");
    assert_eq!(run.output, "migrating\n[31mno such table[0m");
    assert!(
        !run.output.contains('\u{1b}'),
        "control characters are stripped"
    );
    let (event, records) = answer(HookPoint::PreSwitch, vec![(&command("", SECS_5), run)]);
    assert_eq!(
        event,
        Event::Hooks {
            point: HookPoint::PreSwitch,
            failure: Some("`h` failed: exit 1: [31mno such table[0m".into()),
        }
    );
    assert_eq!(records[0].detail, "exit 1\nmigrating\n[31mno such table[0m");
    assert!(!records[0].ok);
}

#[tokio::test]
async fn only_the_last_4_kib_of_output_is_kept() {
    let run = run_hook(
        &command(
            "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
            SECS_5,
        ),
        &[],
    )
    .await;
    assert!(run.ok, "{run:?}");
    assert!(run.output.len() <= OUTPUT_TAIL, "{}", run.output.len());
    assert!(
        run.output.ends_with("line-1999"),
        "{}",
        &run.output[run.output.len() - 40..]
    );
    assert!(!run.output.contains("line-10\n"));
}

#[tokio::test]
async fn a_command_that_overruns_its_timeout_is_killed_with_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!(
        "sleep 30 & echo $! > {}; echo waiting; wait",
        pidfile.display()
    );
    let started = std::time::Instant::now();
    let run = run_hook(&command(&script, Duration::from_millis(500)), &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!run.ok);
    assert_eq!(run.status, "timed out after 500ms");
    assert_eq!(
        run.output, "waiting",
        "output written before the timeout is kept"
    );
    let child: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background `sleep` was in the hook's process group: it is gone too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(child) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(child),
        "the hook's background process {child} survived"
    );
}

#[tokio::test]
async fn dropping_a_running_hook_kills_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hook.pid");
    let script = format!("echo $$ > {}; sleep 30", pidfile.display());
    let hook = command(&script, Duration::from_secs(60));
    let task = tokio::spawn(async move { run_hook(&hook, &[]).await });
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    task.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "an aborted hook kept running");
}

#[tokio::test]
async fn a_command_gets_the_deployment_in_its_environment_and_runs_in_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("CUTOVER_SLOT".to_string(), "green".to_string()),
        ("CUTOVER_HOOK_POINT".to_string(), "pre_switch".to_string()),
    ];
    let run = run_hook(
        &command_in(
            "echo \"$CUTOVER_HOOK_POINT $CUTOVER_SLOT [$CUTOVER_PREVIOUS_SLOT]\"; pwd",
            SECS_5,
            dir.path(),
        ),
        &env,
    )
    .await;
    assert!(run.ok, "{run:?}");
    let real = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        run.output,
        format!("pre_switch green []\n{}", real.display())
    );
}

#[tokio::test]
async fn a_program_that_does_not_exist_fails_naming_it() {
    let hook = Hook {
        action: HookAction::Command {
            argv: vec!["/nonexistent/cutover-hook".into()],
            dir: PathBuf::new(),
        },
        ..command("", SECS_5)
    };
    let run = run_hook(&hook, &[]).await;
    assert!(!run.ok);
    assert!(
        run.status
            .starts_with("could not run `/nonexistent/cutover-hook`"),
        "{run:?}"
    );
}

/// A server that answers one request with `response`; returns its address and the
/// request it received.
async fn one_shot(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut req = Vec::new();
        // Read the head and the 7-byte body the tests send.
        while !String::from_utf8_lossy(&req).contains("payload") {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (format!("http://{addr}/deployed?x=1"), got)
}

fn http_hook(url: &str, expect_status: Vec<u16>) -> Hook {
    Hook {
        action: HookAction::Http(HttpHook {
            url: url.parse().unwrap(),
            method: "POST".into(),
            headers: [("x-token".to_string(), "secret".to_string())].into(),
            body: Some("payload".into()),
            expect_status,
            tls: Default::default(),
        }),
        ..command("", SECS_5)
    }
}

#[tokio::test]
async fn an_http_hook_passes_on_an_expected_status_and_sends_its_request() {
    let (url, got) = one_shot("HTTP/1.1 204 No Content\r\n\r\n").await;
    let run = run_hook(&http_hook(&url, vec![200, 204]), &[]).await;
    assert!(run.ok, "{run:?}");
    assert_eq!(run.status, "HTTP 204 No Content");
    let req = got.await.unwrap();
    assert!(req.starts_with("POST /deployed?x=1 HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("x-token: secret\r\n"), "{req}");
    assert!(
        req.to_ascii_lowercase().contains(&format!(
            "host: {}\r\n",
            &url[7..url.find("/deployed").unwrap()]
        )),
        "{req}"
    );
    assert!(req.ends_with("payload"), "{req}");
}

#[tokio::test]
async fn an_http_hook_fails_on_another_status_with_the_body() {
    let (url, _got) = one_shot("HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nnot deployed\n").await;
    let run = run_hook(&http_hook(&url, vec![204]), &[]).await;
    assert!(!run.ok);
    assert_eq!(run.status, "HTTP 200 OK (expected 204)");
    assert_eq!(run.output, "not deployed");
}

#[tokio::test]
async fn an_http_hook_that_gets_no_answer_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let (_sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut hook = http_hook(&format!("http://{addr}/"), vec![]);
    hook.timeout = Duration::from_millis(300);
    let run = run_hook(&hook, &[]).await;
    assert!(!run.ok);
    assert_eq!(run.status, "timed out after 300ms");
}

#[test]
fn a_warn_failure_is_recorded_as_failed_and_answered_as_success() {
    let mut hook = command("", SECS_5);
    hook.on_failure = OnFailure::Warn;
    hook.at = HookPoint::AfterSuccess;
    let run = HookRun {
        ok: false,
        status: "exit 3".into(),
        output: "slack is down".into(),
        duration: Duration::from_millis(7),
    };
    let (event, records) = answer(HookPoint::AfterSuccess, vec![(&hook, run)]);
    assert_eq!(
        event,
        Event::Hooks {
            point: HookPoint::AfterSuccess,
            failure: None
        }
    );
    assert!(!records[0].ok);
    assert_eq!(
        records[0].detail,
        "exit 3 (on_failure = warn: the deployment carried on)\nslack is down"
    );
    assert_eq!(records[0].duration, Duration::from_millis(7));
    assert_eq!(record_phase(HookPoint::AfterSuccess), "hook:after_success");
}
