//! The three health probes (HTTP, TCP connect, command) and the judging of an HTTP
//! response against expectations, which smoke steps share.
//!
//! A probe never errors: whatever happens becomes a [`CheckResult`] whose `detail` says
//! what was seen, because the person reading a failed deployment needs "expected
//! checks.database = \"healthy\", got \"degraded\"", not "check failed".

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::http::{ProbeRequest, Response};
use super::{human_duration, json_path, CheckResult, ProbeTarget};
use crate::config::{HealthCheck, HttpProbe, JsonCondition, Probe};
use crate::domain::endpoint::{out_of_descriptors, Endpoint};

/// Runs one check once, bounded by `timeout`.
pub async fn run_check(
    check: &HealthCheck,
    target: &ProbeTarget,
    timeout: Duration,
) -> CheckResult {
    let started = Instant::now();
    let probe = async {
        match &check.probe {
            Probe::Http(p) => http_probe(p, target, timeout).await,
            Probe::Tcp => tcp_probe(target).await,
            Probe::Command(argv) => command_probe(argv, target).await,
        }
    };
    let (ok, detail) = match tokio::time::timeout(timeout, probe).await {
        Ok(outcome) => outcome,
        Err(_) => (
            false,
            format!("timed out after {}", human_duration(timeout)),
        ),
    };
    CheckResult {
        name: check.name.clone(),
        ok,
        detail,
        duration: started.elapsed(),
    }
}

/// Replaces `{version}`, `{port}`, `{slot}`, `{service}` and `{addr}` in one argument.
pub fn substitute_placeholders(arg: &str, target: &ProbeTarget) -> String {
    arg.replace("{version}", &target.version)
        .replace("{port}", &target.endpoint.port().to_string())
        .replace("{slot}", target.slot.as_str())
        .replace("{service}", &target.service)
        .replace("{addr}", &target.endpoint.to_string())
}

async fn http_probe(probe: &HttpProbe, target: &ProbeTarget, timeout: Duration) -> (bool, String) {
    match target
        .send(ProbeRequest::get(probe.path.clone()), timeout)
        .await
    {
        Ok(resp) => {
            let expect = Expectations {
                status: probe.expect_status,
                body_contains: probe.body_contains.as_deref(),
                json: &probe.json,
            };
            match judge(&expect, &resp) {
                Ok(seen) => (true, seen),
                Err(why) => (false, why),
            }
        }
        Err(super::http::HttpError::Connect(e)) if out_of_descriptors(&e) => {
            (false, format!("{}: {e}", super::OUT_OF_DESCRIPTORS))
        }
        Err(e) => (false, e.to_string()),
    }
}

async fn tcp_probe(target: &ProbeTarget) -> (bool, String) {
    match target.endpoint.connect().await {
        Ok(s) => match (&target.endpoint, s.peer_addr()) {
            (Endpoint::Host { .. }, Ok(peer)) => {
                (true, format!("connected to {} ({peer})", target.endpoint))
            }
            _ => (true, format!("connected to {}", target.endpoint)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (false, "connection refused".to_string())
        }
        Err(e) if out_of_descriptors(&e) => (false, format!("{}: {e}", super::OUT_OF_DESCRIPTORS)),
        Err(e) => (false, format!("connect failed: {e}")),
    }
}

async fn command_probe(argv: &[String], target: &ProbeTarget) -> (bool, String) {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| substitute_placeholders(a, target))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return (false, "empty command".to_string());
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => return (false, format!("could not run `{program}`: {e}")),
    };
    // On timeout the caller drops this future, and with it the child (killed on drop).
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(e) => return (false, format!("waiting for `{program}` failed: {e}")),
    };
    let last = last_line(&output.stderr).or_else(|| last_line(&output.stdout));
    let status = match (output.status.code(), output.status.success()) {
        (_, true) => "exit 0".to_string(),
        (Some(code), false) => format!("exit {code}"),
        (None, false) => format!("terminated ({})", output.status),
    };
    let detail = match last {
        Some(line) => format!("{status}: {line}"),
        None => status,
    };
    (output.status.success(), detail)
}

fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| truncate(l, 200))
}

/// What a response must satisfy; shared by health probes and smoke steps.
pub(super) struct Expectations<'a> {
    /// `None` = any 2xx.
    pub status: Option<u16>,
    pub body_contains: Option<&'a str>,
    pub json: &'a [JsonCondition],
}

