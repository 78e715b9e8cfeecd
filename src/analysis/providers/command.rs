//! A command as a metric: exit 0 passes, anything else fails; with `numeric`, its
//! stdout is the value instead (and a non-zero exit is an error: there is no value).
//!
//! The child is killed when the call times out (`kill_on_drop`), so a hung script
//! cannot pile up across rounds.

use std::process::Stdio;

use tokio::process::Command;

use super::super::judge::{judge, Baseline};
use super::super::{MeasureContext, Measurement, Verdict};
use super::{call_timeout, error, substitute, verdict};
use crate::config::MetricConfig;

pub(super) async fn measure(
    metric: &MetricConfig,
    argv: &[String],
    numeric: bool,
    ctx: &MeasureContext,
) -> Measurement {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| substitute(a, ctx, ctx.canary))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return error(metric, "empty command");
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("CUTOVER_SERVICE", &ctx.service)
        .env("CUTOVER_VERSION", &ctx.version)
        .env("CUTOVER_SLOT", ctx.canary.as_str());
    let timeout = call_timeout(ctx);
    let output = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => {
            return error(
                metric,
                format!(
                    "`{program}` timed out after {}",
                    humantime::format_duration(timeout)
                ),
            )
        }
        Ok(Err(e)) => return error(metric, format!("cannot run `{program}`: {e}")),
        Ok(Ok(out)) => out,
    };
    let exit = match output.status.code() {
        Some(c) => format!("exited with {c}"),
        None => "was killed by a signal".to_string(),
    };
    let said = last_line(&output.stderr).or_else(|| last_line(&output.stdout));
    let said = said.map(|l| format!(": {l}")).unwrap_or_default();
    if !numeric {
        return if output.status.success() {
            verdict(metric, Verdict::Pass, format!("`{program}` exited with 0"))
        } else {
            verdict(metric, Verdict::Fail, format!("`{program}` {exit}{said}"))
        };
    }
    if !output.status.success() {
        return error(metric, format!("`{program}` {exit}{said}"));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().parse::<f64>() {
        Ok(v) if !v.is_nan() => judge(metric, v, Baseline::NotCompared),
        _ => error(
            metric,
            format!("`{program}` printed {:?}, expected a number", text.trim()),
        ),
    }
}

/// The last non-empty line, shortened, for the detail.
fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}
