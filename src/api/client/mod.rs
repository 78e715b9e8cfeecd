//! The CLI's client for the daemon's API: JSON over HTTP/1.1 on the API address from
//! the config, with the bearer token for mutating calls, and the event feed
//! (`follow.rs` follows one deployment through it; `sse.rs` reads the stream).
//!
//! Over HTTPS when the API serves it ([`ApiClient::with_tls`], `transport.rs`): the
//! trust comes from `crate::tls`, as for every other call Cutover makes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod follow;
pub mod sse;
mod transport;

use transport::Transport;

pub use follow::follow;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the cutover daemon at {addr} ({reason}); is `cutover serve` running?")]
    Unreachable { addr: SocketAddr, reason: String },
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
}

#[derive(Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    token: Option<String>,
    http: Transport,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let http = Transport::Plain(Client::builder(TokioExecutor::new()).build(connector));
        Self { addr, token, http }
    }

    /// The same client speaking HTTPS, trusting what `tls` says (its `server_name`, if
    /// set, is the name the certificate must carry; else the address's IP).
    pub fn with_tls(mut self, tls: &crate::tls::ClientTls) -> Self {
        self.http = Transport::tls(tls);
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.http.scheme(), self.addr, path)
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
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(self.url(path))
            .header("accept", "text/event-stream");
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
        if status >= 400 {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        Ok(EventStream {
            body: resp.into_body(),
            parser: sse::SseParser::default(),
        })
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            addr: self.addr,
            reason,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
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
