//! A Prometheus instant query (`GET {address}/api/v1/query?query=...`): the first
//! sample of a vector, or a scalar, judged against the metric's ranges.
//!
//! An empty result or a NaN is an `Error`, not a pass: "no data" from a metrics system
//! usually means a wrong query or a target not scraped yet, and a gate that passes on
//! that would pass anything. With `max_increase_over_stable` the query runs twice, with
//! `{slot}` set to the new slot and then to the stable one.

use crate::tls::ClientTls;
use std::collections::BTreeMap;

use serde_json::Value;

use super::super::http::{encode_query_value, request};
use super::super::judge::{judge, Baseline};
use super::super::{MeasureContext, Measurement};
use super::{call_timeout, error, substitute};
use crate::config::MetricConfig;

pub(super) async fn measure(
    metric: &MetricConfig,
    address: &str,
    query: &str,
    tls: &ClientTls,
    ctx: &MeasureContext,
) -> Measurement {
    let value = match instant_query(address, &substitute(query, ctx, ctx.canary), tls, ctx).await {
        Ok(v) => v,
        Err(e) => return error(metric, e),
    };
    let baseline = match (metric.max_increase_over_stable, ctx.stable) {
        (None, _) => Baseline::NotCompared,
        (Some(_), None) => Baseline::Missing("no stable slot"),
        (Some(_), Some(stable)) => {
            match instant_query(address, &substitute(query, ctx, stable), tls, ctx).await {
                Ok(v) => Baseline::Value(v),
                Err(e) => return error(metric, format!("stable slot ({}): {e}", stable.as_str())),
            }
        }
    };
    judge(metric, value, baseline)
}

/// Runs `query` and returns its value, or one line saying why there is none.
async fn instant_query(
    address: &str,
    query: &str,
    tls: &ClientTls,
    ctx: &MeasureContext,
) -> Result<f64, String> {
    let url = format!(
        "{}/api/v1/query?query={}",
        address.trim_end_matches('/'),
        encode_query_value(query)
    );
    let resp = request("GET", &url, &BTreeMap::new(), None, tls, call_timeout(ctx))
        .await
        .map_err(|e| format!("Prometheus at {address}: {e}"))?;
    let body: Value = serde_json::from_slice(&resp.body).map_err(|_| {
        format!(
            "Prometheus at {address} answered {} with a body that is not JSON",
            resp.status_line()
        )
    })?;
    if !resp.status.is_success() || body["status"] != "success" {
        let why = body["error"].as_str().unwrap_or("no error message");
        return Err(format!(
            "Prometheus query failed ({}): {why}",
            resp.status_line()
        ));
    }
    sample_value(&body["data"]).map_err(|e| format!("query `{query}`: {e}"))
}

/// The value of the first sample of a `vector` (or the `scalar`) in `data`.
fn sample_value(data: &Value) -> Result<f64, String> {
    let pair = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array().and_then(|r| r.first()) {
            Some(first) => &first["value"],
            None => return Err("returned no samples (empty vector)".into()),
        },
        Some("scalar") => &data["result"],
        Some(other) => return Err(format!("returned a {other}, expected a vector or a scalar")),
        None => return Err("answer has no resultType".into()),
    };
    let text = pair
        .get(1)
        .and_then(Value::as_str)
        .ok_or("sample has no value")?;
    let v: f64 = text
        .parse()
        .map_err(|_| format!("sample value {text:?} is not a number"))?;
    if v.is_nan() {
        return Err("returned NaN (no data for the expression)".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_sample_of_a_vector_or_a_scalar_is_the_value() {
        let vector = json!({"resultType": "vector", "result": [
            {"metric": {"slot": "green"}, "value": [1700000000.1, "0.25"]},
            {"metric": {"slot": "blue"}, "value": [1700000000.1, "9"]}
        ]});
        assert_eq!(sample_value(&vector), Ok(0.25));
        let scalar = json!({"resultType": "scalar", "result": [1700000000.1, "3"]});
        assert_eq!(sample_value(&scalar), Ok(3.0));
    }

    #[test]
    fn no_sample_nan_or_a_matrix_is_an_error() {
        let empty = json!({"resultType": "vector", "result": []});
        assert_eq!(
            sample_value(&empty),
            Err("returned no samples (empty vector)".to_string())
        );
        let nan = json!({"resultType": "scalar", "result": [1.0, "NaN"]});
        assert!(sample_value(&nan).unwrap_err().contains("NaN"));
        let matrix = json!({"resultType": "matrix", "result": []});
        assert!(sample_value(&matrix).unwrap_err().contains("matrix"));
    }
}