/// `Ok(what was seen)` when every expectation holds, else `Err(what failed)`.
pub(super) fn judge(expect: &Expectations<'_>, resp: &Response) -> Result<String, String> {
    let status = resp.status_line();
    let status_ok = match expect.status {
        Some(code) => resp.status.as_u16() == code,
        None => resp.status.is_success(),
    };
    if !status_ok {
        let wanted = match expect.status {
            Some(code) => format!("status {code}"),
            None => "a 2xx status".to_string(),
        };
        return Err(format!(
            "expected {wanted}, got {status}{}",
            body_excerpt(&resp.body)
        ));
    }
    let mut seen = vec![status.clone()];
    let mut failures = Vec::new();
    if let Some(needle) = expect.body_contains {
        if String::from_utf8_lossy(&resp.body).contains(needle) {
            seen.push(format!("body contains {needle:?}"));
        } else {
            failures.push(format!(
                "expected the body to contain {needle:?}{}",
                body_excerpt(&resp.body)
            ));
        }
    }
    if !expect.json.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&resp.body) {
            Ok(doc) => {
                for cond in expect.json {
                    match json_path::get(&doc, &cond.path) {
                        Some(v) if json_path::values_equal(v, &cond.expected) => {
                            seen.push(format!("{} = {v}", cond.path));
                        }
                        Some(v) => failures.push(format!(
                            "expected {} = {}, got {v}",
                            cond.path, cond.expected
                        )),
                        None => failures.push(format!(
                            "expected {} = {}, got nothing (no such path)",
                            cond.path, cond.expected
                        )),
                    }
                }
            }
            Err(e) => failures.push(format!(
                "expected a JSON body, got invalid JSON ({e}){}",
                body_excerpt(&resp.body)
            )),
        }
    }
    if failures.is_empty() {
        Ok(seen.join(", "))
    } else {
        Err(format!("{status}, {}", failures.join("; ")))
    }
}

