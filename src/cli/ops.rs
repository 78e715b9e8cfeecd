//! `cutover plan` / `deploy --dry-run` (what a deploy would do, from the daemon's own
//! decision logic) and `cutover logs` (a slot's release output).

use std::process::ExitCode;

use serde_json::{json, Value};

use super::output::{json_out, mode, say};
use crate::api::client::{ApiClient, ClientError};
use crate::domain::Slot;

pub async fn plan(c: &ApiClient, service: &str, version: &str) -> Result<ExitCode, ClientError> {
    let p: Value = c
        .post(
            &format!("/api/v1/services/{service}/plan"),
            json!({ "version": version }),
        )
        .await?;
    if mode().json {
        json_out(&p);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    say!(
        "plan: deploy {service} {version}{} (dry run, nothing changes)",
        p["environment"]
            .as_str()
            .map(|e| format!(" [{e}]"))
            .unwrap_or_default()
    );
    if let Some(id) = p["blocked_by"].as_i64() {
        say!("  ! deployment #{id} is in progress: a deploy now would be refused");
    }
    let now = &p["target_now"];
    say!(
        "  slot:     {} (now {} {})",
        s(&p["target_slot"]),
        now["state"].as_str().unwrap_or("?"),
        now["version"].as_str().unwrap_or("-")
    );
    say!(
        "  replaces: {}",
        match (p["from_slot"].as_str(), p["replaces_version"].as_str()) {
            (Some(slot), Some(v)) => format!("{v} on {slot}"),
            _ => "nothing (first deploy)".into(),
        }
    );
    let h = &p["health"];
    let checks: Vec<String> = h["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} ({})", s(&c["name"]), s(&c["probe"])))
        .collect();
    say!(
        "  health:   {} — {} healthy rounds within {}",
        checks.join(", "),
        h["healthy_threshold"],
        dur(&h["deadline_ms"])
    );
    let smoke: Vec<String> = p["smoke"]
        .as_array()
        .into_iter()
        .flatten()
        .map(&s)
        .collect();
    say!(
        "  smoke:    {}",
        if smoke.is_empty() {
            "none".into()
        } else {
            smoke.join(", ")
        }
    );
    say!("  strategy: {}", s(&p["strategy"]["kind"]));
    say!(
        "  router:   {} — {}",
        s(&p["router"]["kind"]),
        s(&p["router"]["change"])
    );
    if let Some(w) = p["watch"].as_object() {
        say!("  watch:    {}, rolls back when:", dur(&w["duration_ms"]));
        for t in w["triggers"].as_array().into_iter().flatten() {
            say!("              {}", s(t));
        }
    }
    for h in p["hooks"].as_array().into_iter().flatten() {
        let names: Vec<String> = h["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{} ({})", s(&x["name"]), s(&x["kind"])))
            .collect();
        say!("  hooks {}: {}", s(&h["at"]), names.join(", "));
    }
    let db = &p["database"];
    if !db.is_null() {
        match db["error"].as_str() {
            Some(e) => say!("  database: {} — {e}", s(&db["database"])),
            None => say!(
                "  database: {} pending: {} — gate {}",
                s(&db["database"]),
                db["pending"]
                    .as_array()
                    .map(|a| a.iter().map(&s).collect::<Vec<_>>().join(", "))
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "none".into()),
                if db["gate"]["passed"].as_bool().unwrap_or(true) {
                    "passes".to_string()
                } else {
                    format!("REFUSES: {}", s(&db["gate"]["reason"]))
                }
            ),
        }
    }
    say!("  steps:");
    for (i, step) in p["steps"].as_array().into_iter().flatten().enumerate() {
        say!("    {}. {}", i + 1, s(step));
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds as `1m 30s`.
fn dur(ms: &Value) -> String {
    let d = std::time::Duration::from_millis(ms.as_u64().unwrap_or_default());
    humantime::format_duration(d).to_string()
}

pub async fn logs(
    c: &ApiClient,
    service: &str,
    slot: Option<Slot>,
    lines: usize,
    follow: bool,
) -> Result<ExitCode, ClientError> {
    let mut path = format!("/api/v1/services/{service}/logs?lines={lines}");
    if let Some(s) = slot {
        path.push_str(&format!("&slot={s}"));
    }
    if !follow {
        let v: Value = c.get(&path).await?;
        if mode().json {
            json_out(&v);
        } else {
            for l in v["lines"].as_array().into_iter().flatten() {
                say!("{}", l.as_str().unwrap_or_default());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    path.push_str("&follow=true");
    let mut stream = c.lines(&path).await?;
    while let Some(line) = stream.next().await? {
        if mode().json {
            // Newline-delimited JSON, as the daemon sends it: one string a line.
            if !mode().quiet {
                println!("{line}");
            }
        } else {
            let text: String = serde_json::from_str(&line).unwrap_or(line);
            say!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
