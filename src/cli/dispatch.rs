//! The commands that talk to the daemon: checks the service name against the config
//! when there is one (a typo is caught before any call), asks for confirmation when
//! the service is production, then runs the command.

use std::process::ExitCode;

use super::output::fail;
use super::target::{actor, Target};
use super::{confirm, deploy, ops, report, show, Cli, Command};
use crate::api::client::ClientError;
use crate::api::ServiceStatus;

/// Unknown to the config file (when one was read): exit 2 naming what it has. Without
/// a config the daemon answers for itself (404, also exit 2).
fn known(t: &Target, s: &str) -> Result<(), ExitCode> {
    match &t.config {
        Some(cfg) if !cfg.services.contains_key(s) => {
            let names: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
            Err(fail(
                2,
                "unknown_service",
                format!(
                    "unknown service `{s}`; the config has: {}",
                    names.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Production confirmation for `what` on `service`, with the environment the daemon
/// reports (so it works without a config file).
async fn confirmed(t: &Target, cli: &Cli, service: &str, what: &str) -> Result<(), ExitCode> {
    if cli.yes {
        return Ok(());
    }
    let status: ServiceStatus = t
        .client
        .get(&format!("/api/v1/services/{service}"))
        .await
        .map_err(report)?;
    confirm::production(status.environment.as_deref(), service, what, false)
}

pub async fn client_command(t: &Target, cli: &Cli) -> ExitCode {
    let c = &t.client;
    let by = actor(cli.actor.as_deref());
    let service = match &cli.command {
        Command::Deploy { service, .. }
        | Command::Plan { service, .. }
        | Command::Rollback { service, .. }
        | Command::Abort { service }
        | Command::Promote { service, .. }
        | Command::Pause { service }
        | Command::Resume { service }
        | Command::History { service, .. }
        | Command::Check { service, .. }
        | Command::Logs { service, .. } => Some(service.as_str()),
        Command::Status { service } => service.as_deref(),
        _ => None,
    };
    if let Some(s) = service {
        if let Err(code) = known(t, s) {
            return code;
        }
    }
    let res: Result<ExitCode, ClientError> = match &cli.command {
        Command::Deploy {
            service,
            version,
            dry_run: true,
            ..
        }
        | Command::Plan { service, version } => ops::plan(c, service, version).await,
        Command::Deploy {
            service,
            version,
            no_wait,
            ..
        } => {
            if let Err(code) = confirmed(t, cli, service, &format!("deploy {version}")).await {
                return code;
            }
            deploy::deploy(c, service, version, *no_wait, &by).await
        }
        Command::Rollback { service, no_wait } => {
            if let Err(code) = confirmed(t, cli, service, "roll back to the previous release").await
            {
                return code;
            }
            deploy::rollback(c, service, *no_wait, &by).await
        }
        Command::Abort { service } => deploy::action(c, service, "abort", false, &by).await,
        Command::Promote { service, full } => {
            deploy::action(c, service, "promote", *full, &by).await
        }
        Command::Pause { service } => deploy::action(c, service, "pause", false, &by).await,
        Command::Resume { service } => deploy::action(c, service, "resume", false, &by).await,
        Command::Status { service } => show::status(c, service.as_deref()).await,
        Command::History { service, limit } => show::history(c, service, *limit).await,
        Command::Check { service, slot } => show::check(c, service, *slot).await,
        Command::Logs {
            service,
            slot,
            follow,
            lines,
        } => ops::logs(c, service, *slot, *lines, *follow).await,
        Command::Serve { .. }
        | Command::Validate
        | Command::Init { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Db(_)
        | Command::PreviewUrl { .. } => unreachable!("handled in run"),
    };
    res.unwrap_or_else(report)
}
