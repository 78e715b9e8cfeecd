//! Upstreams that serve TLS (`[services.<name>.upstream_tls]`): requests to them take
//! the general path, through a hyper client whose connector speaks TLS
//! (`hyper-rustls`, with the trust built by `crate::tls`).
//!
//! Every way the proxy reaches such a slot goes through here, so none of them speaks
//! plain HTTP to it: forwarded requests and WebSocket upgrades (the pooled client keeps
//! the upgraded TLS stream), the shield's retry on the previous slot ([`Proxy::pool`]),
//! mirrored copies (their own pools, [`MirrorTlsPools`]) and a `CONNECT` passed on to
//! the app ([`connect_tls`]).
//!
//! Why not the fast path: it writes request bytes straight onto a `TcpStream`; making
//! it generic over the stream would put TLS in the hottest code for a rare setup. The
//! only cost to plaintext traffic is one `Option` check when the fast path plans a
//! request (`h1::Conn::plan`).
//!
//! One pooled client per distinct trust setting, built on first use and kept in an
//! `ArcSwap` (no lock on the request path; a new setting copies the small list).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::LimitedBody;
use super::Proxy;
use crate::domain::endpoint::Endpoint;
use crate::tls::{ClientTls, TlsClient, TlsError};

/// A pooled client to TLS upstreams sending request bodies of type `B`.
pub(super) type TlsClientOf<B> = Client<HttpsConnector<HttpConnector>, B>;
pub(super) type TlsPool = TlsClientOf<LimitedBody>;

/// The TLS clients built so far, by their trust setting; `B` is the request body type
/// (live requests stream a [`LimitedBody`], mirrored copies send a `Full` one).
pub(super) struct TlsPools<B> {
    pools: ArcSwap<Vec<(Arc<ClientTls>, TlsClientOf<B>)>>,
    max_idle: usize,
}

/// The pools mirrored copies to TLS targets go through (apart from the live ones).
pub(super) type MirrorTlsPools = TlsPools<Full<Bytes>>;

impl<B> TlsPools<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// No pool yet; each keeps at most `max_idle` idle connections per upstream.
    pub(super) fn new(max_idle: usize) -> Self {
        Self {
            pools: ArcSwap::default(),
            max_idle,
        }
    }

    /// The pooled client for `settings`, built (with `base`'s timeouts) the first time.
    pub(super) fn get(
        &self,
        settings: &Arc<ClientTls>,
        base: &HttpConnector,
    ) -> Result<TlsClientOf<B>, TlsError> {
        let found = self.pools.load();
        if let Some((_, pool)) = found.iter().find(|(s, _)| s == settings) {
            return Ok(pool.clone());
        }
        let client = TlsClient::for_settings(settings)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            // `enable_http1` below offers ALPN `http/1.1` itself.
            .with_tls_config((*client.config()).clone())
            .https_only();
        let builder = match &settings.server_name {
            Some(name) => builder
                .with_server_name_resolver(FixedServerNameResolver::new(client.server_name(name)?)),
            None => builder,
        };
        let mut http = base.clone();
        http.enforce_http(false);
        let connector = builder.enable_http1().wrap_connector(http);
        let pool = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(self.max_idle)
            .build(connector);
        self.pools.rcu(|old| {
            let mut new = Vec::clone(old);
            if !new.iter().any(|(s, _)| s == settings) {
                new.push((settings.clone(), pool.clone()));
            }
            new
        });
        Ok(pool)
    }
}

/// The live pool one upstream is reached through: the plain one, or its TLS one.
pub(super) enum UpstreamPool<'a> {
    Plain(&'a Client<HttpConnector, LimitedBody>),
    Tls(Box<TlsPool>),
}

impl UpstreamPool<'_> {
    pub(super) fn request(&self, req: Request<LimitedBody>) -> ResponseFuture {
        match self {
            UpstreamPool::Plain(client) => client.request(req),
            UpstreamPool::Tls(pool) => pool.request(req),
        }
    }
}

impl Proxy {
    /// The live pool for an upstream that serves TLS with `tls` (`None`: plain HTTP).
    /// Fails only when the trust cannot be built (an unreadable `ca_file`).
    pub(super) fn pool(&self, tls: Option<&Arc<ClientTls>>) -> Result<UpstreamPool<'_>, TlsError> {
        Ok(match tls {
            None => UpstreamPool::Plain(&self.client),
            Some(settings) => {
                UpstreamPool::Tls(Box::new(self.tls_pools.get(settings, &self.connector)?))
            }
        })
    }
}

/// A stream to a slot: plain TCP, or TLS over it (a `CONNECT` tunnel's upstream side).
pub(super) trait SlotIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SlotIo for T {}
pub(super) type SlotStream = TokioIo<Box<dyn SlotIo>>;

/// Opens a connection of its own to `endpoint`, over TLS when the slot serves it; a
/// failed handshake is one line naming the key to set (`tls::explain`).
pub(super) async fn connect_tls(
    endpoint: &Endpoint,
    tls: Option<&ClientTls>,
) -> Result<SlotStream, String> {
    let tcp = super::h1::connect_upstream(endpoint)
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let Some(settings) = tls else {
        return Ok(TokioIo::new(Box::new(tcp)));
    };
    let client =
        TlsClient::for_settings_alpn(settings, &[b"http/1.1"]).map_err(|e| e.to_string())?;
    let stream = client
        .connect(&endpoint.host_text(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(TokioIo::new(Box::new(stream)))
}

/// A failed TLS handshake inside an upstream request's error chain, as one line naming
/// the key to set (`tls::explain`), for the log; `None` when TLS was not the cause.
pub(super) fn tls_failure(
    err: &(dyn std::error::Error + 'static),
    endpoint: &Endpoint,
    settings: &ClientTls,
) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>().and_then(wrapping_rustls) {
            let server = settings
                .server_name
                .clone()
                .unwrap_or_else(|| endpoint.host_text());
            return Some(crate::tls::explain(io, &server, settings));
        }
        cur = e.source();
    }
    None
}

/// The `io::Error` (this one or one nested in it) that holds a `rustls::Error` itself,
/// the shape `tls::explain` reads. `io::Error::source` skips a level, so walk `get_ref`.
fn wrapping_rustls(mut io: &std::io::Error) -> Option<&std::io::Error> {
    loop {
        let inner = io.get_ref()?;
        if inner.is::<rustls::Error>() {
            return Some(io);
        }
        io = inner.downcast_ref::<std::io::Error>()?;
    }
}
