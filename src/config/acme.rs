//! `[proxy.tls.acme]` (inside one `[[proxy.tls]]`): certificates obtained and renewed
//! automatically from an ACME CA (issue #13 item 2). The client is
//! `proxy/tls/acme.rs`; this file only says what was asked and names mistakes.
//!
//! Safe defaults: Let's Encrypt *production* (`directory`), HTTP-01, renewal 30 days
//! before expiry (or at 2/3 of the lifetime for certificates shorter than 90 days).
//! `http-01` needs the listener's `redirect_from` (the plaintext port 80 the CA
//! calls); `tls-alpn-01` is answered on the TLS listener itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::read::{read, Problems, Read, Sub};
use super::values::RawDuration;

/// Let's Encrypt's production directory (the default).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The names on the certificate (one order for all of them).
    pub domains: Vec<String>,
    pub directory: String,
    /// An e-mail address for the CA's expiry notices; none by default.
    pub contact: Option<String>,
    pub challenge: AcmeChallenge,
    /// A PEM CA bundle trusted for the directory's HTTPS (tests: pebble's CA);
    /// default the system roots.
    pub ca_file: Option<PathBuf>,
    /// Renew this long before `notAfter`; `None`: 30 days, or a third of the
    /// lifetime when that is shorter.
    pub renew_before: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub domains: Option<Vec<String>>,
    pub directory: Option<String>,
    pub contact: Option<String>,
    pub challenge: Option<String>,
    pub ca_file: Option<String>,
    pub renew_before: Option<RawDuration>,
}

/// Reads the `acme` table of `proxy.tls[i]` (found at `at`).
pub(super) fn acme(
    sub: Option<&Sub<RawAcme>>,
    at: &str,
    has_redirect: bool,
    base: &Path,
    p: &mut Problems,
) -> Option<Option<AcmeConfig>> {
    let Some(sub) = sub else {
        return Some(None);
    };
    let r: Read<RawAcme> = read(sub.value(), at, p)?;
    let domains = r
        .required(
            "domains",
            r.raw.domains.clone(),
            "a list of host names like [\"example.com\"]",
            p,
        )
        .and_then(|d| domains(&r, d, p));
    let directory = r
        .or("directory", r.raw.directory.clone(), LETS_ENCRYPT.into())
        .and_then(|d| {
            if d.starts_with("https://") {
                Some(d)
            } else {
                p.add(
                    r.key("directory"),
                    format!("expected an https:// ACME directory URL (e.g. {LETS_ENCRYPT_STAGING:?}), got {d:?}"),
                );
                None
            }
        });
    let contact = r.optional("contact", r.raw.contact.clone(), |c| {
        let c = c.strip_prefix("mailto:").unwrap_or(&c).to_string();
        if c.contains('@') && !c.contains(char::is_whitespace) {
            Some(c)
        } else {
            p.add(
                r.key("contact"),
                format!("expected an e-mail address, got {c:?}"),
            );
            None
        }
    });
    let challenge = r
        .or("challenge", r.raw.challenge.as_deref(), "http-01")
        .and_then(|c| match c {
            "http-01" if !has_redirect => {
                p.add(
                    r.key("challenge"),
                    "\"http-01\" needs this listener's `redirect_from` (the plaintext port the CA calls); set it or use \"tls-alpn-01\"",
                );
                None
            }
            "http-01" => Some(AcmeChallenge::Http01),
            "tls-alpn-01" => Some(AcmeChallenge::TlsAlpn01),
            other => {
                p.add(
                    r.key("challenge"),
                    format!("expected \"http-01\" or \"tls-alpn-01\", got {other:?}"),
                );
                None
            }
        });
    let ca_file = r.optional("ca_file", r.raw.ca_file.as_deref(), |f| {
        let path = base.join(f);
        match std::fs::read_to_string(&path) {
            Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => Some(path),
            Ok(_) => {
                p.add(
                    r.key("ca_file"),
                    format!("{} holds no PEM \"CERTIFICATE\" block", path.display()),
                );
                None
            }
            Err(e) => {
                p.add(
                    r.key("ca_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    });
    let renew_before = r.optional("renew_before", r.raw.renew_before, |d| {
        if d.0.is_zero() {
            p.add(
                r.key("renew_before"),
                "expected a duration greater than 0 (e.g. \"30d\")",
            );
            None
        } else {
            Some(d.0)
        }
    });
    Some(Some(AcmeConfig {
        domains: domains?,
        directory: directory?,
        contact: contact?,
        challenge: challenge?,
        ca_file: ca_file?,
        renew_before: renew_before?,
    }))
}

fn domains(r: &Read<RawAcme>, list: Vec<String>, p: &mut Problems) -> Option<Vec<String>> {
    if list.is_empty() {
        p.add(r.key("domains"), "expected at least one host name");
        return None;
    }
    for d in &list {
        let ok = !d.is_empty()
            && !d.starts_with('.')
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !ok {
            p.add(
                r.key("domains"),
                format!("expected host names like \"example.com\" (no wildcards: they need DNS-01), got {d:?}"),
            );
            return None;
        }
    }
    Some(list.iter().map(|d| d.to_ascii_lowercase()).collect())
}
