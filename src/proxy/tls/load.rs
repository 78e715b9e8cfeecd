//! Reading a certificate chain and its private key from PEM files into what rustls
//! serves, with errors that name the file and what is wrong with it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::store::Served;
use super::TlsError;

/// A certificate chain file and its key file (PEM), and optionally the names it is
/// served for (else the certificate's own DNS names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub names: Vec<String>,
}

impl CertFiles {
    /// Both files' bytes.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| TlsError::File {
                path: path.clone(),
                problem: e.to_string(),
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

/// A certificate chain and key in PEM, as rustls serves them (for
/// [`CertStore::set_dynamic`](super::CertStore::set_dynamic) and challenge
/// certificates).
pub fn certified_key_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let files = CertFiles {
        cert: PathBuf::from("(certificate)"),
        key: PathBuf::from("(key)"),
        names: Vec::new(),
    };
    parse_pair(&files, cert, key).map(|s| s.key)
}

/// Reads and parses a pair; returns what is served and the bytes it came from.
pub fn load_pair(files: &CertFiles) -> Result<(Served, (Vec<u8>, Vec<u8>)), TlsError> {
    let bytes = files.read()?;
    let served = parse_pair(files, &bytes.0, &bytes.1)?;
    Ok((served, bytes))
}

/// Parses a chain (leaf first) and a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key, checks
/// that they belong together, and reads the leaf's names and expiry.
pub fn parse_pair(files: &CertFiles, cert: &[u8], key: &[u8]) -> Result<Served, TlsError> {
    let bad = |path: &PathBuf, problem: String| TlsError::File {
        path: path.clone(),
        problem,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, "no CERTIFICATE block in the file".into()));
    }
    let facts = super::der::read(&chain[0])
        .map_err(|e| bad(&files.cert, format!("cannot read the certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        bad(
            &files.key,
            format!("expected a PEM private key (PKCS#8, RSA or EC): {e}"),
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad(&files.key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        bad(
            &files.key,
            format!(
                "this key does not belong to the certificate in {}",
                files.cert.display()
            ),
        )
    })?;
    let mut names: Vec<String> = if files.names.is_empty() {
        facts.dns_names.clone()
    } else {
        files.names.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    if names.is_empty() {
        names.extend(facts.common_name.iter().map(|n| n.to_ascii_lowercase()));
    }
    Ok(Served {
        key: Arc::new(certified),
        facts,
        names,
    })
}
