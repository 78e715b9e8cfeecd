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
}

impl Behaviour {
    /// A well-behaved instance of `version`.
    pub fn healthy(version: impl Into<String>) -> Behaviour {
        Behaviour {
            version: version.into(),
            error_rate: 0.0,
            latency: Duration::ZERO,
            unhealthy: false,
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
    serve(listener, behaviour, shutdown_signal()).await?;
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
}

type Shared = Arc<AppState>;

/// The router, without a socket.
pub fn app(behaviour: Behaviour) -> Router {
    let state = Arc::new(AppState {
        behaviour,
        items: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
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
    if user_facing && b.error_rate > 0.0 && fastrand::f64() < b.error_rate {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure\n").into_response();
    }
    next.run(req).await
}

async fn root(State(state): State<Shared>) -> String {
    format!("hello from {}\n", state.behaviour.version)
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

fn not_found(id: u64) -> Response {
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
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    items(&state).insert(id, body.name.clone());
    (StatusCode::CREATED, item(id, &body.name)).into_response()
}

async fn read_item(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
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
    match items(&state).get_mut(&id) {
        Some(name) => {
            name.clone_from(&body.name);
            item(id, name).into_response()
        }
        None => not_found(id),
    }
}

async fn delete_item(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
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
mod tests {
    use super::*;
    use crate::checks::http::{send, ProbeRequest};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DemoAppArgs,
    }

    fn args(extra: &[&str]) -> DemoAppArgs {
        let argv = ["demo-app", "--port", "0"].iter().chain(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let resp = send(addr, ProbeRequest::get(path), Duration::from_secs(5))
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        (resp.status.as_u16(), body)
    }

    #[tokio::test]
    async fn the_healthcheck_command_passes_on_2xx_only() {
        let addr = spawn_for_test(Behaviour::healthy("v1")).await;
        let t = Duration::from_secs(5);
        let ok = healthcheck(&format!("http://{addr}/health"), t).await;
        assert_eq!(ok, Ok(format!("GET http://{addr}/health: 200")));
        let missing = healthcheck(&format!("http://{addr}/nope"), t).await;
        assert_eq!(missing, Err(format!("GET http://{addr}/nope: 404")));
        assert!(healthcheck("https://x/", t).await.is_err());
    }

    #[tokio::test]
    async fn a_healthy_app_says_hello_with_its_version() {
        let addr = spawn_for_test(Behaviour::healthy("v7")).await;
        assert_eq!(get(addr, "/").await, (200, "hello from v7\n".to_string()));
        assert_eq!(
            get(addr, "/version").await,
            (200, r#"{"version":"v7"}"#.to_string())
        );
        assert_eq!(
            get(addr, "/ready").await,
            (200, r#"{"status":"ok"}"#.to_string())
        );
        let (status, body) = get(addr, "/health/deep").await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["checks"]["database"], "healthy");
        assert_eq!(
            get(addr, "/slow?ms=1").await,
            (200, "slept 1ms\n".to_string())
        );
    }

    #[tokio::test]
    async fn error_rate_one_fails_every_user_request_but_not_health() {
        let mut b = Behaviour::healthy("v2");
        b.error_rate = 1.0;
        let addr = spawn_for_test(b).await;
        for _ in 0..5 {
            assert_eq!(
                get(addr, "/").await,
                (500, "injected failure\n".to_string())
            );
        }
        assert_eq!(
            get(addr, "/items/1").await.0,
            404,
            "the items API is never faulted"
        );
        assert_eq!(get(addr, "/health").await.0, 200);
    }

    #[tokio::test]
    async fn an_unhealthy_app_answers_503_on_every_health_endpoint() {
        let mut b = Behaviour::healthy("v3");
        b.unhealthy = true;
        let addr = spawn_for_test(b).await;
        for path in ["/health", "/ready", "/health/deep"] {
            assert_eq!(get(addr, path).await.0, 503, "{path}");
        }
        assert!(get(addr, "/health/deep")
            .await
            .1
            .contains(r#""database":"unhealthy""#));
        assert_eq!(get(addr, "/").await.0, 200);
    }

    #[tokio::test]
    async fn items_can_be_created_read_updated_and_deleted() {
        let addr = spawn_for_test(Behaviour::healthy("v1")).await;
        let json_req = |method: http::Method, path: &str, body: &str| {
            let mut req = ProbeRequest::get(path);
            req.method = method;
            req.body = bytes::Bytes::from(body.to_string());
            req.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            req
        };
        let t = Duration::from_secs(5);
        let created = send(
            addr,
            json_req(http::Method::POST, "/items", r#"{"name":"a"}"#),
            t,
        )
        .await
        .unwrap();
        assert_eq!(created.status.as_u16(), 201);
        let created: Value = serde_json::from_slice(&created.body).unwrap();
        let id = created["id"].as_u64().unwrap();
        assert_eq!(created["name"], "a");
        let path = format!("/items/{id}");
        let updated = send(
            addr,
            json_req(http::Method::PUT, &path, r#"{"name":"b"}"#),
            t,
        )
        .await
        .unwrap();
        assert_eq!(updated.status.as_u16(), 200);
        assert!(get(addr, &path).await.1.contains(r#""name":"b""#));
        let deleted = send(addr, json_req(http::Method::DELETE, &path, ""), t)
            .await
            .unwrap();
        assert_eq!(deleted.status.as_u16(), 204);
        assert_eq!(get(addr, &path).await.0, 404);
    }

    #[tokio::test]
    async fn serve_returns_once_the_shutdown_future_completes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Behaviour::healthy("v1"), async {
            let _ = stopped.await;
        }));
        assert_eq!(get(addr, "/health").await.0, 200);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returned after shutdown")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_behaviour_file_table_for_the_running_version_overrides_the_flags() {
        let file = r#"
            [v3]
            unhealthy = true
            [v4]
            error_rate = 0.2
            latency_ms = 50
            [v5]
            exit_on_start = 3
        "#;
        let (b, exit) = resolve(
            &args(&["--version", "v4", "--error-rate", "0.5"]),
            Some(file),
        )
        .unwrap();
        assert_eq!(
            (b.error_rate, b.latency, b.unhealthy, exit),
            (0.2, Duration::from_millis(50), false, None)
        );
        let (b, _) = resolve(&args(&["--version", "v3", "--latency-ms", "7"]), Some(file)).unwrap();
        assert_eq!((b.unhealthy, b.latency), (true, Duration::from_millis(7)));
        let (_, exit) = resolve(&args(&["--version", "v5"]), Some(file)).unwrap();
        assert_eq!(exit, Some(3));
        let (b, exit) = resolve(&args(&["--version", "v9", "--unhealthy"]), Some(file)).unwrap();
        assert_eq!((b.unhealthy, exit), (true, None));
    }

    #[test]
    fn a_behaviour_file_read_from_disk_is_applied_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("behaviour.toml");
        std::fs::write(&path, "[v2]\nerror_rate = 1\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (b, _) = resolve(&args(&["--version", "v2"]), Some(&text)).unwrap();
        assert_eq!(b.error_rate, 1.0);
    }

    #[test]
    fn bad_rates_and_unknown_keys_are_rejected() {
        assert!(Cli::try_parse_from(["demo-app", "--port", "1", "--error-rate", "1.5"]).is_err());
        let a = args(&["--version", "v1"]);
        assert!(resolve(&a, Some("[v1]\nerror_rate = 2.0\n")).is_err());
        assert!(resolve(&a, Some("[v1]\nunhealty = true\n")).is_err());
    }
}
