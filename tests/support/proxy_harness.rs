//! The in-process proxy harness shared by the proxy test files: a proxy on
//! `127.0.0.1:0` with hand-built routes ([`TestProxy`]), a hyper client, raw-TCP
//! helpers, and waits on the per-slot statistics.
//!
//! Include it with `#[path = "support/proxy_harness.rs"] mod harness;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cutover::domain::endpoint::Endpoint;
use cutover::domain::stats::StatsSnapshot;
use cutover::domain::Slot;
use cutover::proxy::stats::SlotStats;
use cutover::proxy::table::{Routes, ServiceRoute};
use cutover::proxy::upstream::Upstream;
use cutover::proxy::{serve_with_grace, ListenerRoutes, Proxy, ProxySettings};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SERVICE: &str = "web";

/// Fails the test instead of hanging it.
pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("test did not finish in time")
}

/// The slot at `addr`: a socket address, or an `Endpoint` (a host name).
pub fn upstream(slot: Slot, addr: impl Into<Endpoint>) -> Upstream {
    Upstream {
        slot,
        endpoint: addr.into(),
        stats: Arc::new(SlotStats::default()),
        tls: None,
    }
}

pub fn live(up: &Upstream) -> ServiceRoute {
    ServiceRoute {
        live: Some(up.clone()),
        preview: None,
    }
}

pub fn default_listener(service: &str) -> ListenerRoutes {
    ListenerRoutes {
        by_host: HashMap::new(),
        default: Some(service.to_string()),
        preview_only: false,
    }
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub served: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestProxy {
    pub async fn start(
        routes: &Arc<Routes>,
        listener: ListenerRoutes,
        settings: ProxySettings,
    ) -> Self {
        let proxy = Proxy::new(routes.clone(), settings);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let grace = Duration::from_secs(5);
        let served = tokio::spawn(serve_with_grace(proxy, tcp, listener, shutdown, grace));
        TestProxy {
            addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub async fn with_live(up: &Upstream, settings: ProxySettings) -> (Self, Arc<Routes>) {
        let routes = Arc::new(Routes::new());
        routes.set(SERVICE, live(up));
        let proxy = Self::start(&routes, default_listener(SERVICE), settings).await;
        (proxy, routes)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers shutdown and returns what `serve` returned.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().expect("not shut down yet").send(());
        self.served.take().expect("not shut down yet")
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub slot: Option<String>,
    pub headers: HeaderMap,
    pub body: String,
}

pub fn request(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Reply {
    let resp = client
        .request(req)
        .await
        .expect("request through the proxy");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let slot = headers
        .get("x-cutover-slot")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    Reply {
        status,
        slot,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &HttpClient, url: &str) -> Reply {
    send(client, request(url, &[])).await
}

/// Reads until the end of a response head; returns everything read so far.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.expect("read response head");
        assert!(n > 0, "connection closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `stats` has recorded `requests` requests and none is in flight.
pub async fn settled(stats: &SlotStats, requests: u64) -> StatsSnapshot {
    loop {
        let snap = stats.snapshot();
        if snap.requests >= requests && snap.in_flight == 0 {
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
