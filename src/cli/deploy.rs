//! `deploy`, `rollback`, `abort`, `promote`, `pause` and `resume`: start the operation
//! through the API, then (deploy, rollback) follow the deployment through the live event
//! feed until it finishes (`api::client::follow` prints phases, check results and the
//! watch window as they happen). Exit 0 only when the release is live and settled.
//! `by` is who asked (`target::actor`), stored as the deployment's `triggered_by`.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::output::{json_out, mode, say};
use crate::api::client::{follow, follow_quietly, ApiClient, ClientError};
use crate::api::DeploymentView;
use crate::store::{DeploymentKind, DeploymentOutcome};

/// Follows deployment `id` the way the output mode asks.
async fn follow_mode(c: &ApiClient, id: i64) -> Result<ExitCode, ClientError> {
    let m = mode();
    if m.quiet {
        follow_quietly(c, id).await
    } else {
        follow(c, id, m.json).await
    }
}

pub async fn deploy(
    c: &ApiClient,
    service: &str,
    version: &str,
    no_wait: bool,
    by: &str,
) -> Result<ExitCode, ClientError> {
    let body = json!({ "version": version, "triggered_by": by });
    let started: Value = c
        .post(&format!("/api/v1/services/{service}/deploy"), body)
        .await?;
    let id = started["deployment_id"].as_i64().unwrap_or_default();
    say!("deployment #{id}: {service} {version}");
    if no_wait {
        if mode().json {
            json_out(&started);
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow_mode(c, id).await
}

pub async fn rollback(
    c: &ApiClient,
    service: &str,
    no_wait: bool,
    by: &str,
) -> Result<ExitCode, ClientError> {
    let started: Value = c
        .post(
            &format!("/api/v1/services/{service}/rollback"),
            json!({ "triggered_by": by }),
        )
        .await?;
    let id = started["deployment_id"].as_i64().unwrap_or_default();
    say!("rolling back {service} (deployment #{id})");
    if no_wait {
        if mode().json {
            json_out(&started);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let code = follow_mode(c, id).await?;
    // A rollback requested during a watch ends that deployment as `rolled_back`: that
    // is the rollback succeeding.
    let view: DeploymentView = c.get(&format!("/api/v1/deployments/{id}")).await?;
    let ok = match (view.deployment.kind, view.deployment.outcome) {
        (DeploymentKind::Rollback, Some(DeploymentOutcome::Succeeded)) => true,
        (DeploymentKind::Deploy, Some(DeploymentOutcome::RolledBack)) => true,
        _ => code == ExitCode::SUCCESS,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `abort`, `promote`, `pause` or `resume` of a deployment in progress. `--json`:
/// `{"action", "deployment_id", "service"}`.
pub async fn action(
    c: &ApiClient,
    service: &str,
    action: &str,
    full: bool,
    by: &str,
) -> Result<ExitCode, ClientError> {
    let mut body = json!({ "triggered_by": by });
    if full {
        body["full"] = json!(true);
    }
    let v: Value = c
        .post(&format!("/api/v1/services/{service}/{action}"), body)
        .await?;
    if mode().json {
        json_out(&json!({
            "action": if full { "promote_full" } else { action },
            "service": service,
            "deployment_id": v["deployment_id"],
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let what = match (action, full) {
        ("promote", true) => "promote to 100%",
        (a, _) => a,
    };
    say!("{what} requested for deployment #{}", v["deployment_id"]);
    Ok(ExitCode::SUCCESS)
}
