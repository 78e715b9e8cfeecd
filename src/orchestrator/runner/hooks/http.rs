//! An HTTP hook: one request through the probe client (`checks/http.rs`), bounded by
//! the hook's timeout (name resolution and the TLS handshake included); it passes on an
//! expected status. An `https://` URL is called over TLS with the hook's trust
//! (`ca_file`, `tls_insecure_skip_verify`; the system store by default), through the
//! one client setup every outbound call shares (`crate::tls`); a refused certificate
//! fails the hook with the line that says which key to set.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{clean, HookRun};
use crate::checks::http::{send_over, HttpError, ProbeRequest, ProbeTls};
use crate::checks::human_duration;
use crate::config::HttpHook;
use crate::tls::TlsClient;

pub(super) async fn run(h: &HttpHook, timeout: Duration) -> HookRun {
    let started = Instant::now();
    let fail = |status: String| HookRun::failed(status, started);
    let host = h
        .url
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let secure = h.url.scheme_str() == Some("https");
    let port = h.url.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let client = match secure.then(|| TlsClient::for_settings(&h.tls)).transpose() {
        Ok(client) => client,
        Err(e) => return fail(e.to_string()),
    };
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
    let tls = client.as_ref().map(|client| ProbeTls {
        client,
        host: host.as_str(),
    });
    match send_over(addr, tls, req, left).await {
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
