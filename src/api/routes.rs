//! The API's route table: the one list both the axum router ([`super::app`]) and the
//! OpenAPI document (`openapi.rs`, served at `GET /api/v1/openapi.json`) are built
//! from, so a route cannot exist without being described or be described without
//! existing.
//!
//! A new route is one more [`Route`] here: its method, path, handler and what the
//! document says of it (parameters, request body, answer). `tests/e2e_ops.rs` calls
//! every described route on a real daemon, and a unit test below checks that no
//! `.route(` call is written anywhere else in `src/api/`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse;
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde_json::json;

use super::{ApiError, ApiState};

/// Who may call a route (the guard in `guard.rs` enforces it; the document states it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never needs the token (`/healthz`, the dashboard's files: they hold no data).
    Open,
    /// Needs the token only when `[api] read_requires_token` (every GET).
    Read,
    /// Always needs the token (every POST: it changes state).
    Write,
}

/// A parameter in the path or the query string.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub in_path: bool,
    /// A JSON Schema, as JSON text.
    pub schema: &'static str,
    pub description: &'static str,
}

/// What a successful call answers.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    /// `application/json`, `text/event-stream`, `application/openmetrics-text`.
    pub content_type: &'static str,
    /// A schema name in `#/components/schemas` (for JSON), or `None` for text.
    pub schema: Option<&'static str>,
    pub description: &'static str,
}

/// One route: how it is served and how it is described.
pub struct Route {
    pub method: Method,
    /// axum's syntax, which is OpenAPI's too (`/api/v1/services/{name}`).
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub params: &'static [Param],
    /// The request body's schema name, if the route reads one (always optional: an
    /// empty body means the defaults, except for `deploy`).
    pub body: Option<(&'static str, bool)>,
    pub answer: Answer,
    pub handler: MethodRouter<ApiState>,
}

pub(super) const NAME: Param = Param {
    name: "name",
    in_path: true,
    schema: r#"{"type": "string"}"#,
    description: "A service name from the config.",
};

const LIMIT: Param = Param {
    name: "limit",
    in_path: false,
    schema: r#"{"type": "integer", "minimum": 0}"#,
    description: "At most this many, newest first (clamped to 1..=1000).",
};

pub(super) const fn json_answer(
    status: u16,
    schema: &'static str,
    description: &'static str,
) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        schema: Some(schema),
        description,
    }
}

const ACCEPTED: Answer = json_answer(
    202,
    "Accepted",
    "Accepted: the deployment the operation applies to.",
);

/// `POST /api/v1/services/{name}/<action>`: one route per action, all served by
/// [`super::act`].
fn action(
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    act: super::Action,
) -> Route {
    let handler = post(
        move |s: State<ApiState>, p: Path<String>, h: HeaderMap, b: Bytes| async move {
            super::act(act, s, p, h, b).await
        },
    );
    Route {
        method: Method::POST,
        path,
        operation_id,
        summary,
        access: Access::Write,
        params: &[NAME],
        body: Some(("ActionBody", false)),
        answer: ACCEPTED,
        handler,
    }
}

