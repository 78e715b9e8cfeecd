//! A tiny HTTP/1.1 client for probes and smoke steps.
//!
//! Each request gets its own connection, on purpose: a probe must see the slot as a
//! fresh client would (a pooled keep-alive connection could hide a listener that no
//! longer accepts), and nothing outlives the probe. The timeout covers everything, from
//! connect to the last body byte, so a server that accepts and never answers, or that
//! trickles its body, still fails within it.
//!
//! With [`ProbeTls`] the connection is TLS (`crate::tls`): an `https://` URL, or a slot
//! that serves TLS. The handshake counts against the same timeout.

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::human_duration;
use crate::domain::endpoint::Endpoint;
use crate::tls::TlsClient;

/// Largest response body a probe reads; more is an error (a probe is not a download).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From the start of the connect to the last body byte.
    pub elapsed: Duration,
}

impl Response {
    /// `"200 OK"`.
    pub fn status_line(&self) -> String {
        status_line(self.status)
    }
}

/// `"503 Service Unavailable"`, or just the code when it has no reason phrase.
pub fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Why a request got no complete response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection refused")]
    Refused,
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    #[error("timed out after {}", human_duration(*.0))]
    Timeout(Duration),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The TLS handshake failed; the text says why and what to set (`tls::explain`).
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(#[source] hyper::Error),
    #[error("reading the body failed: {0}")]
    Body(String),
}

/// A request as the probes describe it: everything but the address.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub method: Method,
    /// Origin-form path and query, starting with `/`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ProbeRequest {
    pub fn get(path: impl Into<String>) -> ProbeRequest {
        ProbeRequest {
            method: Method::GET,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// Sends `req` to `to` (an address, or a host resolved now) on a new connection and
/// reads the whole response, all within `timeout` (the lookup included). Unless `req`
/// has one, the `Host` header is the endpoint's text (`10.0.0.7:8080`,
/// `web.internal:8080`).
pub async fn send(
    to: impl Into<Endpoint>,
    req: ProbeRequest,
    timeout: Duration,
) -> Result<Response, HttpError> {
    send_over(to, None, req, timeout).await
}

/// TLS for one request: the client, and the host the certificate must name (the URL's
/// host, or the slot's; `ClientTls::server_name` overrides it).
#[derive(Debug, Clone, Copy)]
pub struct ProbeTls<'a> {
    pub client: &'a TlsClient,
    pub host: &'a str,
}

/// [`send`], over TLS when `tls` is given.
pub async fn send_over(
    to: impl Into<Endpoint>,
    tls: Option<ProbeTls<'_>>,
    req: ProbeRequest,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let to = to.into();
    match tokio::time::timeout(timeout, exchange(&to, tls, req)).await {
        Ok(Ok((status, headers, body))) => Ok(Response {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

/// Aborts the connection task when the request is done or abandoned (timeout), so a
/// silent server never keeps a socket of ours open.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(
    to: &Endpoint,
    tls: Option<ProbeTls<'_>>,
    req: ProbeRequest,
) -> Result<(StatusCode, HeaderMap, Bytes), HttpError> {
    let request = build(to, req)?;
    let stream = to.connect().await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => HttpError::Refused,
        _ => HttpError::Connect(e),
    })?;
    match tls {
        None => exchange_on(stream, request).await,
        Some(tls) => {
            let stream = tls
                .client
                .connect(tls.host, stream)
                .await
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            exchange_on(stream, request).await
        }
    }
}

async fn exchange_on<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes), HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Protocol)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(HttpError::Protocol)?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| HttpError::Body(e.to_string()))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

fn build(to: &Endpoint, req: ProbeRequest) -> Result<Request<Full<Bytes>>, HttpError> {
    let mut request = Request::builder()
        .method(req.method)
        .uri(req.path.as_str())
        .body(Full::new(req.body))
        .map_err(|e| HttpError::InvalidRequest(format!("{e} (path `{}`)", req.path)))?;
    let headers = request.headers_mut();
    for (name, value) in &req.headers {
        headers.append(name, value.clone());
    }
    if !headers.contains_key(http::header::HOST) {
        let host = HeaderValue::from_str(&to.to_string())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        headers.insert(http::header::HOST, host);
    }
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_complete_response_is_read_with_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 5\r\n\r\nshort")
                .await;
        });
        let resp = send(addr, ProbeRequest::get("/"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(resp.status_line(), "418 I'm a teapot");
        assert_eq!(&resp.body[..], b"short");
    }

    #[tokio::test]
    async fn a_body_that_never_finishes_counts_against_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let err = send(addr, ProbeRequest::get("/"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout(_)), "{err}");
        assert_eq!(err.to_string(), "timed out after 200ms");
    }

    #[test]
    fn a_path_that_is_not_a_uri_is_an_invalid_request() {
        let to: Endpoint = "127.0.0.1:1".parse().unwrap();
        let err = build(&to, ProbeRequest::get("/has space")).unwrap_err();
        assert!(matches!(err, HttpError::InvalidRequest(_)), "{err}");
    }

    #[test]
    fn the_host_header_is_the_endpoint_unless_the_request_sets_one() {
        let to: Endpoint = "web.internal:8080".parse().unwrap();
        let req = build(&to, ProbeRequest::get("/")).unwrap();
        assert_eq!(req.headers()[http::header::HOST], "web.internal:8080");
        let mut own = ProbeRequest::get("/");
        own.headers
            .insert(http::header::HOST, HeaderValue::from_static("shop.example"));
        let req = build(&to, own).unwrap();
        assert_eq!(req.headers()[http::header::HOST], "shop.example");
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_and_dialled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = sock.read(&mut buf).await.unwrap();
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let to = Endpoint::host("localhost", port).unwrap();
        let resp = send(to, ProbeRequest::get("/"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&resp.body[..], b"ok");
        let head = seen.await.unwrap();
        assert!(head.contains(&format!("host: localhost:{port}")), "{head}");
    }
}
