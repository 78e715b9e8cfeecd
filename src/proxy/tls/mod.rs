//! TLS termination on the proxy's public listeners (issue #13).
//!
//! rustls with the *ring* provider only, TLS 1.2 and 1.3, rustls' default cipher
//! suites (TLS 1.3: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2: ECDHE with
//! ECDSA or RSA and the same AEADs; no CBC, no RSA key exchange), key exchange X25519,
//! P-256, P-384. ALPN offers `h2` (unless the listener turns HTTP/2 off), then
//! `http/1.1`, and `acme-tls/1` for TLS-ALPN-01 challenges.
//!
//! # Layout
//! - [`store`]: [`CertStore`], the per-listener certificate resolver (SNI: exact,
//!   one-label wildcard, default or refusal), fed by PEM files and by
//!   [`CertStore::set_dynamic`].
//! - [`challenge`]: [`Challenges`], the ACME answers (HTTP-01 tokens served by the
//!   plaintext redirect listeners, TLS-ALPN-01 certificates served by the resolver).
//! - `load`: PEM files → `CertifiedKey` (RSA, ECDSA, Ed25519 keys; PKCS#8, PKCS#1,
//!   SEC1), `der`: the certificate's names and `notAfter`.
//! - [`acme`]: the ACME client that obtains and renews certificates into
//!   [`CertStore::set_dynamic`] (`[proxy.tls.acme]`).
//! - `reload`: watching the files (contents polled every `reload_interval`) and
//!   reloading on `SIGUSR1` or `POST /api/v1/tls/reload`.
//!
//! # The interface ACME builds on
//! - `TlsEdge::store(listen)` gives a listener's `Arc<CertStore>`;
//!   `CertStore::set_dynamic(host, Arc<CertifiedKey>)` installs or replaces the
//!   certificate for a name at runtime (no handshake is disturbed: lookups read an
//!   `ArcSwap` snapshot); `CertStore::status()` lists what is served and until when.
//! - `TlsEdge::challenges()` gives the daemon-wide `Arc<Challenges>`:
//!   `set_http01(token, key_authorization)` is answered on
//!   `/.well-known/acme-challenge/<token>` by every `redirect_from` listener;
//!   `set_tls_alpn01(host, Arc<CertifiedKey>)` is served to handshakes that offer only
//!   `acme-tls/1` for `host` (and such a handshake never gets a real certificate).
//!
//! # Why not `SIGHUP`
//! `SIGHUP` hands the daemon's sockets to a new binary (`daemon/upgrade.rs`); a
//! certificate reload is `SIGUSR1` (or the API route), which only re-reads files.

pub mod acme;
pub mod challenge;
mod der;
mod load;
pub mod reload;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub use challenge::Challenges;
pub use der::CertFacts;
pub use load::{certified_key_from_pem, CertFiles};
pub use store::{CertStatus, CertStore};

/// Why a TLS listener cannot be set up or a certificate not (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// ALPN protocol ids.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Where a `redirect_from` listener sends clients: the TLS listener's port, and its
/// certificates (a host it would refuse in the handshake is not redirected).
#[derive(Debug, Clone)]
pub struct RedirectTarget {
    pub port: u16,
    pub store: Arc<CertStore>,
}

impl RedirectTarget {
    /// Whether the TLS listener completes a handshake for `host` (with
    /// `unknown_sni = "default"`, every host).
    pub fn serves(&self, host: &str) -> bool {
        self.store.select(Some(host)).is_some()
    }
}

