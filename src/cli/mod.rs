//! Command-line interface: parse, dispatch, map results to exit codes.
//!
//! Exit codes (CI-friendly, documented in the README): 0 success; 1 the deployment
//! failed, was rolled back or was refused; 2 bad configuration or usage.
//! Every command except `serve`, `validate`, `demo` and `demo-app` talks to the
//! daemon's API; the API address and token come from the config file.

mod db;
pub(crate) mod deploy;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::client::{ApiClient, ClientError};
use crate::config::{self, Config};
use crate::domain::Slot;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Zero-downtime blue-green deployments with automatic rollback"
)]
pub struct Cli {
    /// Config file.
    #[arg(
        short,
        long,
        global = true,
        env = "CUTOVER_CONFIG",
        default_value = "cutover.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: proxy, controller, API and /metrics.
    Serve {
        /// Stop every slot's release when the daemon exits (default: leave them running
        /// for the next `serve` to adopt).
        #[arg(long)]
        stop_on_exit: bool,
    },
    /// Deploy VERSION of SERVICE into its idle slot; waits until it is live and settled.
    Deploy {
        service: String,
        version: String,
        /// Return once the deployment has started instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// Print the final deployment record as JSON instead of progress.
        #[arg(long)]
        json: bool,
    },
    /// Show services, slots, traffic and any deployment in progress.
    Status {
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Past deployments of SERVICE, newest first.
    History {
        service: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Send SERVICE's traffic back to its previous release.
    Rollback {
        service: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop SERVICE's deployment in progress safely (during canary steps: all traffic
    /// back to the old slot).
    Abort { service: String },
    /// Advance SERVICE's canary one step (or end its hold).
    Promote {
        service: String,
        /// Straight to 100 %.
        #[arg(long)]
        full: bool,
    },
    /// Hold SERVICE's canary at its current step.
    Pause { service: String },
    /// Let SERVICE's held canary go on.
    Resume { service: String },
    /// Run SERVICE's health checks and smoke tests against one slot now.
    Check {
        service: String,
        #[arg(long)]
        slot: Slot,
        #[arg(long)]
        json: bool,
    },
    /// Check the config file and report every mistake.
    Validate,
    /// A service's PostgreSQL database: status, lint, backup, backups, restore, down.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Print a signed, expiring token (and how to use it) that opens SERVICE's
    /// preview slot through the public listener; needs `[proxy.preview] enabled`.
    PreviewUrl {
        service: String,
        /// How long the token is valid, at most `[proxy.preview] token_ttl`.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
}

/// Runs one parsed command of this module (the binary adds the demo's commands to the
/// same parser, see `main.rs`: `cli` and `demo` sit side by side and do not import each
/// other).
pub fn main(cli: Cli) -> ExitCode {
    let default_log = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    edge(default_log, run(cli))
}

/// Runs one command at the binary's edge: logs to stderr (`CUTOVER_LOG`, else
/// `default_log`), a multi-threaded runtime, and an error printed with its causes as
/// exit code 1.
pub fn edge(
    default_log: &str,
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    init_tracing(default_log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads the config, printing every problem and returning exit code 2 on failure.
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Loads every `[[proxy.tls]]` certificate; a file that cannot be used is a config
/// error (exit 2) naming the file and what is wrong with it.
fn tls_edge(c: &Config) -> Result<std::sync::Arc<crate::proxy::tls::TlsEdge>, ExitCode> {
    crate::proxy::tls::TlsEdge::from_config(&c.proxy.edge.tls)
        .map(std::sync::Arc::new)
        .map_err(|e| {
            eprintln!("error: proxy.tls: {e}");
            ExitCode::from(2)
        })
}

/// `cutover preview-url SERVICE`: a token signed with the preview secret, printed
/// with the header and cookie that carry it. Exit 2 when preview is off or the service
/// unknown.
fn preview_url(cfg: &Config, service: &str, ttl: Option<std::time::Duration>) -> ExitCode {
    let preview = &cfg.proxy.edge.preview;
    let Some(svc) = cfg.services.get(service) else {
        eprintln!("error: unknown service `{service}`");
        return ExitCode::from(2);
    };
    let (true, Some(secret)) = (preview.enabled, preview.secret.as_deref()) else {
        eprintln!(
            "error: preview by header or cookie is off: set [proxy.preview] enabled = true \
             and a secret (secret_env = {:?})",
            preview.secret_env
        );
        return ExitCode::from(2);
    };
    let ttl = ttl.unwrap_or(preview.token_ttl).min(preview.token_ttl);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires = now + ttl.as_secs().max(1);
    let token = crate::proxy::preview::sign(secret, service, expires);
    let host = svc
        .hosts
        .first()
        .cloned()
        .or_else(|| svc.listen.map(|l| l.to_string()))
        .unwrap_or_else(|| "localhost".into());
    println!("{token}");
    eprintln!(
        "valid for {} (until Unix time {expires}); send it as\n  {}: {token}\nor as the cookie\n  {}={token}\ne.g. curl -H '{}: {token}' http://{host}/",
        humantime::format_duration(std::time::Duration::from_secs(expires - now)),
        cfg.proxy.preview_header,
        cfg.proxy.preview_cookie,
        cfg.proxy.preview_header,
    );
    ExitCode::SUCCESS
}

pub(crate) fn client_for(cfg: &Config) -> ApiClient {
    let client = ApiClient::new(cfg.api.listen, crate::daemon::client_token(cfg));
    match &cfg.api.tls {
        // The API serves HTTPS: trust it by `tls_ca_file` (else the system store).
        Some(tls) => client.with_tls(&crate::tls::ClientTls {
            ca_file: tls.ca_file.clone(),
            ..Default::default()
        }),
        None => client,
    }
}

/// Prints an API/client error; 4xx usage errors exit 2, the rest 1.
pub(crate) fn report(e: ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(if e.is_usage() { 2 } else { 1 })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config.clone();
    let cfg = || load_config(&path);
    Ok(match cli.command {
        Command::Validate => match cfg().and_then(|c| tls_edge(&c).map(|_| c)) {
            Ok(c) => {
                println!("{}: ok ({} service(s))", path.display(), c.services.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Db(cmd) => match cfg() {
            Ok(c) => db::run(&c, cmd).await?,
            Err(code) => code,
        },
        Command::PreviewUrl { service, ttl } => match cfg() {
            Ok(c) => preview_url(&c, &service, ttl.map(Into::into)),
            Err(code) => code,
        },
        Command::Serve { stop_on_exit } => match cfg().and_then(|c| Ok((tls_edge(&c)?, c))) {
            Ok((tls, c)) => {
                let opts = crate::daemon::ServeOptions { stop_on_exit, tls };
                crate::daemon::serve(c, opts).await?;
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        other => match cfg() {
            Ok(c) => client_command(&c, other).await,
            Err(code) => code,
        },
    })
}

async fn client_command(cfg: &Config, cmd: Command) -> ExitCode {
    let client = client_for(cfg);
    let known = |s: &str| -> Result<(), ExitCode> {
        if cfg.services.contains_key(s) {
            Ok(())
        } else {
            let names: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
            eprintln!(
                "error: unknown service `{s}`; the config has: {}",
                names.join(", ")
            );
            Err(ExitCode::from(2))
        }
    };
    let res = match cmd {
        Command::Deploy {
            service,
            version,
            no_wait,
            json,
        } => match known(&service) {
            Ok(()) => deploy::deploy(&client, &service, &version, no_wait, json).await,
            Err(c) => return c,
        },
        Command::Rollback {
            service,
            no_wait,
            json,
        } => match known(&service) {
            Ok(()) => deploy::rollback(&client, &service, no_wait, json).await,
            Err(c) => return c,
        },
        Command::Abort { service } => match known(&service) {
            Ok(()) => deploy::abort(&client, &service).await,
            Err(c) => return c,
        },
        Command::Promote { service, full } => match known(&service) {
            Ok(()) => deploy::canary_action(&client, &service, "promote", full).await,
            Err(c) => return c,
        },
        Command::Pause { service } => match known(&service) {
            Ok(()) => deploy::canary_action(&client, &service, "pause", false).await,
            Err(c) => return c,
        },
        Command::Resume { service } => match known(&service) {
            Ok(()) => deploy::canary_action(&client, &service, "resume", false).await,
            Err(c) => return c,
        },
        Command::Status { service, json } => {
            if let Some(s) = &service {
                if let Err(c) = known(s) {
                    return c;
                }
            }
            show::status(&client, service.as_deref(), json).await
        }
        Command::History {
            service,
            limit,
            json,
        } => match known(&service) {
            Ok(()) => show::history(&client, &service, limit, json).await,
            Err(c) => return c,
        },
        Command::Check {
            service,
            slot,
            json,
        } => match known(&service) {
            Ok(()) => show::check(&client, &service, slot, json).await,
            Err(c) => return c,
        },
        Command::Serve { .. } | Command::Validate | Command::Db(_) | Command::PreviewUrl { .. } => {
            unreachable!("handled in run")
        }
    };
    res.unwrap_or_else(report)
}
