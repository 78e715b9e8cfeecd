//! `status`, `history` and `check`: read-only views, as text for people or as the
//! API's JSON (`--json`, stable) for scripts.

use std::process::ExitCode;

use serde_json::Value;

use crate::api::client::{ApiClient, ClientError};
use crate::api::ServiceStatus;
use crate::domain::{format_ms, Slot};
use crate::store::DeploymentRecord;

/// `println!` for text meant for a terminal: the values it shows (versions, reasons,
/// who triggered what, check details) come from API callers and apps, and a control
/// character in them (an escape sequence) must not reach the terminal.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", printable(&format!($($arg)*)))
    };
}

/// `text` without control characters.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().filter(|c| !c.is_control()).collect()
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

pub async fn status(
    c: &ApiClient,
    service: Option<&str>,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let services: Vec<ServiceStatus> = match service {
        Some(s) => vec![c.get(&format!("/api/v1/services/{s}")).await?],
        None => c.get("/api/v1/services").await?,
    };
    if json {
        let v = match service {
            Some(_) => serde_json::to_value(&services[0]),
            None => serde_json::to_value(&services),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&v.unwrap_or_default()).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for s in &services {
        let live = match (s.live, &s.live_version) {
            (Some(slot), Some(v)) => format!("{slot} ({v})"),
            (Some(slot), None) => slot.to_string(),
            _ => "none".into(),
        };
        let via = match &s.listen {
            Some(addr) => format!("listen {addr}"),
            None => format!("via {}", s.router),
        };
        say!("{}  {via}  live: {}", s.name, live);
        if s.drift {
            say!(
                "  ! drift: the router sends traffic to {} but the store says {}",
                opt_slot(s.observed_live),
                opt_slot(s.live)
            );
        }
        for v in &s.slots {
            say!(
                "  {:<6} {:<8} {:<12} {:<22} {:<11} requests {} errors {}",
                v.record.slot.as_str(),
                v.record.state.as_str(),
                v.record.version.as_deref().unwrap_or("-"),
                v.record.addr.as_deref().unwrap_or("-"),
                if v.running { "running" } else { "not running" },
                v.requests,
                v.errors,
            );
        }
        for c in &s.tls_certificates {
            let left = c.not_after - now_unix();
            say!(
                "  tls {} ({}) expires in {}d{}",
                c.name,
                c.source,
                left.div_euclid(86_400),
                c.error
                    .as_deref()
                    .map(|e| format!(" — reload failed, serving the previous one: {e}"))
                    .unwrap_or_default()
            );
        }
        if let Some(d) = &s.active_deployment {
            let phase = s
                .progress
                .as_ref()
                .and_then(|p| p["phase"].as_str().map(str::to_string))
                .unwrap_or(d.phase.clone());
            say!(
                "  deployment #{} in progress: {} {} → {}, phase {}",
                d.id,
                kind(d),
                d.version,
                d.target_slot,
                phase
            );
            if let Some(c) = s
                .progress
                .as_ref()
                .map(|p| &p["canary"])
                .filter(|c| !c.is_null())
            {
                if let Some(step) = c["step"].as_u64() {
                    say!(
                        "  canary step {step}/{}: {}% of traffic on {}{}",
                        c["steps"],
                        c["weight"],
                        d.target_slot,
                        c["held"]
                            .as_str()
                            .map(|h| format!(" — held: {h}"))
                            .unwrap_or_default()
                    );
                }
                for m in c["analysis"].as_array().into_iter().flatten() {
                    say!(
                        "    {} {}: {}",
                        m["verdict"].as_str().unwrap_or("?"),
                        m["metric"].as_str().unwrap_or("?"),
                        m["detail"].as_str().unwrap_or("")
                    );
                }
            }
        }
        if let Some(d) = &s.last_deployment {
            say!(
                "  last: #{} {} {} {} — {}",
                d.id,
                kind(d),
                d.version,
                outcome(d),
                d.reason.as_deref().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn opt_slot(s: Option<Slot>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "nothing".into())
}

fn kind(d: &DeploymentRecord) -> &'static str {
    match d.kind {
        crate::store::DeploymentKind::Deploy => "deploy",
        crate::store::DeploymentKind::Rollback => "rollback",
    }
}

fn outcome(d: &DeploymentRecord) -> &'static str {
    d.outcome.map(|o| o.as_str()).unwrap_or("in progress")
}

pub async fn history(
    c: &ApiClient,
    service: &str,
    limit: usize,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let list: Vec<DeploymentRecord> = c
        .get(&format!("/api/v1/services/{service}/history?limit={limit}"))
        .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{:<5} {:<9} {:<12} {:<15} {:<12} {:<21} {:>8}  reason",
        "id",
        "kind",
        "version",
        "slots",
        "outcome",
        "started",
        "took"
    );
    for d in &list {
        let slots = match d.from_slot {
            Some(f) => format!("{f} → {}", d.target_slot),
            None => format!("→ {}", d.target_slot),
        };
        let took = d
            .finished_at
            .map(|f| format!("{:.1}s", (f - d.started_at) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        say!(
            "{:<5} {:<9} {:<12} {:<15} {:<12} {:<21} {:>8}  {}",
            d.id,
            kind(d),
            d.version,
            slots,
            outcome(d),
            format_ms(d.started_at),
            took,
            d.reason.as_deref().unwrap_or("")
        );
        let phases: Vec<String> = d
            .phases
            .iter()
            .map(|p| match p.ended_at {
                Some(e) => format!("{} {:.1}s", p.phase, (e - p.started_at) as f64 / 1000.0),
                None => format!("{} …", p.phase),
            })
            .collect();
        say!("      phases: {}", phases.join(" · "));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(
    c: &ApiClient,
    service: &str,
    slot: Slot,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let report: Value = c
        .post(
            &format!("/api/v1/services/{service}/check?slot={slot}"),
            Value::Null,
        )
        .await?;
    let healthy = report["healthy"].as_bool().unwrap_or(false);
    let smoke_ok = report["smoke"]["passed"].as_bool().unwrap_or(false);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        say!(
            "{service} {slot} ({}) at {}",
            report["version"].as_str().unwrap_or("-"),
            report["addr"].as_str().unwrap_or("-")
        );
        say!("health:");
        for r in report["health"].as_array().into_iter().flatten() {
            print_result(r);
        }
        say!("smoke:");
        for r in report["smoke"]["results"].as_array().into_iter().flatten() {
            print_result(r);
        }
        if let Some(f) = report["smoke"]["failure"].as_str() {
            say!("  ✗ {f}");
        }
        say!(
            "{}",
            if healthy && smoke_ok {
                "all checks passed"
            } else {
                "checks FAILED"
            }
        );
    }
    Ok(if healthy && smoke_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_result(r: &Value) {
    let mark = if r["ok"].as_bool().unwrap_or(false) {
        "✓"
    } else {
        "✗"
    };
    say!(
        "  {mark} {}: {} ({} ms)",
        r["name"].as_str().unwrap_or("?"),
        r["detail"].as_str().unwrap_or(""),
        r["duration_ms"]
    );
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(super::printable("ci\u{1b}[2J\u{7}bot\r\n"), "ci[2Jbot");
        assert_eq!(super::printable("plain · text"), "plain · text");
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
