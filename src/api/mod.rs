//! The daemon's HTTP API (JSON, `/api/v1`), `/metrics` and `/healthz`, plus the client
//! the CLI uses to call it.
//!
//! Reads are open unless `[api] read_requires_token` (the listener is bound to
//! localhost by default); every call that changes state needs the bearer token; only
//! requests whose `Host` names the API are answered (`guard.rs`, which also rate-limits
//! failed authentication). Errors are JSON 4xx and change nothing, including the ones
//! axum writes itself.
//! The response shapes are the stable `--json` output documented in the README.

pub mod client;
mod dashboard;
mod db;
mod error;
mod events;
mod guard;
pub mod metrics;
mod openapi;
mod ops;
pub mod routes;
pub mod tls_metrics;
mod views;

pub use error::ApiError;
pub use guard::ApiGuard;
pub use views::{DeploymentView, ServiceStatus, SlotView};

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;

use crate::domain::Slot;
use crate::orchestrator::Controller;

#[derive(Clone)]
pub struct ApiState {
    pub controller: Arc<Controller>,
    pub token: Arc<String>,
    pub registry: Arc<Registry>,
    /// Becomes `true` when the daemon shuts down: long-lived responses (the event
    /// feed) end then, so a graceful shutdown does not wait on them.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Host check, read token, failed-authentication lockout.
    pub guard: Arc<ApiGuard>,
    /// The proxy's TLS listeners (certificates shown in status, reloaded on request).
    pub tls: Arc<crate::proxy::tls::TlsEdge>,
}

/// Largest request body the API reads (its bodies are a few fields of JSON).
pub const MAX_BODY: usize = 64 * 1024;

/// The API as an axum router (testable without a socket).
pub fn app(state: ApiState) -> axum::Router {
    routes::router()
        .fallback(routes::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .with_state(state)
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&s.registry),
    )
}

async fn list_services(State(s): State<ApiState>) -> Result<Json<Vec<ServiceStatus>>, ApiError> {
    let mut out = Vec::new();
    for name in s.controller.config().services.keys() {
        out.push(with_tls(
            &s,
            views::service_status(&s.controller, name).await?,
        ));
    }
    Ok(Json(out))
}

async fn get_service(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceStatus>, ApiError> {
    Ok(Json(with_tls(
        &s,
        views::service_status(&s.controller, &name).await?,
    )))
}

/// `status` plus the certificates of the service's TLS listener, if it has one.
fn with_tls(s: &ApiState, mut status: ServiceStatus) -> ServiceStatus {
    let listen = status.listen.as_deref().and_then(|a| a.parse().ok());
    if let Some(store) = listen.and_then(|a| s.tls.store(a)) {
        status.tls_certificates = store.status();
    }
    status
}

/// `POST /api/v1/tls/reload`: re-reads every changed certificate file now (as
/// `SIGUSR1` does). 200 with what changed; a file that failed keeps its previous
/// certificate and is listed in `errors`.
async fn tls_reload(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    let edge = s.tls.clone();
    let (changed, failures) = tokio::task::spawn_blocking(move || edge.reload())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "reload failed",
            )
        })?;
    let errors: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Ok(Json(json!({ "changed": changed, "errors": errors })))
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<crate::store::DeploymentRecord>>, ApiError> {
    known(&s, &name)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    Ok(Json(s.controller.store().history(&name, limit)?))
}

async fn events(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<crate::store::EventRecord>>, ApiError> {
    known(&s, &name)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(s.controller.store().events(&name, limit)?))
}

async fn get_deployment(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::bad_request(format!("deployment id must be a number, got `{id}`"))
    })?;
    let record = s.controller.store().deployment(id)?;
    let progress = s
        .controller
        .progress(&record.service)
        .filter(|p| p.deployment_id == id)
        .map(Into::into);
    Ok(Json(DeploymentView {
        deployment: record,
        progress,
    }))
}

pub(super) fn known(s: &ApiState, name: &str) -> Result<(), ApiError> {
    if s.controller.config().services.contains_key(name) {
        Ok(())
    } else {
        Err(crate::orchestrator::ControlError::UnknownService(name.into()).into())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    version: String,
    #[serde(default)]
    triggered_by: Option<String>,
}

/// Versions end up in command lines, paths and image tags: keep them to a safe
/// alphabet, with no path separator and no `..`.
fn validate_version(v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
        && !v.starts_with(['-', '.'])
        && !v.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid version `{v}`: expected 1-128 characters from A-Z a-z 0-9 . _ - + (not starting with - or ., no ..)"
        )))
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    required: bool,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(T::default());
    }
    // serde reads a struct from a JSON array too (`["v2"]`): only an object is one.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Who asked, as stored and printed: control characters removed (a terminal must not
/// take them for commands), at most 128 characters.
fn actor(given: Option<String>) -> String {
    given
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect::<String>()
        })
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "api".into())
}

async fn deploy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let body: DeployBody = parse_json(&body, true)?;
    validate_version(&body.version)?;
    let id = s
        .controller
        .deploy(&name, &body.version, &actor(body.triggered_by))
        .await?;
    Ok(accepted(id))
}

/// 202 with the deployment the operation applies to.
fn accepted(id: i64) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(json!({ "deployment_id": id })))
}

/// An operation on a service's deployment in progress (or, for `rollback`, on its
/// live release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Rollback,
    Abort,
    Promote,
    Pause,
    Resume,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// `promote` only: straight to 100 %.
    #[serde(default)]
    full: bool,
    #[serde(default)]
    triggered_by: Option<String>,
}

/// `POST /api/v1/services/{name}/{rollback|abort|promote|pause|resume}` (one route per
/// action in `routes.rs`): authorised,
/// for a configured service, with an optional JSON body naming who asked; answers 202
/// with the deployment the operation applies to.
async fn act(
    action: Action,
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let b: ActionBody = parse_json(&body, false)?;
    if b.full && action != Action::Promote {
        return Err(ApiError::bad_request(
            "invalid JSON body: `full` applies to promote only",
        ));
    }
    let by = actor(b.triggered_by);
    let c = &s.controller;
    let id = match action {
        Action::Rollback => c.rollback(&name, &by).await?,
        Action::Abort => c.abort(&name, &by).await?,
        Action::Promote => c.promote(&name, b.full, &by).await?,
        Action::Pause => c.pause(&name, &by).await?,
        Action::Resume => c.resume(&name, &by).await?,
    };
    Ok(accepted(id))
}

#[derive(Deserialize)]
struct CheckQuery {
    slot: Option<String>,
}

async fn check(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<CheckQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let slot: Slot = q
        .slot
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("query parameter `slot` is required (blue or green)"))?
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("slot: {e}")))?;
    Ok(Json(s.controller.check(&name, slot).await?))
}
