//! Tests of `app.rs`.
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

#[tokio::test]
async fn a_release_degrades_after_the_configured_number_of_requests() {
    let mut b = Behaviour::healthy("v5");
    b.degrade_after_requests = Some(3);
    b.degraded_error_rate = 1.0;
    let addr = spawn_for_test(b).await;
    for _ in 0..3 {
        assert_eq!(get(addr, "/").await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(addr, "/").await.0, 500);
    }
    assert_eq!(get(addr, "/health").await.0, 200, "health is never faulted");
}
