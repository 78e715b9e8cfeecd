//! An HTTP webhook as a gate (like Flagger's confirm-promotion): 2xx passes, any other
//! status keeps the gate closed, which holds the step (the gate is asked again every
//! interval, and the step goes on once it answers 2xx); a webhook that cannot be reached is
//! an `Error`, so a flapping CI server does not fail a release on its own
//! (`consecutive_error_limit`). With `json_value`, a number read from the JSON answer is
//! judged against the ranges instead.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::http::request;
use super::super::judge::{judge, Baseline};
use super::super::{MeasureContext, Measurement, Verdict, GATE_CLOSED};
use super::{call_timeout, error, substitute, verdict};
use crate::checks::json_path;
use crate::config::MetricConfig;

pub(super) struct Gate<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Option<&'a str>,
    pub json_value: Option<&'a str>,
    pub tls: &'a crate::tls::ClientTls,
}

pub(super) async fn measure(
    metric: &MetricConfig,
    gate: Gate<'_>,
    ctx: &MeasureContext,
) -> Measurement {
    let url = substitute(gate.url, ctx, ctx.canary);
    let body = gate
        .body
        .map(|b| Bytes::from(substitute(b, ctx, ctx.canary)));
    let resp = match request(
        gate.method,
        &url,
        gate.headers,
        body,
        gate.tls,
        call_timeout(ctx),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error(metric, format!("{} {url}: {e}", gate.method)),
    };
    let status = resp.status_line();
    if !resp.status.is_success() {
        return verdict(
            metric,
            Verdict::Inconclusive,
            format!("{GATE_CLOSED}: {} {url} answered {status}", gate.method),
        );
    }
    let Some(path) = gate.json_value else {
        return verdict(
            metric,
            Verdict::Pass,
            format!("{} {url} answered {status}", gate.method),
        );
    };
    let json: serde_json::Value = match serde_json::from_slice(&resp.body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                metric,
                format!("{url} answered {status} with a body that is not JSON"),
            )
        }
    };
    let value = json_path::get(&json, path).and_then(|v| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    match value {
        Some(v) => judge(metric, v, Baseline::NotCompared),
        None => error(
            metric,
            format!("{url}: no number at `{path}` in the answer"),
        ),
    }
}
