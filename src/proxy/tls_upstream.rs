//! Upstreams that serve TLS (`[services.<name>.upstream_tls]`): requests to them take
//! the general path, through a hyper client whose connector speaks TLS
//! (`hyper-rustls`, with the trust built by `crate::tls`).
//!
//! Why not the fast path: it writes request bytes straight onto a `TcpStream`; making
//! it generic over the stream would put TLS in the hottest code for a rare setup. The
//! only cost to plaintext traffic is one `Option` check when the fast path plans a
//! request (`h1::Conn::plan`).
//!
//! One pooled client per distinct trust setting, built on first use and kept in an
//! `ArcSwap` (no lock on the request path; a new setting copies the small list).

use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::LimitedBody;
use crate::tls::{ClientTls, TlsClient, TlsError};

pub(super) type TlsPool = Client<HttpsConnector<HttpConnector>, LimitedBody>;

/// The TLS clients built so far, by their trust setting.
#[derive(Default)]
pub(super) struct TlsPools {
    pools: ArcSwap<Vec<(Arc<ClientTls>, TlsPool)>>,
}

impl TlsPools {
    /// The pooled client for `settings`, built (with `base`'s timeouts) the first time.
    pub(super) fn get(
        &self,
        settings: &Arc<ClientTls>,
        base: &HttpConnector,
    ) -> Result<TlsPool, TlsError> {
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
            .pool_idle_timeout(std::time::Duration::from_secs(4))
            .pool_max_idle_per_host(1024)
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
