//! The OpenAPI 3.1 document of the API, built from the route table (`routes.rs`) and
//! the schemas of the JSON views below, served at `GET /api/v1/openapi.json`.
//!
//! Why by hand and not a derive crate: the response types live in lower layers
//! (`store`, `checks`, `orchestrator`) that must not depend on an API-description
//! crate; the schemas sit here beside the routes, and `scripts/schemathesis.sh`
//! (run by `.ci/run`) checks real answers against them, so a schema that drifts from
//! its type fails CI. The document is served like every other read: open unless
//! `[api] read_requires_token`.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::routes::{self, Access};

/// The document (built once).
pub fn document() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build).clone()
}

fn build() -> Value {
    let mut paths = Map::new();
    for r in routes::table() {
        let mut params: Vec<Value> = r
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "in": if p.in_path { "path" } else { "query" },
                    "required": p.in_path || (r.operation_id == "check" && p.name == "slot"),
                    "description": p.description,
                    "schema": serde_json::from_str::<Value>(p.schema).expect("param schema is JSON"),
                })
            })
            .collect();
        if r.operation_id == "eventFeed" {
            params.push(json!({
                "name": "Last-Event-ID", "in": "header", "required": false,
                "description": "Resume after this event id (wins over `after`).",
                "schema": {"type": "integer", "format": "int64"},
            }));
        }
        let content = match r.answer.schema {
            Some(s) => json!({ r.answer.content_type: { "schema": { "$ref": schema_ref(s) } } }),
            None => json!({ r.answer.content_type: { "schema": { "type": "string" } } }),
        };
        let mut op = json!({
            "operationId": r.operation_id,
            "summary": r.summary,
            "parameters": params,
            "responses": {
                r.answer.status.to_string(): { "description": r.answer.description, "content": content },
                "4XX": {
                    "description": "The caller's mistake (unknown service, bad input, missing token, \
                                    a conflicting deployment, ...); nothing changed.",
                    "content": { "application/json": { "schema": { "$ref": schema_ref("Error") } } },
                },
            },
        });
        match r.access {
            Access::Open => op["security"] = json!([]),
            Access::Read => op["security"] = json!([{}, { "bearer": [] }]),
            Access::Write => op["security"] = json!([{ "bearer": [] }]),
        }
        if let Some((body, required)) = r.body {
            op["requestBody"] = json!({
                "required": required,
                "content": { "application/json": { "schema": { "$ref": schema_ref(body) } } },
            });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cutover API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Cutover daemon's HTTP API. Every POST needs the bearer token \
                            (`[api] token`); reads need it only when `[api] read_requires_token`. \
                            Errors are JSON `{\"error\": {\"code\", \"message\"}}` with a 4xx status \
                            and change nothing.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
    })
}

fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// `{"$ref": ...}` or null.
fn nullable_ref(name: &str) -> Value {
    json!({ "oneOf": [{ "$ref": schema_ref(name) }, { "type": "null" }] })
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

/// The JSON views (`views.rs`, the store's records, the check report) as JSON Schema.
fn schemas() -> Value {
    let ms = json!({ "type": "integer", "description": "Unix time in milliseconds" });
    let ms_or_null =
        json!({ "type": ["integer", "null"], "description": "Unix time in milliseconds" });
    let text_or_null = json!({ "type": ["string", "null"] });
    let slot = json!({ "$ref": schema_ref("Slot") });
    let mut all = json!({
        "Error": object(&["error"], json!({
            "error": object(&["code", "message"], json!({
                "code": { "type": "string" }, "message": { "type": "string" },
            })),
        })),
        "Health": object(&["status"], json!({ "status": { "type": "string" } })),
        "OpenApi": object(&["openapi", "paths"], json!({
            "openapi": { "type": "string" }, "paths": { "type": "object" },
        })),
        "Slot": { "type": "string", "enum": ["blue", "green"] },
        "Accepted": object(&["deployment_id"], json!({ "deployment_id": { "type": "integer" } })),
        "DeployBody": {
            "type": "object", "required": ["version"], "additionalProperties": false,
            "properties": {
                "version": { "type": "string", "pattern": "^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}$",
                             "description": "No `..`; at most 128 characters." },
                "triggered_by": text_or_null,
            },
        },
        "ActionBody": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "full": { "type": "boolean", "description": "promote only: straight to 100 %" },
                "triggered_by": text_or_null,
            },
        },
        "SlotView": object(
            &["slot", "state", "version", "addr", "handle", "standby_until", "updated_at",
              "running", "requests", "errors", "in_flight"],
            json!({
                "slot": slot,
                "state": { "type": "string", "enum": ["empty", "starting", "ready", "live", "standby", "stopped", "failed"] },
                "version": text_or_null, "addr": text_or_null, "handle": text_or_null,
                "identity": text_or_null, "standby_until": ms_or_null, "updated_at": ms,
                "running": { "type": "boolean" },
                "requests": { "type": "integer", "minimum": 0 },
                "errors": { "type": "integer", "minimum": 0 },
                "in_flight": { "type": "integer" },
            }),
        ),
        "PhaseRecord": object(&["phase", "started_at", "ended_at", "result"], json!({
            "phase": { "type": "string" }, "started_at": ms, "ended_at": ms_or_null,
            "result": text_or_null,
        })),
        "CheckRecord": object(&["phase", "name", "ok", "detail", "duration_ms", "at"], json!({
            "phase": { "type": "string" }, "name": { "type": "string" }, "ok": { "type": "boolean" },
            "detail": { "type": "string" }, "duration_ms": { "type": "integer", "minimum": 0 }, "at": ms,
        })),
        "MeasurementRecord": object(&["phase", "metric", "value", "verdict", "detail", "at"], json!({
            "phase": { "type": "string" }, "metric": { "type": "string" },
            "value": { "type": ["number", "null"] },
            "verdict": { "type": "string", "enum": ["pass", "fail", "inconclusive", "error"] },
            "detail": { "type": "string" }, "at": ms,
        })),
        "Deployment": object(
            &["id", "service", "kind", "version", "target_slot", "from_slot", "from_version",
              "phase", "outcome", "reason", "triggered_by", "started_at", "finished_at",
              "switched_at", "phases", "checks"],
            json!({
                "id": { "type": "integer" }, "service": { "type": "string" },
                "kind": { "type": "string", "enum": ["deploy", "rollback"] },
                "version": { "type": "string" }, "target_slot": slot,
                "from_slot": nullable_ref("Slot"), "from_version": text_or_null,
                "phase": { "type": "string" },
                "outcome": { "oneOf": [
                    { "type": "string", "enum": ["succeeded", "failed", "rolled_back", "aborted", "interrupted"] },
                    { "type": "null" },
                ], "description": "null while the deployment runs" },
                "reason": text_or_null, "triggered_by": { "type": "string" },
                "started_at": ms, "finished_at": ms_or_null, "switched_at": ms_or_null,
                "phases": { "type": "array", "items": { "$ref": schema_ref("PhaseRecord") } },
                "checks": { "type": "array", "items": { "$ref": schema_ref("CheckRecord") } },
                "measurements": { "type": "array", "items": { "$ref": schema_ref("MeasurementRecord") } },
            }),
        ),
        "DeploymentList": { "type": "array", "items": { "$ref": schema_ref("Deployment") } },
        "Progress": {
            "type": ["object", "null"],
            "description": "Live progress while a deployment runs: phase, watch countdown, latest window, canary.",
            "properties": {
                "deployment_id": { "type": "integer" }, "phase": { "type": "string" },
                "watch_ends_at": ms_or_null,
            },
        },
        "DeploymentView": object(&["deployment", "progress"], json!({
            "deployment": { "$ref": schema_ref("Deployment") },
            "progress": { "$ref": schema_ref("Progress") },
        })),
        "LiveHealth": object(&["slot", "healthy", "detail", "consecutive_failures", "restarts", "checked_at"], json!({
            "slot": slot, "healthy": { "type": "boolean" }, "detail": { "type": "string" },
            "consecutive_failures": { "type": "integer", "minimum": 0 },
            "restarts": { "type": "integer", "minimum": 0 }, "checked_at": ms,
        })),
        "ServiceStatus": object(
            &["name", "listen", "router", "live", "live_version", "observed_live", "drift",
              "slots", "active_deployment", "progress", "last_deployment"],
            json!({
                "name": { "type": "string" },
                "listen": { "type": ["string", "null"], "description": "null when an external router serves it" },
                "router": { "type": "string" },
                "live": nullable_ref("Slot"), "live_version": text_or_null,
                "observed_live": nullable_ref("Slot"), "drift": { "type": "boolean" },
                "slots": { "type": "array", "items": { "$ref": schema_ref("SlotView") } },
                "active_deployment": nullable_ref("Deployment"),
                "progress": { "$ref": schema_ref("Progress") },
                "last_deployment": nullable_ref("Deployment"),
                "live_health": nullable_ref("LiveHealth"),
            }),
        ),
        "ServiceStatusList": { "type": "array", "items": { "$ref": schema_ref("ServiceStatus") } },
        "Event": object(&["id", "at", "service", "deployment_id", "kind", "message"], json!({
            "id": { "type": "integer" }, "at": ms, "service": { "type": "string" },
            "deployment_id": { "type": ["integer", "null"] }, "kind": { "type": "string" },
            "message": { "type": "string" }, "data": {},
        })),
        "EventList": { "type": "array", "items": { "$ref": schema_ref("Event") } },
        "CheckResult": object(&["name", "ok", "detail", "duration_ms"], json!({
            "name": { "type": "string" }, "ok": { "type": "boolean" }, "detail": { "type": "string" },
            "duration_ms": { "type": "integer", "minimum": 0 },
        })),
        "CheckReport": object(&["service", "slot", "version", "addr", "health", "healthy", "smoke"], json!({
            "service": { "type": "string" }, "slot": slot, "version": text_or_null,
            "addr": { "type": "string" },
            "health": { "type": "array", "items": { "$ref": schema_ref("CheckResult") } },
            "healthy": { "type": "boolean" },
            "smoke": object(&["results", "passed", "failure"], json!({
                "results": { "type": "array", "items": { "$ref": schema_ref("CheckResult") } },
                "passed": { "type": "boolean" }, "failure": text_or_null,
                "avg_latency_ms": { "type": ["integer", "null"] },
                "p95_latency_ms": { "type": ["integer", "null"] },
            })),
        })),
    });
    let Value::Object(extra) = more_schemas() else {
        unreachable!("an object")
    };
    all.as_object_mut().expect("an object").extend(extra);
    all
}

