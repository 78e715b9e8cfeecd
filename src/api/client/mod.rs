//! The CLI's client for the daemon's API: JSON over HTTP/1.1 on a base URL (the
//! config's API address, or `--api`/`CUTOVER_API_URL`), with the bearer token, and the
//! event feed (`follow.rs` follows one deployment through it; `sse.rs` reads the
//! stream).
//!
//! Over HTTPS when the API serves it (an `https://` base URL, [`ApiClient::with_tls`],
//! `transport.rs`): the trust comes from `crate::tls`, as for every other call
//! Cutover makes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod follow;
pub mod lines;
pub mod sse;
mod transport;

use transport::Transport;

pub use follow::{follow, follow_quietly};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the cutover daemon at {addr} ({reason}); is `cutover serve` running?")]
    Unreachable { addr: String, reason: String },
    /// The daemon answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected response from the daemon: {0}")]
    Protocol(String),
    /// The client's TLS setup is wrong (an unreadable `tls_ca_file`).
    #[error("cannot set up HTTPS to the daemon: {0}")]
    Tls(String),
}

impl ClientError {
    /// 4xx from the daemon: the request was wrong (exit code 2), not the deployment.
    pub fn is_usage(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if (400..500).contains(status) && *status != 409)
    }

    /// A short machine-readable name of the failure (`--json` errors).
    pub fn code(&self) -> &str {
        match self {
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Api { code, .. } => code,
            ClientError::Protocol(_) => "protocol",
            ClientError::Tls(_) => "tls",
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    /// `http://host:port` (and any path prefix), without a trailing `/`.
    base: String,
    token: Option<String>,
    http: Transport,
    /// Print each call and its answer to stderr (`-v`).
    trace: bool,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Self::with_base(format!("http://{addr}"), token)
    }

    /// A client for the daemon at `url` (`http://host:port`, as `--api` takes it).
    pub fn from_url(url: &str, token: Option<String>) -> Result<Self, String> {
        let base = url.trim().trim_end_matches('/');
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| format!("`{url}` is not a URL ({e}); expected http(s)://HOST:PORT"))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(_)) if uri.query().is_none() => {
                Ok(Self::with_base(base.to_string(), token))
            }
            // HTTPS with the system's roots; `with_tls` gives another trust.
            (Some("https"), Some(_)) if uri.query().is_none() => {
                Ok(Self::with_base(base.to_string(), token)
                    .with_tls(&crate::tls::ClientTls::default()))
            }
            _ => Err(format!(
                "`{url}` is not a daemon address; expected http://HOST:PORT or https://HOST:PORT"
            )),
        }
    }

    fn with_base(base: String, token: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let http = Transport::Plain(Client::builder(TokioExecutor::new()).build(connector));
        Self {
            base,
            token,
            http,
            trace: false,
        }
    }

    /// Prints every call and its status to stderr.
    pub fn traced(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// The daemon's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens a streamed answer of `GET path` (newline-delimited JSON, see `lines.rs`).
    pub async fn lines(&self, path: &str) -> Result<lines::LineStream, ClientError> {
        let resp = self.open(path, "application/x-ndjson", None).await?;
        Ok(lines::LineStream::new(resp))
    }

    /// The same client speaking HTTPS, trusting what `tls` says (its `server_name`, if
    /// set, is the name the certificate must carry; else the address's IP).
    pub fn with_tls(mut self, tls: &crate::tls::ClientTls) -> Self {
        self.http = Transport::tls(tls);
        if let Some(rest) = self.base.strip_prefix("http://") {
            self.base = format!("https://{rest}");
        }
        self
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
    ) -> Result<T, ClientError> {
        self.call("POST", path, Some(body)).await
    }

    /// Opens the event feed at `path` (`/api/v1/events?...`), resuming after
    /// `last_event_id` when given.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> Result<EventStream, ClientError> {
        Ok(EventStream {
            body: self.open(path, "text/event-stream", last_event_id).await?,
            parser: sse::SseParser::default(),
        })
    }

    /// `GET path` whose body is read as it comes (10 s to answer).
    async fn open(
        &self,
        path: &str,
        accept: &str,
        last_event_id: Option<i64>,
    ) -> Result<hyper::body::Incoming, ClientError> {
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(self.url(path))
            .header("accept", accept);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req)?)
            .await
            .map_err(|_| self.unreachable("timed out".into()))?
            .map_err(|e| self.unreachable(self.http.explain(&e)))?;
        let status = resp.status().as_u16();
        self.note(&format!("← {status} GET {path} (streamed)"));
        if status >= 400 {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        Ok(resp.into_body())
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            addr: self.base.clone(),
            reason,
        }
    }

    fn note(&self, line: &str) {
        if self.trace {
            eprintln!("{line}");
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        self.note(&format!("→ {method} {}", self.url(path)));
        let began = std::time::Instant::now();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(120), self.http.request(req)?)
            .await
            .map_err(|_| self.unreachable("timed out".into()))?
            .map_err(|e| self.unreachable(self.http.explain(&e)))?;
        let status = resp.status().as_u16();
        self.note(&format!(
            "← {status} {method} {path} in {} ms",
            began.elapsed().as_millis()
        ));
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("{e} in {}", String::from_utf8_lossy(&bytes)))
        })
    }
}

/// The daemon's JSON error body as a [`ClientError::Api`].
fn api_error(status: u16, bytes: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(bytes).unwrap_or_default();
    ClientError::Api {
        status,
        code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
        message: v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// An open event feed: events in the order the daemon committed them.
pub struct EventStream {
    body: hyper::body::Incoming,
    parser: sse::SseParser,
}

impl EventStream {
    /// The next event; `Ok(None)` when the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<crate::store::EventRecord>, ClientError> {
        loop {
            let message = self.parser.next_message().map_err(ClientError::Protocol)?;
            if let Some(m) = message {
                return serde_json::from_str(&m.data)
                    .map(Some)
                    .map_err(|e| ClientError::Protocol(format!("bad event `{}`: {e}", m.data)));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Protocol(format!("event feed: {e}"))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.parser.feed(data);
                    }
                }
            }
        }
    }
}
