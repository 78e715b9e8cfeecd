//! The ACME challenge answers the proxy serves (the hook the ACME client fills in).
//!
//! - HTTP-01 (RFC 8555 §8.3): `GET /.well-known/acme-challenge/<token>` on a plaintext
//!   redirect listener answers the key authorization registered for `<token>` with
//!   [`Challenges::set_http01`]; that path is never redirected to HTTPS.
//! - TLS-ALPN-01 (RFC 8737): a handshake offering only `acme-tls/1` for a name gets the
//!   certificate registered with [`Challenges::set_tls_alpn01`], and nothing else.
//!
//! One `Challenges` is shared by every listener of the daemon. Reads are lock-free;
//! writes (a few per issuance) copy the small maps.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

/// The path prefix of HTTP-01 challenges.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Default)]
pub struct Challenges {
    http01: ArcSwap<HashMap<String, String>>,
    tls_alpn01: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// Answers `GET /.well-known/acme-challenge/<token>` with `key_authorization`.
    pub fn set_http01(&self, token: &str, key_authorization: &str) {
        let (t, k) = (token.to_string(), key_authorization.to_string());
        self.http01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(t.clone(), k.clone());
            m
        });
    }

    pub fn remove_http01(&self, token: &str) {
        self.http01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(token);
            m
        });
    }

    /// The key authorization for a token, if one is registered.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01.load().get(token).cloned()
    }

    /// Serves `cert` to `acme-tls/1` handshakes for `host`.
    pub fn set_tls_alpn01(&self, host: &str, cert: Arc<CertifiedKey>) {
        let host = host.to_ascii_lowercase();
        self.tls_alpn01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(host.clone(), cert.clone());
            m
        });
    }

    pub fn remove_tls_alpn01(&self, host: &str) {
        let host = host.to_ascii_lowercase();
        self.tls_alpn01.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&host);
            m
        });
    }

    /// The challenge certificate for a name, if one is registered.
    pub fn tls_alpn01(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .load()
            .get(&host.to_ascii_lowercase())
            .cloned()
    }
}