/// The views of the database routes (`orchestrator/database_ops.rs`,
/// `database/backup.rs`), the TLS reload, `plan` and `logs`: a second `json!`, because
/// one would pass the macro's recursion limit.
fn more_schemas() -> Value {
    let text_or_null = json!({ "type": ["string", "null"] });
    json!({
        "TlsReload": object(&["changed", "errors"], json!({
            "changed": { "type": "integer", "minimum": 0, "description": "certificates replaced" },
            "errors": { "type": "array", "items": { "type": "string" } },
        })),
        "BackupMeta": object(
            &["file", "service", "release", "migration_version", "database", "size_bytes",
              "duration_ms", "created_at", "reason"],
            json!({
                "file": { "type": "string" }, "service": { "type": "string" },
                "release": { "type": "string" }, "migration_version": { "type": "string" },
                "database": { "type": "string" },
                "size_bytes": { "type": "integer", "minimum": 0 },
                "duration_ms": { "type": "integer", "minimum": 0 },
                "created_at": { "type": "string", "description": "RFC 3339" },
                "reason": { "type": "string" },
            }),
        ),
        "BackupList": { "type": "array", "items": { "$ref": schema_ref("BackupMeta") } },
        "LintView": object(&["passed", "reason", "files", "findings"], json!({
            "passed": { "type": "boolean" }, "reason": text_or_null,
            "files": { "type": "integer", "minimum": 0 },
            "findings": { "type": "array", "items": { "type": "object" } },
        })),
        "DbStatus": object(&["service", "database", "strategy", "version", "applied", "pending", "lint"], json!({
            "service": { "type": "string" }, "database": { "type": "string" },
            "strategy": { "type": "string", "enum": ["shared", "separate"] },
            "version": { "type": "string" },
            "applied": { "type": "array", "items": { "type": "object" } },
            "pending": { "type": "array", "items": { "type": "string" } },
            "lint": nullable_ref("LintView"),
        })),
        "RestoreView": object(&["backup", "database", "dry_run"], json!({
            "backup": { "$ref": schema_ref("BackupMeta") }, "database": { "type": "string" },
            "dry_run": { "type": "boolean" },
        })),
        "DownView": object(&["to", "migrations", "runs", "dry_run"], json!({
            "to": { "type": "integer" },
            "migrations": { "type": "array", "items": { "type": "string" } },
            "runs": { "type": "array", "items": { "type": "object" } },
            "dry_run": { "type": "boolean" },
        })),
        "PlanBody": {
            "type": "object", "required": ["version"], "additionalProperties": false,
            "properties": {
                "version": { "type": "string", "pattern": "^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}$" },
            },
        },
        "Plan": object(
            &["service", "version", "environment", "target_slot", "target_now", "from_slot",
              "replaces_version", "blocked_by", "health", "smoke", "strategy", "mirror",
              "analysis", "watch", "router", "hooks", "database", "warm_for_ms", "steps"],
            json!({
                "service": { "type": "string" }, "version": { "type": "string" },
                "environment": text_or_null,
                "target_slot": { "type": "string", "enum": ["blue", "green"] },
                "target_now": {},
                "from_slot": { "type": ["string", "null"], "enum": ["blue", "green", null] },
                "replaces_version": text_or_null,
                "blocked_by": { "type": ["integer", "null"] },
                "health": {}, "smoke": { "type": "array", "items": { "type": "string" } },
                "strategy": {}, "mirror": {}, "analysis": {}, "watch": {}, "router": {},
                "hooks": { "type": "array" }, "database": {},
                "warm_for_ms": { "type": "integer", "minimum": 0 },
                "steps": { "type": "array", "items": { "type": "string" } },
            }),
        ),
        "SlotLogs": object(&["service", "slot", "lines"], json!({
            "service": { "type": "string" },
            "slot": { "type": "string", "enum": ["blue", "green"] },
            "lines": { "type": "array", "items": { "type": "string" } },
        })),
        "DbBackupBody": {
            "type": "object", "additionalProperties": false,
            "properties": { "triggered_by": text_or_null },
        },
        "DbRestoreBody": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "backup": { "type": ["string", "null"], "description": "`latest` (default) or a backup's file name" },
                "force": { "type": "boolean" }, "dry_run": { "type": "boolean" },
                "triggered_by": text_or_null,
            },
        },
        "DbDownBody": {
            "type": "object", "required": ["to"], "additionalProperties": false,
            "properties": {
                "to": { "type": "integer", "minimum": 0 },
                "force": { "type": "boolean" }, "dry_run": { "type": "boolean" },
                "triggered_by": text_or_null,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_with_its_method_and_every_reference_resolves() {
        let doc = document();
        let mut described = 0;
        for r in routes::table() {
            let op = &doc["paths"][r.path][r.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is not described", r.method, r.path);
            described += 1;
        }
        let in_doc: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            in_doc, described,
            "the document describes a route the table lacks"
        );
        let text = doc.to_string();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[i + 21..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "schema `{name}` is referenced but not defined"
            );
        }
    }

    /// The schemas describe what the types really serialise to: a sample of each view
    /// has every required field the schema names, and no field the schema lacks.
    #[test]
    fn the_deployment_schema_names_the_fields_the_record_serialises() {
        let doc = document();
        let record = crate::store::DeploymentRecord {
            id: 1,
            service: "web".into(),
            kind: crate::store::DeploymentKind::Deploy,
            version: "v1".into(),
            target_slot: crate::domain::Slot::Blue,
            from_slot: None,
            from_version: None,
            phase: "start".into(),
            outcome: None,
            reason: None,
            triggered_by: "me".into(),
            started_at: 0,
            finished_at: None,
            switched_at: None,
            phases: vec![],
            checks: vec![],
            measurements: vec![],
        };
        let v = serde_json::to_value(record).unwrap();
        let schema = &doc["components"]["schemas"]["Deployment"];
        let props = schema["properties"].as_object().unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(props.contains_key(key), "Deployment schema lacks `{key}`");
        }
        for req in schema["required"].as_array().unwrap() {
            assert!(
                v.get(req.as_str().unwrap()).is_some(),
                "{req} is not serialised"
            );
        }
    }
}
