//! The ACME client (RFC 8555) that obtains and renews the certificates of one
//! `[[proxy.tls]]` listener's `acme` table (issue #13 item 2).
//!
//! Built on `instant-acme` (the protocol, JWS, nonces; ring only) and `rcgen` (the
//! TLS-ALPN-01 certificate with its `acmeIdentifier` extension; the CSR is made by
//! `instant-acme` with rcgen and a fresh ECDSA P-256 key per certificate).
//!
//! # Lifecycle
//! - Start: a certificate stored by an earlier run is installed at once if it is not
//!   yet due for renewal, so a restart neither waits for the CA nor spends its rate
//!   limit.
//! - Issue: account (created once, its key stored) → order for all `domains` →
//!   each authorization answered through [`Challenges`] (HTTP-01 token on the
//!   redirect listeners, or the TLS-ALPN-01 certificate on this listener) → finalize
//!   with a CSR → download the chain → stored → [`CertStore::set_dynamic`] for every
//!   domain. Installing swaps an `ArcSwap` snapshot: open connections keep their
//!   session, new handshakes get the new certificate.
//! - A CA that answers `accountDoesNotExist` for the stored account (a reset CA, a
//!   deactivated account) gets a new account, once per attempt.
//! - Renew at `notAfter - renew_before` (default 30 days, or a third of the lifetime
//!   when that is shorter). A failed attempt is logged and retried after a backoff
//!   that doubles from 30s up to 1h; the served certificate stays until it is replaced.
//!
//! # Storage (`<state_dir>/acme/`, directory 0700, files 0600)
//! `account-<directory>.json` (the account URL and private key), `<domain>.crt.pem`,
//! `<domain>.key.pem` (named after the first domain).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::{certified_key_from_pem, CertStore, Challenges};
use crate::config::{AcmeChallenge, AcmeConfig};

/// First retry after a failed attempt; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_secs(30);
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Why an attempt failed (logged; the task retries).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("{0}")]
    Other(String),
}

/// One listener's ACME certificate: what to obtain, where to install it and where
/// to keep it.
pub struct AcmeTask {
    pub config: AcmeConfig,
    pub store: Arc<CertStore>,
    pub challenges: Arc<Challenges>,
    /// `<state_dir>/acme`.
    pub dir: PathBuf,
}

