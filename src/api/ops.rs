//! `POST /api/v1/services/{name}/plan` (what a deploy would do, changing nothing) and
//! `GET /api/v1/services/{name}/logs` (a slot's release output, optionally followed).
//!
//! Both need the bearer token even for reads: a plan shows hook and check details, and
//! a release's output may carry anything the app printed.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::routing::{get, post};

use super::routes::{json_answer, Access, Param, Route, NAME};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{authorize, known, parse_json, validate_version, ApiError, ApiState};
use crate::domain::Slot;

/// Most lines one `logs` answer returns.
pub const MAX_LOG_LINES: usize = 10_000;
/// Lines of a `logs` answer when `lines` is not given.
pub const DEFAULT_LOG_LINES: usize = 100;
/// How often a followed log is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The routes of this file, listed in the API's route table (`routes.rs`).
pub(super) fn table() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            path: "/api/v1/services/{name}/plan",
            operation_id: "plan",
            summary: "What deploying a version would do now (slot, checks, steps, router, hooks, migrations); changes nothing.",
            access: Access::Write,
            params: &[NAME],
            body: Some(("PlanBody", true)),
            answer: json_answer(200, "Plan", "The decisions the deploy would take."),
            handler: post(plan),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/services/{name}/logs",
            operation_id: "logs",
            summary: "The last lines a slot's release printed; with `follow`, then new lines as newline-delimited JSON strings.",
            access: Access::Write,
            params: &[
                NAME,
                Param {
                    name: "slot",
                    in_path: false,
                    schema: r#"{"type": "string", "enum": ["blue", "green"]}"#,
                    description: "The slot (default: the live one, else blue).",
                },
                Param {
                    name: "lines",
                    in_path: false,
                    schema: r#"{"type": "integer", "minimum": 1, "maximum": 10000}"#,
                    description: "How many of the last lines (default 100).",
                },
                Param {
                    name: "follow",
                    in_path: false,
                    schema: r#"{"type": "boolean"}"#,
                    description: "Keep the answer open and stream new lines (application/x-ndjson).",
                },
            ],
            body: None,
            answer: json_answer(200, "SlotLogs", "The slot's last lines (without `follow`)."),
            handler: get(logs),
        },
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    version: String,
}

pub(super) async fn plan(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let body: PlanBody = parse_json(&body, true)?;
    validate_version(&body.version)?;
    Ok(Json(s.controller.dry_run(&name, &body.version).await?))
}

#[derive(Deserialize)]
pub(super) struct LogsQuery {
    slot: Option<String>,
    lines: Option<String>,
    follow: Option<String>,
}

/// The slot asked for, else the live one, else blue.
async fn log_slot(s: &ApiState, name: &str, slot: Option<&str>) -> Result<Slot, ApiError> {
    match slot {
        Some(v) => v
            .parse()
            .map_err(|e: String| ApiError::bad_request(format!("slot: {e}"))),
        None => Ok(s
            .controller
            .store()
            .service(name)?
            .live
            .unwrap_or(Slot::Blue)),
    }
}

pub(super) async fn logs(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let slot = log_slot(&s, &name, q.slot.as_deref()).await?;
    let lines = match q.lines.as_deref() {
        None => DEFAULT_LOG_LINES,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LOG_LINES).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "lines: expected a number from 1 to {MAX_LOG_LINES}, got `{v}`"
                ))
            })?,
    };
    let follow = match q.follow.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "follow: expected true or false, got `{v}`"
            )))
        }
    };
    let tail = s.controller.slot_logs(&name, slot, lines).await?;
    if !follow {
        return Ok(
            Json(serde_json::json!({ "service": name, "slot": slot, "lines": tail }))
                .into_response(),
        );
    }
    // Followed: the tail, then new lines as they appear, one JSON string a line
    // (newline-delimited JSON), until the client hangs up or the daemon stops.
    let mut stop = s.stop.clone();
    let controller = s.controller.clone();
    let stream = async_stream_lines(
        tail,
        move |prev| {
            let controller = controller.clone();
            let name = name.clone();
            async move {
                let now = controller
                    .slot_logs(&name, slot, MAX_LOG_LINES)
                    .await
                    .unwrap_or_default();
                let fresh = new_lines(&prev, &now);
                (now, fresh)
            }
        },
        async move {
            let _ = stop.wait_for(|v| *v).await;
        },
    );
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot build the log stream",
            )
            .into_response()
        }))
}

/// A stream of NDJSON lines: `first`, then whatever `poll` finds new every
/// [`FOLLOW_EVERY`], until `stop` completes.
fn async_stream_lines<F, Fut>(
    first: Vec<String>,
    poll: F,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send
where
    F: Fn(Vec<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (Vec<String>, Vec<String>)> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        tokio::pin!(stop);
        let encode = |l: &str| Bytes::from(format!("{}\n", serde_json::json!(l)));
        for l in &first {
            if tx.send(encode(l)).await.is_err() {
                return;
            }
        }
        let mut prev = first;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            }
            if tx.is_closed() {
                return;
            }
            let (now, fresh) = poll(prev).await;
            for l in &fresh {
                if tx.send(encode(l)).await.is_err() {
                    return;
                }
            }
            prev = now;
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// The lines of `now` that `prev` did not have. Both are the end of the same growing
/// log, so `now` is a suffix of `prev` followed by the new lines: the largest overlap
/// wins (a repeated line is matched with its context). A log that started over
/// (rotated, truncated) overlaps nothing and is all new.
pub fn new_lines(prev: &[String], now: &[String]) -> Vec<String> {
    for k in (1..=prev.len().min(now.len())).rev() {
        if prev[prev.len() - k..] == now[..k] {
            return now[k..].to_vec();
        }
    }
    now.to_vec()
}

#[cfg(test)]
mod tests {
    use super::new_lines;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn only_the_lines_after_what_was_seen_are_new() {
        assert_eq!(new_lines(&v(&["a", "b"]), &v(&["a", "b", "c"])), v(&["c"]));
        assert_eq!(
            new_lines(&v(&["a", "b"]), &v(&["b", "c", "d"])),
            v(&["c", "d"])
        );
        assert_eq!(new_lines(&v(&["a", "b"]), &v(&["a", "b"])), v(&[]));
        assert_eq!(new_lines(&v(&[]), &v(&["x"])), v(&["x"]));
        // A log that started over (rotated): all of it is new.
        assert_eq!(new_lines(&v(&["a", "b"]), &v(&["x", "y"])), v(&["x", "y"]));
        // A repeated line is matched with its context, not its first copy.
        assert_eq!(
            new_lines(&v(&["ok", "ok"]), &v(&["ok", "ok", "ok"])),
            v(&["ok"])
        );
    }
}
