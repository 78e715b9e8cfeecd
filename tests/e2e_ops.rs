//! Operating Cutover (issue #15, items 4 and 5), with the real binary: every route the
//! OpenAPI document describes is served with its method, the JSON log format carries
//! the deployment's service and id, and `/metrics` names the build and each service's
//! phase.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{http_get, Harness, SERVICE, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw request; the status code and, for a 404, the whole answer (the head only is
/// read otherwise, so an endless event stream answers too).
async fn status_of(api: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let exchange = async {
        let mut s = TcpStream::connect(api).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        if out.get(9..12) == Some(b"404") {
            s.read_to_end(&mut out).await.unwrap();
        }
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the API answered in time");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The router's own 404 (no such route), as opposed to a handler's (no such service
/// resource, e.g. a service without a database).
fn no_such_route(answer: &(u16, String)) -> bool {
    answer.0 == 404 && answer.1.contains("no such API route")
}

#[tokio::test]
async fn every_route_the_document_describes_is_served_with_its_method() {
    let mut h = Harness::builder().build().await;
    h.start().await;
    let id = h.deploy_no_wait("v1").await;
    h.wait_finished(id, 60).await;

    let (status, text) = http_get(h.api, "/api/v1/openapi.json").await.unwrap();
    assert_eq!(status, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{} paths described", paths.len());
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{name}", SERVICE)
                .replace("{id}", &id.to_string());
            // Empty bodies and no query: mutations are refused (400/409) by the
            // handler, which proves the route is there without changing anything.
            let answer = status_of(h.api, &method.to_uppercase(), &concrete).await;
            let status = answer.0;
            assert!(
                (200..500).contains(&status) && !no_such_route(&answer) && status != 405,
                "{} {path} is described but answered {}",
                method.to_uppercase(),
                answer.1
            );
        }
    }
    // And a path the document does not describe is not served.
    assert!(no_such_route(
        &status_of(h.api, "POST", "/api/v1/services/web/explode").await
    ));
    assert_eq!(
        status_of(h.api, "GET", "/api/v1/services/web/deploy")
            .await
            .0,
        405
    );
    // Nothing above changed the service: still v1 and one deployment.
    let history = h.cli(&["history", SERVICE, "--json"]).await.json();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
}

#[tokio::test]
async fn json_logs_carry_the_service_and_deployment_id_and_metrics_name_build_and_phase() {
    let mut h = Harness::builder().watch("3s").build().await;
    h.start_with_env(&[("CUTOVER_LOG_FORMAT", "json")]).await;

    let (_, idle) = http_get(h.api, "/metrics").await.unwrap();
    assert!(
        idle.contains(&format!(
            "cutover_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{idle}"
    );
    assert!(
        idle.contains("cutover_deployment_phase{service=\"web\",phase=\"idle\"} 1"),
        "{idle}"
    );
    assert!(idle.contains("# HELP cutover_switch_duration_seconds Time inside Cutover from the state machine deciding"));

    let id = h.deploy_no_wait("v1").await;
    h.wait_for_phase(id, "watch", 60).await;
    let (_, watching) = http_get(h.api, "/metrics").await.unwrap();
    let line = watching
        .lines()
        .find(|l| l.starts_with("cutover_deployment_phase{service=\"web\""))
        .expect("a phase series for web");
    assert!(
        !line.contains("phase=\"idle\"") && line.ends_with(" 1"),
        "during the deployment: {line}"
    );
    h.wait_finished(id, 60).await;

    let log = std::fs::read_to_string(h.dir().join("daemon-1.log")).unwrap();
    let mut lines = 0;
    let mut in_deployment = 0;
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {l}"));
        lines += 1;
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        if v["span"]["name"] == "deployment" {
            assert_eq!(v["span"]["service"], SERVICE, "{l}");
            assert_eq!(v["span"]["id"], id, "{l}");
            in_deployment += 1;
        }
    }
    assert!(
        lines > 0 && in_deployment > 0,
        "{lines} lines, {in_deployment} in the deployment:\n{log}"
    );
}

#[tokio::test]
async fn an_unknown_log_format_is_a_usage_error_naming_the_choices() {
    let out = std::process::Command::new(support::exe())
        .args(["--log-format", "yaml", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}
