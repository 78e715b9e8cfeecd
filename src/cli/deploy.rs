//! `deploy`, `rollback` and `abort`: start the operation through the API, then follow
//! the deployment record until it finishes, printing phases, check results and the
//! watch countdown. Exit 0 only when the release is live and settled.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::client::{ApiClient, ClientError};
use crate::api::DeploymentView;
use crate::domain::now_ms;
use crate::store::{DeploymentKind, DeploymentOutcome};

pub async fn deploy(
    c: &ApiClient,
    service: &str,
    version: &str,
    no_wait: bool,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let body = json!({ "version": version, "triggered_by": actor() });
    let started: Value = c
        .post(&format!("/api/v1/services/{service}/deploy"), body)
        .await?;
    let id = started["deployment_id"].as_i64().unwrap_or_default();
    if !json {
        println!("deployment #{id}: {service} {version}");
    }
    if no_wait {
        if json {
            println!("{started}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(c, id, json).await
}

pub async fn rollback(
    c: &ApiClient,
    service: &str,
    no_wait: bool,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let started: Value = c
        .post(
            &format!("/api/v1/services/{service}/rollback"),
            json!({ "triggered_by": actor() }),
        )
        .await?;
    let id = started["deployment_id"].as_i64().unwrap_or_default();
    if !json {
        println!("rolling back {service} (deployment #{id})");
    }
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let code = follow(c, id, json).await?;
    // A rollback requested during a watch ends that deployment as `rolled_back`: that
    // is the rollback succeeding.
    let view: DeploymentView = c.get(&format!("/api/v1/deployments/{id}")).await?;
    let ok = match (view.deployment.kind, view.deployment.outcome) {
        (DeploymentKind::Rollback, Some(DeploymentOutcome::Succeeded)) => true,
        (DeploymentKind::Deploy, Some(DeploymentOutcome::RolledBack)) => true,
        _ => code == ExitCode::SUCCESS,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn abort(c: &ApiClient, service: &str) -> Result<ExitCode, ClientError> {
    let v: Value = c
        .post(
            &format!("/api/v1/services/{service}/abort"),
            json!({ "triggered_by": actor() }),
        )
        .await?;
    println!("abort requested for deployment #{}", v["deployment_id"]);
    Ok(ExitCode::SUCCESS)
}

/// `promote`, `pause` or `resume` of a canary in progress.
pub async fn canary_action(
    c: &ApiClient,
    service: &str,
    action: &str,
    full: bool,
) -> Result<ExitCode, ClientError> {
    let mut body = json!({ "triggered_by": actor() });
    if full {
        body["full"] = json!(true);
    }
    let v: Value = c
        .post(&format!("/api/v1/services/{service}/{action}"), body)
        .await?;
    let what = match (action, full) {
        ("promote", true) => "promote to 100%",
        (a, _) => a,
    };
    println!("{what} requested for deployment #{}", v["deployment_id"]);
    Ok(ExitCode::SUCCESS)
}

fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Polls the deployment until it finishes; prints progress unless `json`.
pub async fn follow(c: &ApiClient, id: i64, json: bool) -> Result<ExitCode, ClientError> {
    let tty = std::io::stdout().is_terminal() && !json;
    let mut printed_phases = 0;
    let mut printed_checks = 0;
    let mut printed_measurements = 0;
    let mut last_hold: Option<String> = None;
    let mut last_line: HashSet<(String, bool, String)> = HashSet::new();
    let mut last_watch_print = 0i64;
    loop {
        let view: DeploymentView = c.get(&format!("/api/v1/deployments/{id}")).await?;
        let d = &view.deployment;
        if !json {
            // Phases and check results in the order they happened.
            let mut lines: Vec<(i64, String)> = Vec::new();
            for p in d.phases.iter().skip(printed_phases) {
                lines.push((p.started_at, format!("→ {}", p.phase)));
            }
            printed_phases = d.phases.len();
            for ch in d.checks.iter().skip(printed_checks) {
                // Repeated identical health rounds are shown once.
                if last_line.insert((ch.name.clone(), ch.ok, ch.detail.clone())) {
                    let mark = if ch.ok { "✓" } else { "✗" };
                    // A hook's output follows its status on lines of its own.
                    let detail = ch.detail.replace('\n', "\n      ");
                    let line = format!(
                        "  {mark} {} {}: {detail} ({} ms)",
                        ch.phase, ch.name, ch.duration_ms
                    );
                    lines.push((ch.at, line));
                }
            }
            printed_checks = d.checks.len();
            for m in d.measurements.iter().skip(printed_measurements) {
                let mark = match m.verdict.as_str() {
                    "pass" => "✓",
                    "fail" => "✗",
                    _ => "?",
                };
                lines.push((
                    m.at,
                    format!(
                        "  {mark} {} {}: {} ({})",
                        m.phase, m.metric, m.detail, m.verdict
                    ),
                ));
            }
            printed_measurements = d.measurements.len();
            lines.sort_by_key(|(at, _)| *at);
            for (_, line) in lines {
                if tty {
                    print!("\r\x1b[2K");
                }
                println!("{line}");
            }
            if let Some(p) = &view.progress {
                let hold = p["canary"]["held"].as_str().map(str::to_string);
                if hold.is_some() && hold != last_hold {
                    println!("  ⏸ {}", hold.as_deref().unwrap_or_default());
                }
                last_hold = hold;
                if let Some(ends) = p["watch_ends_at"].as_i64() {
                    let left = ((ends - now_ms()).max(0) as f64 / 1000.0).ceil();
                    let w = &p["window"];
                    let line = format!(
                        "  watching: {left:.0}s left · {} requests · {:.1}% errors · p95 {}",
                        w["requests"].as_u64().unwrap_or(0),
                        w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                        w["p95_ms"]
                            .as_u64()
                            .map(|ms| format!("≤{ms}ms"))
                            .unwrap_or_else(|| "-".into()),
                    );
                    if tty {
                        print!("\r\x1b[2K{line}");
                        use std::io::Write;
                        let _ = std::io::stdout().flush();
                    } else if now_ms() - last_watch_print >= 5000 {
                        println!("{line}");
                        last_watch_print = now_ms();
                    }
                }
            }
        }
        if let Some(outcome) = d.outcome {
            if tty {
                println!();
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view.deployment).unwrap_or_default()
                );
            } else {
                let reason = d.reason.clone().unwrap_or_default();
                println!("{} #{}: {} — {}", d.service, d.id, outcome.as_str(), reason);
            }
            let ok = outcome == DeploymentOutcome::Succeeded;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