/// Every route the API serves, in the order the document lists them.
pub fn table() -> Vec<Route> {
    use super::Action;
    let mut routes = vec![
        Route {
            method: Method::GET,
            path: "/healthz",
            operation_id: "healthz",
            summary: "Liveness of the daemon's API; never needs the token.",
            access: Access::Open,
            params: &[],
            body: None,
            answer: json_answer(200, "Health", "The API answers."),
            handler: get(|| async { Json(json!({ "status": "ok" })) }),
        },
        Route {
            method: Method::GET,
            path: "/metrics",
            operation_id: "metrics",
            summary: "Prometheus metrics (OpenMetrics text).",
            access: Access::Read,
            params: &[],
            body: None,
            answer: Answer {
                status: 200,
                content_type: "application/openmetrics-text",
                schema: None,
                description: "Per-slot request counters and latency histograms, switch \
                              durations, deployments by outcome, live slot, phase, build.",
            },
            handler: get(super::metrics_text),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/openapi.json",
            operation_id: "openapi",
            summary: "This document.",
            access: Access::Read,
            params: &[],
            body: None,
            answer: json_answer(200, "OpenApi", "The OpenAPI 3.1 document of this API."),
            handler: get(|| async { Json(super::openapi::document()) }),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/services",
            operation_id: "listServices",
            summary: "Every configured service with its slots, traffic and deployment.",
            access: Access::Read,
            params: &[],
            body: None,
            answer: json_answer(200, "ServiceStatusList", "One status per service."),
            handler: get(super::list_services),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/services/{name}",
            operation_id: "getService",
            summary: "One service's slots, traffic, deployment in progress and live health.",
            access: Access::Read,
            params: &[NAME],
            body: None,
            answer: json_answer(200, "ServiceStatus", "The service's status."),
            handler: get(super::get_service),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/services/{name}/history",
            operation_id: "history",
            summary: "Past deployments of a service, newest first.",
            access: Access::Read,
            params: &[NAME, LIMIT],
            body: None,
            answer: json_answer(200, "DeploymentList", "Deployment records."),
            handler: get(super::history),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/services/{name}/events",
            operation_id: "serviceEvents",
            summary: "A service's recent event log, newest first.",
            access: Access::Read,
            params: &[NAME, LIMIT],
            body: None,
            answer: json_answer(200, "EventList", "Event records."),
            handler: get(super::events),
        },
        Route {
            method: Method::POST,
            path: "/api/v1/services/{name}/deploy",
            operation_id: "deploy",
            summary: "Deploy a version into the service's idle slot.",
            access: Access::Write,
            params: &[NAME],
            body: Some(("DeployBody", true)),
            answer: ACCEPTED,
            handler: post(super::deploy),
        },
        Route {
            method: Method::POST,
            path: "/api/v1/services/{name}/check",
            operation_id: "check",
            summary: "Run the service's health checks and smoke tests against one slot now.",
            access: Access::Write,
            params: &[
                NAME,
                Param {
                    name: "slot",
                    in_path: false,
                    schema: r#"{"type": "string", "enum": ["blue", "green"]}"#,
                    description: "The slot to check (required).",
                },
            ],
            body: None,
            answer: json_answer(200, "CheckReport", "What the checks saw."),
            handler: post(super::check),
        },
        action(
            "/api/v1/services/{name}/rollback",
            "rollback",
            "Send the service's traffic back to its previous release.",
            Action::Rollback,
        ),
        action(
            "/api/v1/services/{name}/abort",
            "abort",
            "Stop the deployment in progress safely.",
            Action::Abort,
        ),
        action(
            "/api/v1/services/{name}/promote",
            "promote",
            "Advance the canary one step (or to 100 % with `full`), or end its hold.",
            Action::Promote,
        ),
        action(
            "/api/v1/services/{name}/pause",
            "pause",
            "Hold the canary at its current step.",
            Action::Pause,
        ),
        action(
            "/api/v1/services/{name}/resume",
            "resume",
            "Let a held canary go on.",
            Action::Resume,
        ),
        Route {
            method: Method::GET,
            path: "/api/v1/deployments/{id}",
            operation_id: "getDeployment",
            summary: "One deployment record, with live progress while it runs.",
            access: Access::Read,
            params: &[Param {
                name: "id",
                in_path: true,
                schema: r#"{"type": "integer", "format": "int64"}"#,
                description: "The deployment's id.",
            }],
            body: None,
            answer: json_answer(200, "DeploymentView", "The deployment."),
            handler: get(super::get_deployment),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/events",
            operation_id: "eventFeed",
            summary: "The live event feed (Server-Sent Events; each `data:` is an Event).",
            access: Access::Read,
            params: &[
                Param {
                    name: "service",
                    in_path: false,
                    schema: r#"{"type": "string"}"#,
                    description: "Only this service's events.",
                },
                Param {
                    name: "deployment",
                    in_path: false,
                    schema: r#"{"type": "integer", "format": "int64"}"#,
                    description: "Only this deployment's events (from its first).",
                },
                Param {
                    name: "after",
                    in_path: false,
                    schema: r#"{"type": "integer", "format": "int64"}"#,
                    description: "Resume after this event id (`Last-Event-ID` wins).",
                },
            ],
            body: None,
            answer: Answer {
                status: 200,
                content_type: "text/event-stream",
                schema: None,
                description: "An endless stream until the daemon stops.",
            },
            handler: get(super::events::feed),
        },
        Route {
            method: Method::POST,
            path: "/api/v1/tls/reload",
            operation_id: "tlsReload",
            summary: "Re-read every changed certificate file now (as `SIGUSR1` does).",
            access: Access::Write,
            params: &[],
            body: None,
            answer: json_answer(
                200,
                "TlsReload",
                "What changed; a file that failed keeps its previous certificate.",
            ),
            handler: post(super::tls_reload),
        },
    ];
    routes.extend(super::ops::table());
    routes.extend(super::dashboard::table());
    routes.extend(super::db::table());
    routes
}

/// The router with every route of [`table`] (state, fallback and layers are added by
/// [`super::app`]).
pub fn router() -> axum::Router<ApiState> {
    table().into_iter().fold(axum::Router::new(), |r, route| {
        r.route(route.path, route.handler)
    })
}

/// The fallback for any path the table does not hold.
pub async fn not_found() -> impl IntoResponse {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such API route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_and_method_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for r in table() {
            assert!(
                seen.insert((r.path, r.method.to_string())),
                "{} {} is listed twice",
                r.method,
                r.path
            );
            for p in r.params.iter().filter(|p| p.in_path) {
                assert!(
                    r.path.contains(&format!("{{{}}}", p.name)),
                    "{}: path parameter `{}` is not in the path",
                    r.path,
                    p.name
                );
            }
        }
    }

    /// The router is built from the table only: a `.route(` call anywhere else in
    /// `src/api/` would serve a path the document does not describe.
    #[test]
    fn no_route_is_added_outside_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("routes.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains(".route("),
                "{} adds a route outside src/api/routes.rs (add it to the table instead)",
                path.display()
            );
        }
    }
}
