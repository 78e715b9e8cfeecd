//! Outbound TLS: the one place Cutover builds a TLS client, used by every call it makes
//! (webhooks and Slack, Prometheus, analysis webhooks, HTTP hooks, health checks and
//! smoke tests against a slot that serves TLS, the proxy's TLS upstreams, the CLI's
//! client for a daemon whose API serves HTTPS).
//!
//! Why one module: the trust decision (which roots, which name) must be made the same
//! way everywhere, and a failed handshake must say the same clear thing everywhere
//! ("certificate not trusted: ... add ca_file") instead of a rustls enum dump.
//!
//! rustls with the ring provider only. Trust is the operating system's store by
//! default (read once per process); a `ca_file` (PEM) replaces it for that call, as
//! curl's `--cacert` does, so a private service is trusted only through its own CA.
//! `insecure_skip_verify` accepts any certificate: it exists for tests, and every
//! client built with it logs a warning.
//!
//! This is a leaf: it imports nothing from the crate, so any layer may use it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

mod server;
pub use server::server_config;

/// How one outbound call trusts its server: the validated form of the `ca_file`,
/// `server_name` and `tls_insecure_skip_verify` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientTls {
    /// PEM file of the CA certificates to trust instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry (and the SNI sent); default: the host dialled.
    pub server_name: Option<String>,
    /// Accept any certificate. For tests only; logged as a warning.
    pub insecure_skip_verify: bool,
}

/// Why a TLS client could not be built or a handshake failed; each message says what to
/// change.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read ca_file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ca_file {} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("ca_file {}: {reason}", path.display())]
    CaFileInvalid { path: PathBuf, reason: String },
    #[error("no trusted CA certificates in the system store ({0}); install the ca-certificates package or set ca_file")]
    NoSystemRoots(String),
    #[error("{0:?} is not a valid TLS server name (set server_name)")]
    ServerName(String),
    #[error("{0}")]
    Handshake(String),
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        io::Error::other(e)
    }
}

/// A ready TLS client: the built `rustls` config and the trust it was built from.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    settings: ClientTls,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TlsClient {
    /// The client for `settings`, built once per distinct setting per process (a CA file
    /// is read when first used; the system store once).
    pub fn for_settings(settings: &ClientTls) -> Result<TlsClient, TlsError> {
        Self::for_settings_alpn(settings, &[])
    }

    /// As [`TlsClient::for_settings`], offering `alpn` protocols (e.g. `b"http/1.1"`).
    pub fn for_settings_alpn(settings: &ClientTls, alpn: &[&[u8]]) -> Result<TlsClient, TlsError> {
        type Key = (ClientTls, Vec<Vec<u8>>);
        static CACHE: OnceLock<Mutex<HashMap<Key, Arc<ClientConfig>>>> = OnceLock::new();
        let key = (settings.clone(), alpn.iter().map(|p| p.to_vec()).collect());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(config) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(TlsClient {
                config: config.clone(),
                settings: settings.clone(),
            });
        }
        let mut config = build(settings)?;
        config.alpn_protocols = key.1.clone();
        let config = Arc::new(config);
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, config.clone());
        Ok(TlsClient {
            config,
            settings: settings.clone(),
        })
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    pub fn settings(&self) -> &ClientTls {
        &self.settings
    }

    /// The name checked and sent as SNI when dialling `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.settings.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))
    }

    /// Runs the handshake over `stream` to `host` (the dialled host name or IP); a
    /// failure is one clear line ([`explain`]).
    pub async fn connect<S>(&self, host: &str, stream: S) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self.server_name(host)?;
        let shown = self
            .settings
            .server_name
            .as_deref()
            .unwrap_or(host)
            .to_string();
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| TlsError::Handshake(explain(&e, &shown, &self.settings)))
    }
}

/// One line for people from a failed handshake: what went wrong and which key fixes it.
pub fn explain(e: &io::Error, server: &str, settings: &ClientTls) -> String {
    use rustls::CertificateError as C;
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let trust = match &settings.ca_file {
        Some(path) => format!("it is not signed by a CA in ca_file {}", path.display()),
        None => "it is not signed by a CA in the system store; add ca_file".to_string(),
    };
    match tls {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            C::UnknownIssuer | C::BadSignature => {
                format!("TLS handshake with {server} failed: certificate not trusted: {trust}")
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "TLS handshake with {server} failed: the certificate is not valid for the name {server:?} (set server_name to a name it carries)"
            ),
            C::Expired | C::ExpiredContext { .. } => {
                format!("TLS handshake with {server} failed: the certificate has expired")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("TLS handshake with {server} failed: the certificate is not valid yet")
            }
            other => format!("TLS handshake with {server} failed: invalid certificate: {other:?}"),
        },
        Some(other) => format!("TLS handshake with {server} failed: {other}"),
        None if e.kind() == io::ErrorKind::UnexpectedEof => format!(
            "TLS handshake with {server} failed: the server closed the connection (does it speak TLS on this port?)"
        ),
        None => format!("TLS handshake with {server} failed: {e}"),
    }
}

/// The TLS failure inside `err`, if it is one: a `rustls::Error` as it is, or inside
/// `io::Error`s however deeply wrapped (tokio-rustls wraps it once, hyper-rustls twice).
pub fn find_tls_error(err: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls.clone());
    }
    let mut io = err.downcast_ref::<io::Error>()?;
    loop {
        let inner: &(dyn std::error::Error + 'static) = io.get_ref()?;
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        io = inner.downcast_ref::<io::Error>()?;
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(settings: &ClientTls) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    if settings.insecure_skip_verify {
        tracing::warn!(
            "tls_insecure_skip_verify = true: any certificate is accepted (for tests only)"
        );
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth());
    }
    let roots = match &settings.ca_file {
        Some(path) => Arc::new(roots_from_file(path)?),
        None => system_roots()?,
    };
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// The CA certificates of a PEM file.
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| TlsError::CaFileInvalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::CaFileInvalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The operating system's trusted roots, read once.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or("none found".to_string(), |e| e.to_string());
                return Err(why);
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(TlsError::NoSystemRoots)
}

/// `tls_insecure_skip_verify`: any certificate, but the handshake's signatures are
/// still checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
