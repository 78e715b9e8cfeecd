//! `deploy`, `rollback` and `abort`: start the operation through the API, then follow
//! the deployment through the live event feed until it finishes (`api::client::follow`
//! prints phases, check results and the watch window as they happen). Exit 0 only when
//! the release is live and settled.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::api::client::{follow, ApiClient, ClientError};
use crate::api::DeploymentView;
use crate::store::{DeploymentKind, DeploymentOutcome};

pub async fn deploy(
    c: &ApiClient,
    service: &str,
    version: &str,
    no_wait: bool,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let body = json!({ "version": version, "triggered_by": actor() });
    let started: Value = c
        .post(&format!("/api/v1/services/{service}/deploy"), body)
        .await?;
    let id = started["deployment_id"].as_i64().unwrap_or_default();
    if !json {
        println!("deployment #{id}: {service} {version}");
    }
    if no_wait {
        if json {
            println!("{started}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(c, id, json).await
}

pub async fn rollback(
    c: &ApiClient,
    service: &str,
    no_wait: bool,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let started: Value = c
        .post(
            &format!("/api/v1/services/{service}/rollback"),
            json!({ "triggered_by": actor() }),
        )
        .await?;
    let id = started["deployment_id"].as_i64().unwrap_or_default();
    if !json {
        println!("rolling back {service} (deployment #{id})");
    }
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let code = follow(c, id, json).await?;
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

pub async fn abort(c: &ApiClient, service: &str) -> Result<ExitCode, ClientError> {
    let v: Value = c
        .post(
            &format!("/api/v1/services/{service}/abort"),
            json!({ "triggered_by": actor() }),
        )
        .await?;
    println!("abort requested for deployment #{}", v["deployment_id"]);
    Ok(ExitCode::SUCCESS)
}

/// `promote`, `pause` or `resume` of a canary in progress.
pub async fn canary_action(
    c: &ApiClient,
    service: &str,
    action: &str,
    full: bool,
) -> Result<ExitCode, ClientError> {
    let mut body = json!({ "triggered_by": actor() });
    if full {
        body["full"] = json!(true);
    }
    let v: Value = c
        .post(&format!("/api/v1/services/{service}/{action}"), body)
        .await?;
    let what = match (action, full) {
        ("promote", true) => "promote to 100%",
        (a, _) => a,
    };
    println!("{what} requested for deployment #{}", v["deployment_id"]);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
