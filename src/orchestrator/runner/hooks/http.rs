//! An HTTP hook: one request through the probe client (`checks/http.rs`), bounded by
//! the hook's timeout (name resolution included); it passes on an expected status.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{clean, HookRun};
use crate::checks::http::{send, HttpError, ProbeRequest};
use crate::checks::human_duration;
use crate::config::HttpHook;

pub(super) async fn run(h: &HttpHook, timeout: Duration) -> HookRun {
    let started = Instant::now();
    let fail = |status: String| HookRun::failed(status, started);
    let host = h
        .url
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = h.url.port_u16().unwrap_or(80);
    let addr =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port))).await {
            Err(_) => return fail(format!("timed out after {}", human_duration(timeout))),
            Ok(Err(e)) => return fail(format!("cannot resolve {host}: {e}")),
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(a) => a,
                None => return fail(format!("cannot resolve {host}: no address")),
            },
        };
    let mut headers = HeaderMap::new();
    for (name, value) in &h.headers {
        // Both were checked when the config was read.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    if let Some(Ok(authority)) = h.url.authority().map(|a| HeaderValue::from_str(a.as_str())) {
        headers.entry(http::header::HOST).or_insert(authority);
    }
    let req = ProbeRequest {
        method: Method::from_bytes(h.method.as_bytes()).unwrap_or(Method::POST),
        path: h
            .url
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers,
        body: h.body.clone().map(Bytes::from).unwrap_or_default(),
    };
    let left = timeout.saturating_sub(started.elapsed());
    match send(addr, req, left).await {
        Err(HttpError::Timeout(_)) => fail(format!("timed out after {}", human_duration(timeout))),
        Err(e) => fail(format!("{} {}: {e}", h.method, h.url)),
        Ok(resp) => {
            let code = resp.status.as_u16();
            let ok = match h.expect_status.is_empty() {
                true => resp.status.is_success(),
                false => h.expect_status.contains(&code),
            };
            let mut status = format!("HTTP {}", resp.status_line());
            if !ok {
                status.push_str(&match h.expect_status.as_slice() {
                    [] => " (expected 2xx)".to_string(),
                    list => format!(
                        " (expected {})",
                        list.iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                });
            }
            HookRun {
                ok,
                status,
                output: clean(&resp.body),
                duration: started.elapsed(),
            }
        }
    }
}
