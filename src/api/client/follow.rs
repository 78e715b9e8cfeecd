//! Follows one deployment through the live event feed and prints it as it happens:
//! phases, check and hook results, analysis measurements, the machine's log lines and
//! the watch window, each once, in the order the daemon recorded them.
//!
//! Why here (the API client) and not in `cli`: both `cutover deploy` and `cutover demo`
//! follow deployments, and `demo` must not import `cli` (nor the reverse).
//!
//! Why the feed rather than polling the deployment record: a poll sees several new
//! rows at once and had to guess their order from timestamps (a `→ switch` could print
//! before the smoke results it came after); the feed is the order of the event log. If
//! the stream breaks (the daemon restarting), the follower reconnects with
//! `Last-Event-ID` and misses nothing.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{ApiClient, ClientError};
use crate::api::DeploymentView;
use crate::store::{DeploymentOutcome, EventRecord};

/// How often a follower that is not on a terminal prints the watch line, in the
/// daemon's time (CI logs get the real request counts at a steady cadence).
pub const WATCH_LINE_EVERY_MS: i64 = 5_000;

/// How long the follower keeps trying to reconnect to a daemon that went away.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// Follows deployment `id` to its end; prints progress unless `json` (then only the
/// final record). Exit 0 only when it succeeded.
pub async fn follow(c: &ApiClient, id: i64, json: bool) -> Result<ExitCode, ClientError> {
    follow_as(c, id, json, false).await
}

/// [`follow`] printing nothing at all (`-q`: the exit code says how it ended).
pub async fn follow_quietly(c: &ApiClient, id: i64) -> Result<ExitCode, ClientError> {
    follow_as(c, id, false, true).await
}