/// `" (body: ...)"` with the start of the body on one line, or nothing for an empty body.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        String::new()
    } else {
        format!(" (body: {})", truncate(&text, 200))
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;
    use crate::demo::app::{spawn_for_test, Behaviour};
    use crate::domain::Slot;
    use serde_json::json;
    use std::net::SocketAddr;

    fn target(addr: impl Into<Endpoint>) -> ProbeTarget {
        ProbeTarget {
            endpoint: addr.into(),
            service: "web".to_string(),
            slot: Slot::Green,
            version: "v2".to_string(),
            tls: None,
        }
    }

    fn http_check(path: &str, json: Vec<JsonCondition>) -> HealthCheck {
        HealthCheck {
            name: "http".to_string(),
            probe: Probe::Http(HttpProbe {
                path: path.to_string(),
                expect_status: None,
                json,
                body_contains: None,
            }),
        }
    }

    fn database_is(expected: &str) -> Vec<JsonCondition> {
        vec![JsonCondition {
            path: "checks.database".to_string(),
            expected: json!(expected),
        }]
    }

    fn cfg(checks: Vec<HealthCheck>, timeout: Duration) -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            deadline: Duration::from_secs(10),
            checks,
        }
    }

    const T: Duration = Duration::from_secs(5);

    /// A port nobody listens on (bound, then released).
    async fn closed_port() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn an_http_probe_passes_against_a_healthy_app() {
        let addr = spawn_for_test(Behaviour::healthy("v2")).await;
        let r = run_check(&http_check("/health", vec![]), &target(addr), T).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.detail, "200 OK");
    }

    #[tokio::test]
    async fn an_http_probe_against_an_unhealthy_app_says_what_it_got() {
        let mut b = Behaviour::healthy("v2");
        b.unhealthy = true;
        let addr = spawn_for_test(b).await;
        let r = run_check(&http_check("/health", vec![]), &target(addr), T).await;
        assert!(!r.ok);
        assert_eq!(
            r.detail,
            r#"expected a 2xx status, got 503 Service Unavailable (body: {"status":"unhealthy"})"#
        );
    }

    #[tokio::test]
    async fn a_json_condition_that_holds_passes_and_is_reported() {
        let addr = spawn_for_test(Behaviour::healthy("v2")).await;
        let check = http_check("/health/deep", database_is("healthy"));
        let r = run_check(&check, &target(addr), T).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.detail, r#"200 OK, checks.database = "healthy""#);
    }

    #[tokio::test]
    async fn a_json_condition_that_does_not_hold_fails_with_expected_and_actual() {
        let addr = spawn_for_test(Behaviour::healthy("v2")).await;
        let mut check = http_check("/health/deep", database_is("degraded"));
        if let Probe::Http(p) = &mut check.probe {
            p.json.push(JsonCondition {
                path: "checks.queue".to_string(),
                expected: json!("healthy"),
            });
        }
        let r = run_check(&check, &target(addr), T).await;
        assert!(!r.ok);
        assert_eq!(
            r.detail,
            r#"200 OK, expected checks.database = "degraded", got "healthy"; expected checks.queue = "healthy", got nothing (no such path)"#
        );
    }

    #[tokio::test]
    async fn expected_status_and_body_text_are_checked() {
        let addr = spawn_for_test(Behaviour::healthy("v2")).await;
        let mut check = http_check("/", vec![]);
        if let Probe::Http(p) = &mut check.probe {
            p.expect_status = Some(200);
            p.body_contains = Some("from v2".to_string());
        }
        let r = run_check(&check, &target(addr), T).await;
        assert!(r.ok, "{r:?}");
        if let Probe::Http(p) = &mut check.probe {
            p.body_contains = Some("from v3".to_string());
        }
        let r = run_check(&check, &target(addr), T).await;
        assert!(!r.ok);
        assert!(
            r.detail
                .contains(r#"expected the body to contain "from v3""#),
            "{}",
            r.detail
        );
    }

    #[tokio::test]
    async fn an_empty_check_list_means_one_tcp_check_that_sees_a_refused_port() {
        let addr = closed_port().await;
        let results = crate::checks::health_round(&cfg(vec![], T), &target(addr)).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].name, "tcp");
        assert!(!results[0].ok);
        assert_eq!(results[0].detail, "connection refused");
    }

    #[tokio::test]
    async fn a_round_runs_every_check_and_keeps_their_order() {
        let addr = spawn_for_test(Behaviour::healthy("v2")).await;
        let checks = vec![
            http_check("/health", vec![]),
            HealthCheck {
                name: "port".to_string(),
                probe: Probe::Tcp,
            },
        ];
        let results = crate::checks::health_round(&cfg(checks, T), &target(addr)).await;
        let names: Vec<(&str, bool)> = results.iter().map(|r| (r.name.as_str(), r.ok)).collect();
        assert_eq!(names, [("http", true), ("port", true)]);
    }

    /// The slot at `addr`, given by host name: `localhost:<port>`.
    fn by_name(addr: SocketAddr) -> ProbeTarget {
        target(Endpoint::host("localhost", addr.port()).unwrap())
    }

    #[tokio::test]
    async fn http_and_tcp_checks_dial_a_slot_given_by_host_name() {
        let addr = spawn_for_test(Behaviour::healthy("v2")).await;
        let checks = vec![
            http_check("/health/deep", database_is("healthy")),
            HealthCheck {
                name: "port".to_string(),
                probe: Probe::Tcp,
            },
        ];
        let results = crate::checks::health_round(&cfg(checks, T), &by_name(addr)).await;
        assert!(results.iter().all(|r| r.ok), "{results:?}");
        assert_eq!(
            results[1].detail,
            format!("connected to localhost:{} ({addr})", addr.port())
        );

        let results =
            crate::checks::health_round(&cfg(vec![], T), &by_name(closed_port().await)).await;
        assert!(!results[0].ok);
        assert_eq!(results[0].detail, "connection refused");
    }

    #[tokio::test]
    async fn a_command_probe_gets_placeholders_and_passes_on_exit_zero() {
        let argv = [
            "sh",
            "-c",
            "test {port} -gt 0 && test {slot}/{service}/{version} = green/web/v2 && echo ok {addr}",
        ];
        let check = HealthCheck {
            name: "cmd".to_string(),
            probe: Probe::Command(argv.iter().map(|s| s.to_string()).collect()),
        };
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let r = run_check(&check, &target(addr), T).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.detail, "exit 0: ok 127.0.0.1:8080");
    }

    #[tokio::test]
    async fn a_failing_command_fails_with_its_exit_code_and_last_output_line() {
        let argv = ["sh", "-c", "echo starting; echo 'db down' >&2; exit 3"];
        let check = HealthCheck {
            name: "cmd".to_string(),
            probe: Probe::Command(argv.iter().map(|s| s.to_string()).collect()),
        };
        let r = run_check(&check, &target(closed_port().await), T).await;
        assert!(!r.ok);
        assert_eq!(r.detail, "exit 3: db down");
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_fails_naming_it() {
        let check = HealthCheck {
            name: "cmd".to_string(),
            probe: Probe::Command(vec!["/nonexistent/cutover-probe".to_string()]),
        };
        let r = run_check(&check, &target(closed_port().await), T).await;
        assert!(!r.ok);
        assert!(
            r.detail
                .starts_with("could not run `/nonexistent/cutover-probe`"),
            "{}",
            r.detail
        );
    }

    #[tokio::test]
    async fn a_server_that_accepts_but_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let timeout = Duration::from_millis(200);
        let r = run_check(&http_check("/health", vec![]), &target(addr), timeout).await;
        assert!(!r.ok);
        assert_eq!(r.detail, "timed out after 200ms");
        assert!(r.duration >= timeout);
    }

    #[tokio::test]
    async fn a_command_that_hangs_times_out() {
        let check = HealthCheck {
            name: "cmd".to_string(),
            probe: Probe::Command(vec!["sleep".to_string(), "30".to_string()]),
        };
        let timeout = Duration::from_millis(200);
        let r = run_check(&check, &target(closed_port().await), timeout).await;
        assert!(!r.ok);
        assert_eq!(r.detail, "timed out after 200ms");
    }
}
