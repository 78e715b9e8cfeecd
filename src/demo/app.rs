//! The demo HTTP app: the service Cutover deploys in the demo and in end-to-end tests.
//!
//! It lives in the binary (`cutover demo-app`) so that a demo or a test needs nothing
//! but Cutover itself. Each release is the same code told how to misbehave (failures,
//! latency, failing health checks, dying at start) by flags or, per version, by a
//! behaviour file, which is how the demo shows a bad release being rolled back.
//!
//! It logs nothing per request: it runs under load generators.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// `cutover demo-app --port ...` serves; `cutover demo-app healthcheck --url ...` probes
/// a running instance (a `FROM scratch` image has no curl for its HEALTHCHECK).
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DemoAppCommand {
    #[command(subcommand)]
    pub probe: Option<DemoAppProbe>,
    #[command(flatten)]
    pub serve: Option<DemoAppArgs>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum DemoAppProbe {
    /// Exit 0 if GET <url> answers 2xx within the timeout, else print why and exit 1.
    Healthcheck {
        /// e.g. http://127.0.0.1:8080/health
        #[arg(long)]
        url: String,
        /// Time allowed for the whole request.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

impl DemoAppCommand {
    pub async fn run(self) -> anyhow::Result<std::process::ExitCode> {
        match (self.probe, self.serve) {
            (Some(DemoAppProbe::Healthcheck { url, timeout }), _) => {
                Ok(match healthcheck(&url, timeout).await {
                    Ok(line) => {
                        println!("{line}");
                        std::process::ExitCode::SUCCESS
                    }
                    Err(why) => {
                        println!("{why}");
                        std::process::ExitCode::FAILURE
                    }
                })
            }
            (None, Some(args)) => run(args).await.map(|()| std::process::ExitCode::SUCCESS),
            (None, None) => anyhow::bail!("demo-app needs --port (or the healthcheck command)"),
        }
    }
}

/// One GET of an `http://host:port/path` URL: `Ok` on a 2xx status.
pub async fn healthcheck(url: &str, timeout: Duration) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("expected an http:// URL, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|_| format!("expected http://<ip>:<port>/<path>, got {url:?}"))?;
    let req = crate::checks::http::ProbeRequest::get(path);
    let resp = crate::checks::http::send(addr, req, timeout)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status.as_u16();
    if (200..300).contains(&status) {
        Ok(format!("GET {url}: {status}"))
    } else {
        Err(format!("GET {url}: {status}"))
    }
}

/// `cutover demo-app ...`
#[derive(clap::Args, Debug, Clone)]
pub struct DemoAppArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Version this instance reports.
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Share (0..=1) of `GET /` requests answered 500 "injected failure".
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Milliseconds added to every response.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Answer 503 on /health, /ready and /health/deep.
    #[arg(long)]
    pub unhealthy: bool,
    /// TOML file with one table per version (`[v3] unhealthy = true`) that overrides
    /// the flags for the running version. Keys: unhealthy, error_rate, latency_ms,
    /// exit_on_start.
    #[arg(long, value_name = "FILE")]
    pub behaviour: Option<PathBuf>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

/// How the app behaves, after the behaviour file has been applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    pub version: String,
    pub error_rate: f64,
    pub latency: Duration,
    pub unhealthy: bool,
    /// After this many requests to `/`, switch to `degraded_error_rate` (a release that
    /// goes bad under real traffic, e.g. half-way through a canary).
    pub degrade_after_requests: Option<u64>,
    pub degraded_error_rate: f64,
}

impl Behaviour {
    /// A well-behaved instance of `version`.
    pub fn healthy(version: impl Into<String>) -> Behaviour {
        Behaviour {
            version: version.into(),
            error_rate: 0.0,
            latency: Duration::ZERO,
            unhealthy: false,
            degrade_after_requests: None,
            degraded_error_rate: 0.0,
        }
    }
}

/// One version's table in the behaviour file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    unhealthy: Option<bool>,
    error_rate: Option<f64>,
    latency_ms: Option<u64>,
    exit_on_start: Option<i32>,
    degrade_after_requests: Option<u64>,
    degraded_error_rate: Option<f64>,
}

/// The behaviour for `args`, with `file_text` (the behaviour file) applied, and the
/// exit code to die with at start if the file asks for one.
pub fn resolve(
    args: &DemoAppArgs,
    file_text: Option<&str>,
) -> anyhow::Result<(Behaviour, Option<i32>)> {
    let mut behaviour = Behaviour {
        version: args.version.clone(),
        error_rate: args.error_rate,
        latency: Duration::from_millis(args.latency_ms),
        unhealthy: args.unhealthy,
        degrade_after_requests: None,
        degraded_error_rate: 0.0,
    };
    let Some(text) = file_text else {
        return Ok((behaviour, None));
    };
    let mut tables: BTreeMap<String, Override> = toml::from_str(text)?;
    let o = tables.remove(&args.version).unwrap_or_default();
    if let Some(rate) = o.error_rate {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "[{}] error_rate: {rate} is not between 0 and 1",
            args.version
        );
        behaviour.error_rate = rate;
    }
    if let Some(ms) = o.latency_ms {
        behaviour.latency = Duration::from_millis(ms);
    }
    if let Some(unhealthy) = o.unhealthy {
        behaviour.unhealthy = unhealthy;
    }
    if let Some(rate) = o.degraded_error_rate {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "[{}] degraded_error_rate: {rate} is not between 0 and 1",
            args.version
        );
        behaviour.degraded_error_rate = rate;
    }
    behaviour.degrade_after_requests = o.degrade_after_requests;
    Ok((behaviour, o.exit_on_start))
}

