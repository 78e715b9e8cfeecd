//! The API's one error type: every failure is a JSON body `{"error": {"code", "message"}}`
//! with a 4xx status for the caller's mistakes; internals are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::database::DatabaseError;
use crate::orchestrator::ControlError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this call changes state and needs `Authorization: Bearer <token>` (see `api.token` in the config)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let msg = e.to_string();
        match e {
            ControlError::UnknownService(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_service", msg)
            }
            ControlError::InProgress { .. } => {
                Self::new(StatusCode::CONFLICT, "deployment_in_progress", msg)
            }
            ControlError::NothingInProgress(_) => {
                Self::new(StatusCode::CONFLICT, "nothing_in_progress", msg)
            }
            ControlError::NothingToRollBack(_) => {
                Self::new(StatusCode::CONFLICT, "nothing_to_roll_back", msg)
            }
            ControlError::NotSwitchedYet { .. } => {
                Self::new(StatusCode::CONFLICT, "not_switched_yet", msg)
            }
            ControlError::NotInCanary { .. } => {
                Self::new(StatusCode::CONFLICT, "not_in_canary", msg)
            }
            ControlError::SlotNotRunning { .. } => {
                Self::new(StatusCode::CONFLICT, "slot_not_running", msg)
            }
            ControlError::NoDatabase(_) => Self::new(StatusCode::NOT_FOUND, "no_database", msg),
            ControlError::StillWrites { .. } => {
                Self::new(StatusCode::CONFLICT, "slot_still_writes", msg)
            }
            ControlError::Database(e) => e.into(),
            ControlError::Store(e) => e.into(),
        }
    }
}

impl From<DatabaseError> for ApiError {
    fn from(e: DatabaseError) -> Self {
        let msg = e.to_string();
        match e {
            DatabaseError::NoBackup(_) => Self::new(StatusCode::NOT_FOUND, "backup_not_found", msg),
            DatabaseError::Refused(_) => Self::new(StatusCode::CONFLICT, "refused", msg),
            DatabaseError::Files { .. } => Self::new(StatusCode::CONFLICT, "migration_files", msg),
            // The database or its tools failed, not the caller: 502, with what they said
            // (the operator needs it; it carries no secret: passwords never enter URLs
            // Cutover prints).
            _ => Self::new(StatusCode::BAD_GATEWAY, "database_error", msg),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            StoreError::DeploymentInProgress { .. } => Self::new(
                StatusCode::CONFLICT,
                "deployment_in_progress",
                e.to_string(),
            ),
            other => {
                tracing::error!(error = ?other, "store error in API call");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal store error (see the daemon's log)",
                )
            }
        }
    }
}
