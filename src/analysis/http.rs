//! One request to an `http://` or `https://` URL (Prometheus, webhook gates,
//! notification webhooks).
//!
//! Built on the probe client (`checks::http`): a fresh connection per request and one
//! timeout over everything, from the DNS lookup to the last body byte (the TLS
//! handshake included), so a receiver that hangs costs at most the timeout. `https://`
//! trusts what the call's [`ClientTls`] says (the system store by default).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::checks::http::{send_over, HttpError, ProbeRequest, ProbeTls, Response};
use crate::tls::{ClientTls, TlsClient};

/// Sends `method url` with `headers` and `body`; the error is one line for people.
pub(crate) async fn request(
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<Response, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("expected an http:// or https:// URL, got {url:?}")),
    };
    let host = uri.host().ok_or_else(|| format!("no host in {url:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let client = if secure {
        Some(TlsClient::for_settings(tls).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("invalid method {method:?}: {e}"))?;
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        map.append(name, value);
    }
    if !map.contains_key(http::header::HOST) {
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let value = HeaderValue::from_str(authority).map_err(|e| e.to_string())?;
        map.insert(http::header::HOST, value);
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() && !map.contains_key(http::header::CONTENT_TYPE) {
        map.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let started = tokio::time::Instant::now();
    let addr = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("resolving {host} timed out"))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let left = timeout.saturating_sub(started.elapsed());
    let req = ProbeRequest {
        method,
        path,
        headers: map,
        body,
    };
    let probe_tls = client.as_ref().map(|client| ProbeTls { client, host });
    send_over(addr, probe_tls, req, left)
        .await
        .map_err(|e| match e {
            HttpError::Refused => format!("connection to {addr} refused"),
            HttpError::Tls(why) => why,
            other => format!("{other} ({addr})"),
        })
}

/// Percent-encodes a query parameter value (everything but RFC 3986 unreserved).
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("rate(x{slot=\"green\"}[1m]) > 0.5"),
            "rate%28x%7Bslot%3D%22green%22%7D%5B1m%5D%29%20%3E%200.5"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_one_readable_line() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = request(
            "GET",
            &format!("http://{addr}/x"),
            &BTreeMap::new(),
            None,
            &ClientTls::default(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert_eq!(err, format!("connection to {addr} refused"));
    }
}
