//! A TLS server config from a certificate chain and a key in PEM files: what the API
//! serves HTTPS with (`[api] tls_cert_file`/`tls_key_file`), and what tests stand up as
//! TLS servers. The public listeners' per-host certificates are the proxy's own.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::TlsError;

/// A server config serving `cert_file` (the chain, leaf first) with `key_file`, TLS 1.2
/// and 1.3, offering `alpn` (e.g. `http/1.1`).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let invalid = |path: &Path, reason: String| TlsError::CaFileInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::CaFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let certs_pem = read(cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            cert_file,
            "holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\")".into(),
        ));
    }
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(key_file, format!("no private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(key_file, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