/// One TLS listener: its certificates, handshake settings and response headers.
pub struct TlsListener {
    pub store: Arc<CertStore>,
    acceptor: TlsAcceptor,
    /// `Strict-Transport-Security` added to every response, if configured.
    pub hsts: Option<HeaderValue>,
    pub handshake_timeout: Duration,
    pub reload_interval: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("store", &self.store)
            .field("hsts", &self.hsts)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Every TLS listener and redirect listener of the daemon, and the ACME challenges
/// they answer. Built once at start; shared by every proxy worker.
#[derive(Debug, Default)]
pub struct TlsEdge {
    listeners: HashMap<SocketAddr, Arc<TlsListener>>,
    /// Plaintext address → the TLS listener its redirects point at.
    redirects: HashMap<SocketAddr, RedirectTarget>,
    challenges: Arc<Challenges>,
}

impl TlsEdge {
    /// Loads every listener's certificates. A file that cannot be used fails here,
    /// named.
    pub fn from_config(
        listeners: &[crate::config::TlsListenerConfig],
    ) -> Result<TlsEdge, TlsError> {
        let challenges = Arc::new(Challenges::default());
        let mut edge = TlsEdge {
            challenges: challenges.clone(),
            ..TlsEdge::default()
        };
        for l in listeners {
            let files: Vec<CertFiles> = l
                .certificates
                .iter()
                .map(|c| CertFiles {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                    names: c.names.clone(),
                })
                .collect();
            let store = Arc::new(CertStore::from_files(
                &files,
                l.refuse_unknown_sni,
                challenges.clone(),
            )?);
            let config = server_config(store.clone(), l.http2, l.tls13_tickets)?;
            let hsts = l
                .hsts
                .as_ref()
                .and_then(|h| HeaderValue::from_str(&h.header()).ok());
            edge.listeners.insert(
                l.listen,
                Arc::new(TlsListener {
                    store,
                    acceptor: TlsAcceptor::from(Arc::new(config)),
                    hsts,
                    handshake_timeout: l.handshake_timeout,
                    reload_interval: l.reload_interval,
                }),
            );
            if let Some(from) = l.redirect_from {
                let store = edge.listeners[&l.listen].store.clone();
                let target = RedirectTarget {
                    port: l.listen.port(),
                    store,
                };
                edge.redirects.insert(from, target);
            }
        }
        Ok(edge)
    }

    /// The TLS listener on `addr`, if that address serves TLS.
    pub fn listener(&self, addr: SocketAddr) -> Option<&Arc<TlsListener>> {
        self.listeners.get(&addr)
    }

    /// The certificate store of the TLS listener on `addr` (for ACME).
    pub fn store(&self, addr: SocketAddr) -> Option<Arc<CertStore>> {
        self.listeners.get(&addr).map(|l| l.store.clone())
    }

    /// The HTTPS port a plaintext `redirect_from` listener on `addr` points at.
    pub fn redirect_port(&self, addr: SocketAddr) -> Option<u16> {
        self.redirects.get(&addr).map(|t| t.port)
    }

    /// The TLS listener a plaintext `redirect_from` listener on `addr` points at.
    pub fn redirect_target(&self, addr: SocketAddr) -> Option<RedirectTarget> {
        self.redirects.get(&addr).cloned()
    }

    /// Every `redirect_from` address.
    pub fn redirect_listeners(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.redirects.keys().copied()
    }

    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// Whether any listener serves TLS.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Every listener's certificates (address order).
    pub fn status(&self) -> Vec<(SocketAddr, Vec<CertStatus>)> {
        let mut out: Vec<_> = self
            .listeners
            .iter()
            .map(|(a, l)| (*a, l.store.status()))
            .collect();
        out.sort_by_key(|(a, _)| *a);
        out
    }

    /// Re-reads every changed certificate file now; returns how many certificates
    /// changed and the failures (each failed file keeps its previous certificate).
    pub fn reload(&self) -> (usize, Vec<TlsError>) {
        let mut changed = 0;
        let mut failures = Vec::new();
        for l in self.listeners.values() {
            let (c, f) = l.store.reload();
            changed += c;
            failures.extend(f);
        }
        (changed, failures)
    }

    /// The shortest `reload_interval` of any listener.
    pub fn reload_interval(&self) -> Option<Duration> {
        self.listeners.values().map(|l| l.reload_interval).min()
    }
}

/// The rustls server settings of one listener (see the module doc).
///
/// Resumption by stateless tickets (rustls' ring `Ticketer`: ChaCha20-Poly1305, keys
/// made at start and rotated every 6 hours, tickets valid 12 hours), as nginx and
/// HAProxy do with OpenSSL's: rustls' default without a ticketer keeps sessions in a
/// 256-entry cache shared by every worker, which a busy listener turns over in
/// well under a second, so real clients could rarely resume. `tickets`: how many
/// TLS 1.3 tickets follow each full handshake (`tls13_tickets`, default 1).
fn server_config(
    store: Arc<CertStore>,
    http2: bool,
    tickets: u8,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = usize::from(tickets);
    if http2 {
        config.alpn_protocols.push(ALPN_H2.to_vec());
    }
    config.alpn_protocols.push(ALPN_HTTP11.to_vec());
    config.alpn_protocols.push(store::ACME_TLS_ALPN.to_vec());
    Ok(config)
}
