//! `/api/v1/services/{name}/db/...`: a service's database outside a deployment, for
//! `cutover db ...` (the operations and their rules are `orchestrator/database_ops.rs`).
//!
//! Reads (`status`, `lint`, `backups`) follow the API's read policy; `backup`,
//! `restore` and `down` need the token. Bad input is a JSON 400 before anything runs;
//! a refusal (a slot still writes, a deployment in progress, no down file) is a JSON
//! 409 with nothing changed.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;

use super::{actor, authorize, known, parse_json, ApiError, ApiState};
use crate::database::backup::BackupMeta;
use crate::orchestrator::database_ops::{DbStatus, DownView, LintView, RestoreView};

/// The database routes, merged into `app()`.
pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/services/{name}/db/status", get(status))
        .route("/api/v1/services/{name}/db/lint", get(lint))
        .route("/api/v1/services/{name}/db/backups", get(backups))
        .route("/api/v1/services/{name}/db/backup", post(backup))
        .route("/api/v1/services/{name}/db/restore", post(restore))
        .route("/api/v1/services/{name}/db/down", post(down))
}

async fn status(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DbStatus>, ApiError> {
    known(&s, &name)?;
    Ok(Json(s.controller.db_status(&name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LintQuery {
    #[serde(default)]
    all: bool,
}

async fn lint(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LintQuery>,
) -> Result<Json<LintView>, ApiError> {
    known(&s, &name)?;
    Ok(Json(s.controller.db_lint(&name, q.all).await?))
}

async fn backups(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<BackupMeta>>, ApiError> {
    known(&s, &name)?;
    Ok(Json(s.controller.db_backups(&name).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    #[serde(default)]
    triggered_by: Option<String>,
}

async fn backup(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<BackupMeta>, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let b: BackupBody = parse_json(&body, false)?;
    let by = actor(b.triggered_by);
    Ok(Json(s.controller.db_backup(&name, &by).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    /// `latest` (the default) or a backup's file name.
    #[serde(default)]
    backup: Option<String>,
    /// Even while a slot still runs (its writes since the backup are lost).
    #[serde(default)]
    force: bool,
    /// Say what would be restored (and whether it would be refused); change nothing.
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    triggered_by: Option<String>,
}

async fn restore(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<RestoreView>, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let b: RestoreBody = parse_json(&body, false)?;
    let which = b.backup.unwrap_or_else(|| "latest".into());
    let ok = !which.is_empty()
        && which.len() <= 200
        && which
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !which.starts_with('.');
    if !ok {
        return Err(ApiError::bad_request(format!(
            "invalid backup `{which}`: expected `latest` or a backup's file name (see `cutover db backups`)"
        )));
    }
    let by = actor(b.triggered_by);
    Ok(Json(
        s.controller
            .db_restore(&name, &which, b.force, b.dry_run, &by)
            .await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DownBody {
    /// Undo every applied migration above this version.
    to: Option<i64>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    triggered_by: Option<String>,
}

async fn down(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<DownView>, ApiError> {
    authorize(&s, &headers)?;
    known(&s, &name)?;
    let b: DownBody = parse_json(&body, true)?;
    let to = match b.to {
        Some(v) if v >= 0 => v,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`to` must be a migration version (0 or more), got {v}"
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid JSON body: `to` (the version to go back to) is required",
            ))
        }
    };
    let by = actor(b.triggered_by);
    Ok(Json(
        s.controller
            .db_down(&name, to, b.force, b.dry_run, &by)
            .await?,
    ))
}