/// Binds, serves until SIGTERM or SIGINT, then shuts down gracefully (in-flight
/// requests finish). Exits the process at once if the behaviour file says
/// `exit_on_start` for this version.
pub async fn run(args: DemoAppArgs) -> anyhow::Result<()> {
    let file_text = match &args.behaviour {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading behaviour file {}", path.display()))?,
        ),
        None => None,
    };
    let (behaviour, exit_code) = resolve(&args, file_text.as_deref()).with_context(|| {
        let path = args
            .behaviour
            .as_deref()
            .unwrap_or(std::path::Path::new("-"));
        format!("behaviour file {}", path.display())
    })?;
    if let Some(code) = exit_code {
        eprintln!(
            "demo-app {}: exiting with code {code} (exit_on_start in the behaviour file)",
            behaviour.version
        );
        std::process::exit(code);
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    eprintln!(
        "demo-app {} listening on {}",
        behaviour.version,
        listener.local_addr()?
    );
    let db = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(Arc::new(super::app_db::connect(&url).await?)),
        _ => None,
    };
    axum::serve(listener, app_with_db(behaviour, db))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Serves the app on `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    behaviour: Behaviour,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(behaviour))
        .with_graceful_shutdown(shutdown)
        .await
}

struct AppState {
    behaviour: Behaviour,
    items: Mutex<BTreeMap<u64, String>>,
    next_id: AtomicU64,
    /// Requests to `/` so far (for `degrade_after_requests`).
    served: AtomicU64,
    /// `DATABASE_URL` was set: items live in PostgreSQL (`app_db.rs`).
    db: Option<Arc<tokio_postgres::Client>>,
}

type Shared = Arc<AppState>;

/// The router, without a socket.
pub fn app(behaviour: Behaviour) -> Router {
    app_with_db(behaviour, None)
}

/// The router, with items in PostgreSQL when `db` is given.
pub fn app_with_db(behaviour: Behaviour, db: Option<Arc<tokio_postgres::Client>>) -> Router {
    let state = Arc::new(AppState {
        db,
        behaviour,
        items: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
        served: AtomicU64::new(0),
    });
    Router::new()
        .route("/", get(root))
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/ready", get(health))
        .route("/health/deep", get(deep_health))
        .route("/slow", get(slow))
        .route("/items", axum::routing::post(create_item))
        .route(
            "/items/{id}",
            get(read_item).put(update_item).delete(delete_item),
        )
        .layer(middleware::from_fn_with_state(state.clone(), misbehave))
        .with_state(state)
}

/// Adds the configured latency to every response and injects failures into the
/// user-facing routes (never into health checks: those fail only via `unhealthy`).
async fn misbehave(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let b = &state.behaviour;
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    let path = req.uri().path();
    // Only the page users load fails: the items API (what the smoke tests use) keeps
    // working, so a bad release passes its smoke tests and is caught by live traffic.
    let user_facing = path == "/";
    let mut rate = b.error_rate;
    if user_facing {
        let n = state.served.fetch_add(1, Ordering::Relaxed) + 1;
        if b.degrade_after_requests.is_some_and(|after| n > after) {
            rate = b.degraded_error_rate;
        }
    }
    if user_facing && rate > 0.0 && fastrand::f64() < rate {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure\n").into_response();
    }
    next.run(req).await
}

async fn root(State(state): State<Shared>) -> Response {
    match &state.db {
        None => format!("hello from {}\n", state.behaviour.version).into_response(),
        Some(db) => match super::app_db::count(db).await {
            // The body stays the same (the load generator reads the version from it).
            Ok(_) => format!("hello from {}\n", state.behaviour.version).into_response(),
            Err(failed) => failed,
        },
    }
}

async fn version(State(state): State<Shared>) -> Json<Value> {
    Json(json!({ "version": state.behaviour.version }))
}

async fn health(State(state): State<Shared>) -> (StatusCode, Json<Value>) {
    if state.behaviour.unhealthy {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    }
}

async fn deep_health(State(state): State<Shared>) -> (StatusCode, Json<Value>) {
    let (code, status, database) = if state.behaviour.unhealthy {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy", "unhealthy")
    } else {
        (StatusCode::OK, "ok", "healthy")
    };
    let body = json!({
        "status": status,
        "version": state.behaviour.version,
        "checks": {"database": database, "cache": "healthy"},
    });
    (code, Json(body))
}

#[derive(Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(Query(params): Query<SlowParams>) -> String {
    let ms = params.ms.unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms}ms\n")
}

#[derive(Deserialize)]
struct ItemBody {
    name: String,
}

fn item(id: u64, name: &str) -> Json<Value> {
    Json(json!({"id": id, "name": name}))
}

pub(super) fn not_found(id: u64) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no item {id}")})),
    )
        .into_response()
}

fn items(state: &AppState) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
    // A panic while holding the lock cannot leave the map half-updated.
    state.items.lock().unwrap_or_else(|e| e.into_inner())
}

async fn create_item(State(state): State<Shared>, Json(body): Json<ItemBody>) -> Response {
    if let Some(db) = &state.db {
        return super::app_db::create(db, &body.name).await;
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    items(&state).insert(id, body.name.clone());
    (StatusCode::CREATED, item(id, &body.name)).into_response()
}

async fn read_item(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
    if let Some(db) = &state.db {
        return super::app_db::read(db, id).await;
    }
    match items(&state).get(&id) {
        Some(name) => item(id, name).into_response(),
        None => not_found(id),
    }
}

async fn update_item(
    State(state): State<Shared>,
    Path(id): Path<u64>,
    Json(body): Json<ItemBody>,
) -> Response {
    if let Some(db) = &state.db {
        return super::app_db::update(db, id, &body.name).await;
    }
    match items(&state).get_mut(&id) {
        Some(name) => {
            name.clone_from(&body.name);
            item(id, name).into_response()
        }
        None => not_found(id),
    }
}

async fn delete_item(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
    if let Some(db) = &state.db {
        return super::app_db::delete(db, id).await;
    }
    match items(&state).remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(id),
    }
}

/// Serves a demo app on a free loopback port for the life of the test's runtime.
#[cfg(test)]
pub(crate) async fn spawn_for_test(behaviour: Behaviour) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, behaviour, std::future::pending()));
    addr
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
