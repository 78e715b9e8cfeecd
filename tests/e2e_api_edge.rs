//! The API as an attacker meets it (issue #12, item 5), with the real binary: the
//! token on reads when configured, the Host check against DNS rebinding, every error
//! in the documented JSON shape, safe versions, control characters stripped from who
//! triggered a deployment, and the lockout after repeated failed authentication.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::{Harness, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw HTTP/1.1 request to the API; the status and the body as JSON (`Null` when
/// the body is not JSON).
async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {api}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let exchange = async {
        let mut s = TcpStream::connect(api).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    };
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("the API answered in time");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// The error code of a JSON error body, or a note that it is not one.
fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or("(not the JSON error shape)")
}

async fn daemon(read_requires_token: bool) -> Harness {
    let mut b = Harness::builder();
    if read_requires_token {
        b = b.edit(
            "token = \"demo-token\"\n",
            "token = \"demo-token\"\nread_requires_token = true\n",
        );
    }
    let mut h = b.build().await;
    h.start().await;
    h
}

#[tokio::test]
async fn reads_need_the_token_when_configured_and_healthz_never_does() {
    let h = daemon(true).await;
    let auth = bearer();
    let (status, body) = call(h.api, "GET", "/api/v1/services", &[], "").await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, _) = call(h.api, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 401);
    let (status, body) = call(
        h.api,
        "GET",
        "/api/v1/services",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array());
    let (status, _) = call(h.api, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_host_that_does_not_name_the_api_is_refused() {
    let h = daemon(false).await;
    let port = h.api.port();
    for host in ["evil.example", "attacker.example:7070", "10.11.12.13"] {
        let (status, body) = call(h.api, "GET", "/api/v1/services", &[("Host", host)], "").await;
        assert_eq!((status, code(&body)), (403, "host_not_allowed"), "{host}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
    ] {
        let (status, _) = call(h.api, "GET", "/api/v1/services", &[("Host", &host)], "").await;
        assert_eq!(status, 200, "{host}");
    }
}

#[tokio::test]
async fn every_error_is_the_documented_json_shape() {
    let h = daemon(false).await;
    let auth = bearer();
    let a = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let big = format!(
        "{{\"version\": \"v1\", \"triggered_by\": \"{}\"}}",
        "x".repeat(100_000)
    );
    let cases: [(&str, &str, &str, u16); 8] = [
        ("POST", "/api/v1/services/web/deploy", big.as_str(), 413),
        ("GET", "/api/v1/services/web/history?limit=abc", "", 400),
        ("DELETE", "/api/v1/services", "", 405),
        ("POST", "/api/v1/services/web/deploy", "[\"v2\"]", 400),
        (
            "POST",
            "/api/v1/services/web/deploy",
            "{\"version\": \"v1..x\"}",
            400,
        ),
        (
            "POST",
            "/api/v1/services/web/deploy",
            "{\"version\": \"../etc\"}",
            400,
        ),
        (
            "POST",
            "/api/v1/services/web/deploy",
            "{\"version\": \".hidden\"}",
            400,
        ),
        ("GET", "/api/v1/nothing-here", "", 404),
    ];
    for (method, path, body, want) in cases {
        let (status, json) = call(h.api, method, path, &a, body).await;
        assert_eq!(
            status,
            want,
            "{method} {path} {}",
            &body[..body.len().min(40)]
        );
        assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{method} {path}: not the JSON error shape: {json}"
        );
    }
    let (_, json) = call(h.api, "POST", "/api/v1/services/web/deploy", &a, "[\"v2\"]").await;
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON object"),
        "{json}"
    );
}

#[tokio::test]
async fn control_characters_in_triggered_by_are_not_stored() {
    let h = daemon(false).await;
    let auth = bearer();
    let a = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = r#"{"version": "v1", "triggered_by": "ci\u001b[2J\u0007-bot\r\n"}"#;
    let (status, json) = call(h.api, "POST", "/api/v1/services/web/deploy", &a, body).await;
    assert_eq!(status, 202, "{json}");
    let id = json["deployment_id"].as_i64().unwrap();
    let (status, json) = call(h.api, "GET", &format!("/api/v1/deployments/{id}"), &a, "").await;
    assert_eq!(status, 200);
    assert_eq!(json["deployment"]["triggered_by"], "ci[2J-bot");
}

#[tokio::test]
async fn repeated_failed_authentication_locks_the_client_out() {
    let h = daemon(false).await;
    let wrong = [("Authorization", "Bearer wrong-token")];
    // cutover::api guard: 20 failures a minute per address.
    for i in 0..20 {
        let (status, body) = call(h.api, "POST", "/api/v1/services/web/abort", &wrong, "").await;
        assert_eq!((status, code(&body)), (401, "unauthorized"), "attempt {i}");
    }
    let (status, body) = call(h.api, "POST", "/api/v1/services/web/abort", &wrong, "").await;
    assert_eq!((status, code(&body)), (429, "too_many_failures"));
    // Locked out: even the right token waits for the window to end.
    let auth = bearer();
    let (status, _) = call(
        h.api,
        "POST",
        "/api/v1/services/web/abort",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 429);
    // Reads stay open (they need no token here).
    let (status, _) = call(h.api, "GET", "/api/v1/services", &[], "").await;
    assert_eq!(status, 200);
}