/// A certificate installed: when it expires and when it is due for renewal (seconds
/// since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    pub not_after: i64,
    pub renew_at: i64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AcmeTask {
    pub fn new(
        config: AcmeConfig,
        store: Arc<CertStore>,
        challenges: Arc<Challenges>,
        state_dir: &Path,
    ) -> AcmeTask {
        AcmeTask {
            config,
            store,
            challenges,
            dir: state_dir.join("acme"),
        }
    }

    fn first(&self) -> &str {
        &self.config.domains[0]
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt.pem", self.first()))
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key.pem", self.first()))
    }

    fn account_path(&self) -> PathBuf {
        let name: String = self
            .config
            .directory
            .trim_start_matches("https://")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.dir.join(format!("account-{name}.json"))
    }

    /// Runs until `stop` turns true: installs the stored certificate, then obtains and
    /// renews as due, with backoff on failure.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut current = match self.load_stored() {
            Ok(Some(i)) => {
                tracing::info!(domains = ?self.config.domains, not_after = i.not_after, "ACME: stored certificate installed");
                Some(i)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "ACME: stored certificate not usable; obtaining a new one");
                None
            }
        };
        let mut backoff = BACKOFF_START;
        let mut wait = Duration::ZERO;
        loop {
            if let Some(i) = current {
                let due = (i.renew_at - now()).max(0) as u64;
                wait = wait.max(Duration::from_secs(due));
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            tracing::info!(domains = ?self.config.domains, directory = %self.config.directory, "ACME: requesting a certificate");
            match self.obtain().await {
                Ok(i) => {
                    tracing::info!(domains = ?self.config.domains, not_after = i.not_after, renew_at = i.renew_at, "ACME: certificate installed");
                    current = Some(i);
                    backoff = BACKOFF_START;
                    wait = Duration::ZERO;
                }
                Err(e) => {
                    tracing::error!(domains = ?self.config.domains, error = %e, retry_in = ?backoff, "ACME: attempt failed");
                    wait = backoff;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    /// Installs the stored certificate if it exists and is not yet due for renewal.
    pub fn load_stored(&self) -> Result<Option<Installed>, AcmeError> {
        let (cp, kp) = (self.cert_path(), self.key_path());
        let (Ok(cert), Ok(key)) = (std::fs::read(&cp), std::fs::read(&kp)) else {
            return Ok(None);
        };
        let issued = std::fs::metadata(&cp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or_else(now);
        let i = self.install(&cert, &key, issued)?;
        if i.renew_at <= now() {
            return Ok(None);
        }
        Ok(Some(i))
    }

    fn install(&self, cert: &[u8], key: &[u8], issued: i64) -> Result<Installed, AcmeError> {
        let ck = certified_key_from_pem(cert, key).map_err(|e| AcmeError::Other(e.to_string()))?;
        let not_after = ck
            .end_entity_cert()
            .ok()
            .and_then(|c| super::der::read(c).ok())
            .map(|f| f.not_after)
            .ok_or_else(|| {
                AcmeError::Other("issued certificate has no readable notAfter".into())
            })?;
        for d in &self.config.domains {
            self.store
                .set_dynamic(d, ck.clone())
                .map_err(|e| AcmeError::Other(e.to_string()))?;
        }
        Ok(Installed {
            not_after,
            renew_at: renew_at(issued, not_after, self.config.renew_before),
        })
    }

    /// One full issuance: order, challenges, finalize, download, store, install.
    pub async fn obtain(&self) -> Result<Installed, AcmeError> {
        private_dir(&self.dir)?;
        let account = self.account().await?;
        let account = match self.order_with(&account).await {
            // The CA no longer knows the stored account (a CA reset, a deactivated
            // account): make a new one, once.
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref()
                    == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
            {
                tracing::warn!("ACME: the CA does not know the stored account; creating a new one");
                let _ = std::fs::remove_file(self.account_path());
                self.account().await?
            }
            Err(e) => return Err(e.into()),
            Ok(order) => return self.complete(order).await,
        };
        let order = self.order_with(&account).await?;
        self.complete(order).await
    }

    async fn order_with(
        &self,
        account: &Account,
    ) -> Result<instant_acme::Order, instant_acme::Error> {
        let ids: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        account.new_order(&NewOrder::new(&ids)).await
    }

    async fn complete(&self, mut order: instant_acme::Order) -> Result<Installed, AcmeError> {
        let mut published = Vec::new();
        let result = self.answer(&mut order, &mut published).await;
        let result = match result {
            Ok(()) => self.finish(&mut order).await,
            Err(e) => Err(e),
        };
        for (token, host) in published {
            self.challenges.remove_http01(&token);
            self.challenges.remove_tls_alpn01(&host);
        }
        result
    }

    async fn answer(
        &self,
        order: &mut instant_acme::Order,
        published: &mut Vec<(String, String)>,
    ) -> Result<(), AcmeError> {
        let kind = match self.config.challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            let mut a = a?;
            match a.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Other(format!(
                        "authorization is {other:?}, expected pending"
                    )))
                }
            }
            let mut ch = a
                .challenge(kind.clone())
                .ok_or_else(|| AcmeError::Other(format!("the CA offers no {kind:?} challenge")))?;
            let host = ch.identifier().to_string();
            let key_auth = ch.key_authorization();
            match self.config.challenge {
                AcmeChallenge::Http01 => {
                    self.challenges.set_http01(&ch.token, key_auth.as_str());
                }
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(&host, key_auth.digest().as_ref())?;
                    self.challenges.set_tls_alpn01(&host, cert);
                }
            }
            published.push((ch.token.clone(), host));
            ch.set_ready().await?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Other(format!(
                "order is {status:?} after the challenges, expected ready: {:?}",
                order.state().error
            )));
        }
        Ok(())
    }

    async fn finish(&self, order: &mut instant_acme::Order) -> Result<Installed, AcmeError> {
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
        let issued = now();
        let installed = self.install(chain_pem.as_bytes(), key_pem.as_bytes(), issued)?;
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), chain_pem.as_bytes())?;
        Ok(installed)
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.account_path();
        let builder = || match &self.config.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            let creds: AccountCredentials =
                serde_json::from_str(&text).map_err(|e| AcmeError::File {
                    path: path.clone(),
                    problem: format!("not an ACME account: {e}"),
                })?;
            return Ok(builder()?.from_credentials(creds).await?);
        }
        let contact = self.config.contact.as_ref().map(|c| format!("mailto:{c}"));
        let contacts: Vec<&str> = contact.iter().map(|c| c.as_str()).collect();
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_vec(&creds).map_err(|e| AcmeError::Other(e.to_string()))?;
        write_private(&path, &json)?;
        tracing::info!(account = account.id(), "ACME: account created");
        Ok(account)
    }
}

