//! Command-line interface: parse, dispatch, map results to exit codes.
//!
//! Exit codes (CI-friendly, documented in the README): 0 success; 1 the deployment
//! failed, was rolled back or was refused; 2 bad configuration or usage.
//! Every command except `serve`, `validate`, `init`, `completions`, `man`, `demo` and
//! `demo-app` talks to the daemon's API, found through `--api`/`CUTOVER_API_URL` or the
//! config file (`target.rs`); `db` and `preview-url` read the config file itself.

mod confirm;
mod db;
pub(crate) mod deploy;
mod dispatch;
mod docs;
mod init;
mod ops;
pub(crate) mod output;
mod preview;
mod show;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::client::ClientError;
use crate::domain::Slot;
use output::{fail, json_out, mode, say};

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
    /// Log lines on stderr: `text`, or `json` (one object a line; a deployment's lines
    /// carry `span.service` and `span.id`).
    #[arg(long, global = true, env = "CUTOVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The daemon's API, e.g. http://10.0.0.5:7070 (else `[api] listen` of the config).
    #[arg(long, global = true, env = "CUTOVER_API_URL", value_name = "URL")]
    pub api: Option<String>,
    /// The API token (else the config's). Prefer CUTOVER_TOKEN: an argument is visible
    /// in the process list.
    #[arg(long, global = true, env = "CUTOVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Who is asking, recorded as the deployment's `triggered_by` (else a CI user
    /// variable such as GITHUB_ACTOR, else the OS user).
    #[arg(long, global = true, env = "CUTOVER_ACTOR", value_name = "NAME")]
    pub actor: Option<String>,
    /// Print the result as JSON (errors too: {"error": {"code", "message"}} on stdout).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors; the exit code says the rest.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail: -v the API calls, -vv debug logs too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Go ahead without asking (needed for production services without a terminal).
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,
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
        /// Show what the deploy would do (like `plan`) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// What deploying VERSION of SERVICE would do now: slot, checks, strategy, router
    /// change, hooks, pending migrations. Changes nothing.
    Plan { service: String, version: String },
    /// Show services, slots, traffic and any deployment in progress.
    Status { service: Option<String> },
    /// Past deployments of SERVICE, newest first.
    History {
        service: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Send SERVICE's traffic back to its previous release.
    Rollback {
        service: String,
        #[arg(long)]
        no_wait: bool,
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
    },
    /// The output of SERVICE's release in a slot (default: the live one).
    Logs {
        service: String,
        #[arg(long)]
        slot: Option<Slot>,
        /// Keep printing new lines until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines (1-10000).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Check the config file and report every mistake.
    Validate,
    /// Write a commented starting config file (to -c, default cutover.toml).
    Init {
        #[arg(long, value_enum, default_value = "process")]
        runtime: init::InitRuntime,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
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
    /// Print a shell completion script: `cutover completions bash > /etc/bash_completion.d/cutover`.
    Completions {
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Print the man page (roff): `cutover man | man -l -`.
    Man,
}

/// Runs one parsed command of this module; `full` is the whole command line
/// definition (with the demo's commands `main.rs` adds) for completions and the man
/// page.
pub fn main(cli: Cli, full: clap::Command) -> ExitCode {
    let _ = LOG_FORMAT.set(cli.log_format);
    output::set(output::Mode {
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
    });
    let default_log = match (&cli.command, cli.verbose) {
        (Command::Serve { .. }, _) => "info",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    edge(default_log, run(cli, full))
}

/// Runs one command at the binary's edge: logs to stderr (`CUTOVER_LOG`, else
/// `default_log`), a multi-threaded runtime, and an error printed with its causes as
/// exit code 1 (as JSON on stdout under `--json`).
pub fn edge(
    default_log: &str,
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    init_tracing(default_log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::proxy::workers::tidy_on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, "runtime", format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(command) {
        Ok(code) => code,
        Err(e) => fail(1, "failed", format!("{e:#}")),
    }
}

/// The log line format on stderr (`--log-format`, `CUTOVER_LOG_FORMAT`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Set by [`main`] from the parsed flag; the demo's commands (parsed apart) read the
/// environment variable.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = LOG_FORMAT.get().copied().unwrap_or_else(|| {
        match std::env::var("CUTOVER_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // One object a line: timestamp, level, target, `fields.message`, and the
        // innermost span (`span.name`, `span.service`, `span.id` inside a deployment)
        // plus the list of enclosing spans.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Loads every `[[proxy.tls]]` certificate; a file that cannot be used is a config
/// error (exit 2) naming the file and what is wrong with it.
fn tls_edge(
    c: &crate::config::Config,
) -> Result<std::sync::Arc<crate::proxy::tls::TlsEdge>, ExitCode> {
    crate::proxy::tls::TlsEdge::from_config(&c.proxy.edge.tls)
        .map(std::sync::Arc::new)
        .map_err(|e| {
            eprintln!("error: proxy.tls: {e}");
            ExitCode::from(2)
        })
}

/// Prints an API/client error; 4xx usage errors exit 2, the rest 1.
pub(crate) fn report(e: ClientError) -> ExitCode {
    let kind = e.code().to_owned();
    fail(if e.is_usage() { 2 } else { 1 }, &kind, e)
}

async fn run(cli: Cli, full: clap::Command) -> anyhow::Result<ExitCode> {
    let path = cli.config.clone();
    let cfg = || target::load_config(&path);
    Ok(match cli.command {
        Command::Validate => match cfg().and_then(|c| tls_edge(&c).map(|_| c)) {
            Ok(c) => {
                if mode().json {
                    let names: Vec<&String> = c.services.keys().collect();
                    json_out(&serde_json::json!({
                        "file": path, "ok": true, "services": names
                    }));
                } else {
                    say!("{}: ok ({} service(s))", path.display(), c.services.len());
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Init { runtime, force } => init::run(&path, runtime, force),
        Command::Completions { shell } => docs::completions(full, shell),
        Command::Man => docs::man(full),
        Command::Db(db::DbCommand::Lint {
            ref service,
            all: true,
        }) if path.exists() => match cfg() {
            Ok(c) => db::lint_all(&c, service)?,
            Err(code) => code,
        },
        Command::Db(ref cmd) => match target::resolve(&cli) {
            Ok(t) => {
                let actor = target::actor(cli.actor.as_deref());
                db::run(&t.client, cmd, cli.yes, &actor).await
            }
            Err(code) => code,
        },
        Command::PreviewUrl { service, ttl } => match cfg() {
            Ok(c) => preview::preview_url(&c, &service, ttl.map(Into::into)),
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
        _ => match target::resolve(&cli) {
            Ok(t) => dispatch::client_command(&t, &cli).await,
            Err(code) => code,
        },
    })
}