async fn follow_as(
    c: &ApiClient,
    id: i64,
    json: bool,
    quiet: bool,
) -> Result<ExitCode, ClientError> {
    let tty = std::io::stdout().is_terminal() && !json && !quiet;
    let mut out = Printer::new(tty, !json && !quiet);
    let mut last = None;
    let mut gone_since: Option<Instant> = None;
    let path = format!("/api/v1/events?deployment={id}");
    loop {
        match c.events(&path, last).await {
            Ok(mut stream) => {
                gone_since = None;
                // Ends when the daemon closes the stream or it breaks: reconnect.
                while let Ok(Some(e)) = stream.next().await {
                    last = Some(e.id);
                    out.event(&e);
                    if e.is_final() {
                        return finish(c, id, json, quiet, tty).await;
                    }
                }
            }
            Err(e @ ClientError::Api { .. }) => return Err(e),
            Err(e) => {
                if gone_since.get_or_insert_with(Instant::now).elapsed() > RECONNECT_FOR {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn finish(
    c: &ApiClient,
    id: i64,
    json: bool,
    quiet: bool,
    tty: bool,
) -> Result<ExitCode, ClientError> {
    let view: DeploymentView = c.get(&format!("/api/v1/deployments/{id}")).await?;
    let d = &view.deployment;
    if tty {
        println!();
    }
    if quiet {
    } else if json {
        println!("{}", serde_json::to_string_pretty(d).unwrap_or_default());
    } else {
        let outcome = d.outcome.map(|o| o.as_str()).unwrap_or("unknown");
        let reason = d.reason.clone().unwrap_or_default();
        println!("{} #{}: {outcome} — {reason}", d.service, d.id);
    }
    Ok(if d.outcome == Some(DeploymentOutcome::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Turns events into lines.
struct Printer {
    tty: bool,
    enabled: bool,
    /// Repeated identical check results (a health round every second) print once.
    seen_checks: HashSet<(String, bool, String)>,
    /// When the last watch line was printed (non-terminal), in the daemon's time.
    last_watch_line: Option<i64>,
    /// A watch line is on screen (terminal) and must be cleared before the next line.
    watch_on_screen: bool,
}

impl Printer {
    fn new(tty: bool, enabled: bool) -> Self {
        Self {
            tty,
            enabled,
            seen_checks: HashSet::new(),
            last_watch_line: None,
            watch_on_screen: false,
        }
    }

    fn event(&mut self, e: &EventRecord) {
        if !self.enabled {
            return;
        }
        if e.kind == "watch" {
            self.watch(e);
            return;
        }
        if let Some(line) = self.line(e) {
            if self.watch_on_screen {
                print!("\r\x1b[2K");
                self.watch_on_screen = false;
            }
            println!("{line}");
        }
    }

    /// The line an event prints as, if any.
    fn line(&mut self, e: &EventRecord) -> Option<String> {
        let data = e.data.as_ref();
        let field = |k: &str| data.and_then(|d| d.get(k));
        let text = |k: &str| field(k).and_then(|v| v.as_str()).unwrap_or_default();
        match e.kind.as_str() {
            "phase" => Some(format!("→ {}", e.message)),
            "check" => {
                let ok = field("ok").and_then(|v| v.as_bool()).unwrap_or(false);
                let key = (text("name").to_string(), ok, text("detail").to_string());
                if !self.seen_checks.insert(key) {
                    return None;
                }
                let ms = field("duration_ms").and_then(|v| v.as_u64()).unwrap_or(0);
                // A hook's output follows its status on lines of its own.
                let detail = text("detail").replace('\n', "\n      ");
                Some(format!(
                    "  {} {} {}: {detail} ({ms} ms)",
                    if ok { "✓" } else { "✗" },
                    text("phase"),
                    text("name"),
                ))
            }
            "measurement" => {
                let mark = match text("verdict") {
                    "pass" => "✓",
                    "fail" => "✗",
                    _ => "?",
                };
                Some(format!("  {mark} {}", e.message))
            }
            "deployment" => Some(format!("  · {}", e.message)),
            // The start is printed by the command; the end by `finish`.
            _ => None,
        }
    }

    fn watch(&mut self, e: &EventRecord) {
        let left = e
            .data
            .as_ref()
            .and_then(|d| d["left_ms"].as_i64())
            .map(|ms| format!("{:.0}s left · ", (ms.max(0) as f64 / 1000.0).ceil()))
            .unwrap_or_default();
        let line = format!("  watching: {left}{}", e.message);
        if self.tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
            self.watch_on_screen = true;
        } else if self
            .last_watch_line
            .is_none_or(|t| e.at - t >= WATCH_LINE_EVERY_MS)
        {
            println!("{line}");
            self.last_watch_line = Some(e.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, message: &str, data: serde_json::Value) -> EventRecord {
        EventRecord {
            id: 1,
            at: 0,
            service: "web".into(),
            deployment_id: Some(1),
            kind: kind.into(),
            message: message.into(),
            data: Some(data),
        }
    }

    #[test]
    fn a_repeated_health_result_prints_once_and_a_changed_one_again() {
        let mut p = Printer::new(false, true);
        let check = |ok: bool, detail: &str| {
            event(
                "check",
                "",
                serde_json::json!({"phase": "wait_healthy", "name": "http /health", "ok": ok,
                                   "detail": detail, "duration_ms": 3, "at": 0}),
            )
        };
        assert_eq!(
            p.line(&check(false, "connection refused")).as_deref(),
            Some("  ✗ wait_healthy http /health: connection refused (3 ms)")
        );
        assert_eq!(p.line(&check(false, "connection refused")), None);
        assert!(p.line(&check(true, "200")).is_some());
    }

    #[test]
    fn phases_and_log_lines_print_and_start_events_do_not() {
        let mut p = Printer::new(false, true);
        let phase = event("phase", "switch", serde_json::json!({"phase": "switch"}));
        assert_eq!(p.line(&phase).as_deref(), Some("→ switch"));
        let log = event(
            "deployment",
            "traffic switched to green",
            serde_json::json!(null),
        );
        assert_eq!(
            p.line(&log).as_deref(),
            Some("  · traffic switched to green")
        );
        let start = event("deploy_started", "deploying v2", serde_json::json!({}));
        assert_eq!(p.line(&start), None);
    }
}