/// The wait after the next failure: doubled, at most [`BACKOFF_MAX`].
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

/// When a certificate issued at `issued` and expiring at `not_after` is due.
pub fn renew_at(issued: i64, not_after: i64, renew_before: Option<Duration>) -> i64 {
    let before = match renew_before {
        Some(d) => d.as_secs() as i64,
        None => (30 * 86_400).min((not_after - issued).max(0) / 3),
    };
    not_after - before
}

/// The self-signed certificate answering a TLS-ALPN-01 challenge (RFC 8737 §3):
/// the name as its only SAN and the key authorization's SHA-256 in the critical
/// `acmeIdentifier` extension.
fn alpn_certificate(
    host: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, AcmeError> {
    let err = |e: rcgen::Error| AcmeError::Other(format!("TLS-ALPN-01 certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(err)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    // Built directly, not with `certified_key_from_pem`: its key check parses the
    // certificate with webpki, which (rightly, for real certificates) refuses the
    // unknown critical `acmeIdentifier` extension.
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| AcmeError::Other(format!("TLS-ALPN-01 key: {e}")))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> Result<(), AcmeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let e = |e: std::io::Error| AcmeError::File {
        path: dir.to_path_buf(),
        problem: e.to_string(),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(e)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(e)
}

/// Writes `bytes` to `path` with mode 0600, replacing it atomically.
#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let e = |e: std::io::Error| AcmeError::File {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(e)?;
    f.write_all(bytes).map_err(e)?;
    f.sync_all().map_err(e)?;
    std::fs::rename(&tmp, path).map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30s_and_stops_at_an_hour() {
        let mut b = BACKOFF_START;
        let mut seen = vec![b.as_secs()];
        for _ in 0..10 {
            b = next_backoff(b);
            seen.push(b.as_secs());
        }
        assert_eq!(&seen[..8], &[30, 60, 120, 240, 480, 960, 1920, 3600]);
        assert!(seen[8..].iter().all(|s| *s == 3600));
    }

    #[test]
    fn renewal_is_30_days_before_expiry_or_a_third_of_a_short_lifetime() {
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day, None), 60 * day);
        assert_eq!(renew_at(0, 6 * day, None), 4 * day);
        assert_eq!(
            renew_at(0, 90 * day, Some(Duration::from_secs(day as u64))),
            89 * day
        );
    }
}

#[cfg(test)]
mod alpn_tests {
    #[test]
    fn the_tls_alpn01_certificate_is_usable_and_names_the_host() {
        let ck = super::alpn_certificate("localhost", &[7u8; 32]).unwrap();
        let facts = super::super::der::read(ck.end_entity_cert().unwrap()).unwrap();
        assert_eq!(facts.dns_names, vec!["localhost".to_string()]);
    }
}
