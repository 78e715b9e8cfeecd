//! `[[proxy.tls]]`: TLS termination on a public listener (issue #13).
//!
//! One table per TLS listener. Its `listen` must be a service's `listen`: every
//! service on that address is then served over TLS (and HTTP/2 by ALPN). The
//! certificate files are read here only far enough to say which file or key is wrong
//! (readable, a PEM block of the right kind); the proxy parses them at start
//! (`proxy/tls/load.rs`) and names the file again if the contents are invalid.
//!
//! Safe defaults: `handshake_timeout` 10s, TLS 1.2 and 1.3 with rustls' default
//! cipher suites, HSTS off, unknown server names get the first certificate
//! (`unknown_sni = "refuse"` fails their handshake instead), prior-knowledge h2c off.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::acme::{acme, AcmeConfig, RawAcme};
use super::read::{read, Problems, Read, Sub};
use super::rules::{addr, duration, positive};
use super::values::RawDuration;

/// One TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListenerConfig {
    pub listen: SocketAddr,
    /// Certificate chain + key files; the first is the default certificate.
    pub certificates: Vec<CertificateFiles>,
    /// Fail handshakes without SNI or for a name no certificate has. Default false
    /// (they get the first certificate).
    pub refuse_unknown_sni: bool,
    /// A plaintext address that answers every request with a 308 to `https://` on
    /// this listener (except ACME HTTP-01 challenges). Default none.
    pub redirect_from: Option<SocketAddr>,
    /// `Strict-Transport-Security` on every response; `None` (the default) sends none.
    pub hsts: Option<Hsts>,
    /// Longest time a client may take to complete the handshake. Default 10s.
    pub handshake_timeout: Duration,
    /// Offer HTTP/2 by ALPN. Default true.
    pub http2: bool,
    /// How often the certificate files are checked for changes. Default 10s.
    pub reload_interval: Duration,
    /// TLS 1.3 session tickets sent after each full handshake (0 to 8). Default
    /// [`DEFAULT_TLS13_TICKETS`].
    pub tls13_tickets: u8,
    /// Certificates obtained by ACME for some names (see `config/acme.rs`).
    pub acme: Option<AcmeConfig>,
}

/// TLS 1.3 session tickets per full handshake unless `tls13_tickets` says otherwise.
/// One: a browser resumes its next connection with it and gets a fresh ticket on that
/// one; a client that opens several connections at once (rare with HTTP/2, which uses
/// one) does a full handshake on the others. OpenSSL (nginx, HAProxy) sends two,
/// rustls two unless told; each costs the server a key derivation, an encryption and
/// a record the client must read (BENCHMARKS.md "TLS handshakes and HTTP/2").
pub const DEFAULT_TLS13_TICKETS: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Host names it serves; default the certificate's own DNS names.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Hsts {
    /// The header value.
    pub fn header(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<String>,
    pub certificates: Option<Vec<Sub<RawCertificate>>>,
    pub unknown_sni: Option<String>,
    pub redirect_from: Option<String>,
    pub hsts_max_age: Option<RawDuration>,
    pub hsts_include_subdomains: Option<bool>,
    pub hsts_preload: Option<bool>,
    pub handshake_timeout: Option<RawDuration>,
    pub http2: Option<bool>,
    pub reload_interval: Option<RawDuration>,
    pub tls13_tickets: Option<i64>,
    pub acme: Option<Sub<RawAcme>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub names: Option<Vec<String>>,
}

/// Reads every `[[proxy.tls]]` table.
pub(super) fn tls_listeners(
    subs: Option<&Vec<Sub<RawTls>>>,
    base: &Path,
    p: &mut Problems,
) -> Option<Vec<TlsListenerConfig>> {
    let Some(subs) = subs else {
        return Some(Vec::new());
    };
    let mut seen = BTreeSet::new();
    let mut acme_first = std::collections::HashMap::new();
    let all: Vec<Option<TlsListenerConfig>> = subs
        .iter()
        .enumerate()
        .map(|(i, sub)| {
            let at = format!("proxy.tls[{i}]");
            let r = read::<RawTls>(sub.value(), &at, p)?;
            let one = listener(&r, base, p)?;
            if !seen.insert(one.listen) {
                p.add(
                    r.key("listen"),
                    format!("{} has a TLS table already", one.listen),
                );
                return None;
            }
            // The ACME client stores a certificate under its first domain's name
            // (`<state_dir>/acme/<domain>.crt.pem`): two tables starting with the same
            // name would overwrite each other's certificate and key.
            if let Some(first) = one.acme.as_ref().map(|a| a.domains[0].clone()) {
                if let Some(earlier) = acme_first.insert(first.clone(), i) {
                    p.add(
                        format!("{at}.acme.domains"),
                        format!(
                            "{first:?} is already the first domain of proxy.tls[{earlier}].acme; \
                             both would store their certificate as <state_dir>/acme/{first}.crt.pem: \
                             start this list with another name"
                        ),
                    );
                    return None;
                }
            }
            Some(one)
        })
        .collect();
    all.into_iter().collect()
}

fn listener(r: &Read<RawTls>, base: &Path, p: &mut Problems) -> Option<TlsListenerConfig> {
    let listen = r
        .required(
            "listen",
            r.raw.listen.as_deref(),
            "an address like \"0.0.0.0:443\"",
            p,
        )
        .and_then(|t| addr(p, r.key("listen"), t));
    let redirect_from = r.optional("redirect_from", r.raw.redirect_from.as_deref(), |t| {
        addr(p, r.key("redirect_from"), t)
    });
    let certificates = certificates(r, base, p);
    let refuse = r
        .or("unknown_sni", r.raw.unknown_sni.as_deref(), "default")
        .and_then(|v| match v {
            "default" => Some(false),
            "refuse" => Some(true),
            other => {
                p.add(
                    r.key("unknown_sni"),
                    format!("expected \"default\" or \"refuse\", got {other:?}"),
                );
                None
            }
        });
    let hsts_max_age = duration(r, "hsts_max_age", r.raw.hsts_max_age, Duration::ZERO);
    let include = r.or(
        "hsts_include_subdomains",
        r.raw.hsts_include_subdomains,
        false,
    );
    let preload = r.or("hsts_preload", r.raw.hsts_preload, false);
    let handshake_timeout = duration(
        r,
        "handshake_timeout",
        r.raw.handshake_timeout,
        Duration::from_secs(10),
    )
    .and_then(|v| positive(p, r.key("handshake_timeout"), v));
    let reload_interval = duration(
        r,
        "reload_interval",
        r.raw.reload_interval,
        Duration::from_secs(10),
    )
    .and_then(|v| positive(p, r.key("reload_interval"), v));
    let http2 = r.or("http2", r.raw.http2, true);
    let tickets = r
        .or(
            "tls13_tickets",
            r.raw.tls13_tickets,
            i64::from(DEFAULT_TLS13_TICKETS),
        )
        .and_then(|n| match u8::try_from(n) {
            Ok(n) if n <= 8 => Some(n),
            _ => {
                p.add(
                    r.key("tls13_tickets"),
                    format!("expected a number of tickets from 0 to 8, got {n}"),
                );
                None
            }
        });
    let has_redirect = matches!(redirect_from, Some(Some(_)));
    let acme = acme(r.raw.acme.as_ref(), &r.key("acme"), has_redirect, base, p);
    let (max_age, include, preload) = (hsts_max_age?, include?, preload?);
    if max_age.is_zero() && (include || preload) {
        p.add(
            r.key("hsts_max_age"),
            "hsts_include_subdomains and hsts_preload need hsts_max_age (e.g. \"365d\")",
        );
        return None;
    }
    let hsts = (!max_age.is_zero()).then_some(Hsts {
        max_age,
        include_subdomains: include,
        preload,
    });
    Some(TlsListenerConfig {
        listen: listen?,
        certificates: certificates?,
        refuse_unknown_sni: refuse?,
        redirect_from: redirect_from?,
        hsts,
        handshake_timeout: handshake_timeout?,
        http2: http2?,
        reload_interval: reload_interval?,
        tls13_tickets: tickets?,
        acme: acme?,
    })
}

fn certificates(r: &Read<RawTls>, base: &Path, p: &mut Problems) -> Option<Vec<CertificateFiles>> {
    let subs = r.required(
        "certificates",
        r.raw.certificates.as_ref(),
        "a list of { cert = \"chain.pem\", key = \"key.pem\" }",
        p,
    )?;
    if subs.is_empty() {
        p.add(r.key("certificates"), "expected at least one certificate");
        return None;
    }
    let all: Vec<Option<CertificateFiles>> = subs
        .iter()
        .enumerate()
        .map(|(i, sub)| {
            let at = format!("{}.certificates[{i}]", r.at);
            let c = read::<RawCertificate>(sub.value(), &at, p)?;
            let cert = pem_file(&c, "cert", c.raw.cert.as_deref(), base, "CERTIFICATE", p);
            let key = pem_file(&c, "key", c.raw.key.as_deref(), base, "PRIVATE KEY", p);
            let names = c.or("names", c.raw.names.clone(), Vec::new()).and_then(|names| {
                for n in &names {
                    let plain = n.strip_prefix("*.").unwrap_or(n);
                    let ok = !plain.is_empty()
                        && plain.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
                    if !ok {
                        p.add(
                            c.key("names"),
                            format!("expected host names like \"example.com\" or \"*.example.com\", got {n:?}"),
                        );
                        return None;
                    }
                }
                Some(names.iter().map(|n| n.to_ascii_lowercase()).collect())
            });
            Some(CertificateFiles {
                cert: cert?,
                key: key?,
                names: names?,
            })
        })
        .collect();
    all.into_iter().collect()
}

/// A readable file holding a PEM block whose label ends with `label`.
fn pem_file(
    r: &Read<RawCertificate>,
    field: &str,
    value: Option<&str>,
    base: &Path,
    label: &str,
    p: &mut Problems,
) -> Option<PathBuf> {
    let v = r.required(field, value, "a PEM file path", p)?;
    let path = base.join(v);
    match std::fs::read_to_string(&path) {
        Err(e) => {
            p.add(r.key(field), format!("cannot read {}: {e}", path.display()));
            None
        }
        Ok(text) => {
            let found = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
                .any(|l| l.trim_end_matches('-').ends_with(label));
            if found {
                Some(path)
            } else {
                p.add(
                    r.key(field),
                    format!("{} holds no PEM \"{label}\" block", path.display()),
                );
                None
            }
        }
    }
}

/// Every TLS listener's `listen` must be a built-in proxy listener; `redirect_from`
/// must not be one.
pub(super) fn tls_listen_rule(
    tls: &[TlsListenerConfig],
    service_listens: &[SocketAddr],
    p: &mut Problems,
) {
    for (i, t) in tls.iter().enumerate() {
        if !service_listens.contains(&t.listen) {
            p.add(
                format!("proxy.tls[{i}].listen"),
                format!("{} is no service's `listen` address", t.listen),
            );
        }
        if let Some(r) = t.redirect_from {
            if service_listens.contains(&r) || tls.iter().any(|o| o.listen == r) {
                p.add(
                    format!("proxy.tls[{i}].redirect_from"),
                    format!("{r} is already a service's listener"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const SERVICE: &str = r#"
[services.web]
listen = "127.0.0.1:8443"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;

    fn pem_files(dir: &std::path::Path) -> (String, String) {
        let cert = dir.join("c.pem");
        let key = dir.join("k.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    fn keys_of(text: &str) -> Vec<String> {
        match parse(text, None) {
            Ok(_) => panic!("expected problems"),
            Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn defaults_are_safe_and_every_mistake_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        let table = format!(
            "\n[[proxy.tls]]\nlisten = \"127.0.0.1:8443\"\ncertificates = [{{ cert = \"{cert}\", key = \"{key}\" }}]\n"
        );
        let c = parse(&format!("{SERVICE}{table}"), None).unwrap();
        let t = &c.proxy.edge.tls[0];
        assert_eq!(t.handshake_timeout, std::time::Duration::from_secs(10));
        assert!(t.http2 && !t.refuse_unknown_sni && t.hsts.is_none() && t.redirect_from.is_none());
        assert!(!c.proxy.edge.h2c);
        assert_eq!(t.tls13_tickets, super::DEFAULT_TLS13_TICKETS);
        let two = parse(&format!("{SERVICE}{table}tls13_tickets = 2\n"), None).unwrap();
        assert_eq!(two.proxy.edge.tls[0].tls13_tickets, 2);

        let bad = format!(
            "{SERVICE}\n[[proxy.tls]]\nlisten = \"127.0.0.1:8443\"\ncertificates = [{{ cert = \"{key}\", key = \"{cert}\", names = [\"a b\"] }}]\n\
             unknown_sni = \"maybe\"\nhsts_preload = true\nredirect_from = \"127.0.0.1:8443\"\ntls13_tickets = 9\n"
        );
        let keys = keys_of(&bad);
        for k in [
            "proxy.tls[0].certificates[0].cert",
            "proxy.tls[0].certificates[0].key",
            "proxy.tls[0].certificates[0].names",
            "proxy.tls[0].unknown_sni",
            "proxy.tls[0].hsts_max_age",
            "proxy.tls[0].tls13_tickets",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} not in {keys:?}");
        }
        let twice = format!("{SERVICE}{table}{table}");
        assert!(keys_of(&twice).contains(&"proxy.tls[1].listen".to_string()));
        let redirect_on_service = format!("{SERVICE}{table}redirect_from = \"127.0.0.1:8443\"\n");
        assert!(keys_of(&redirect_on_service).contains(&"proxy.tls[0].redirect_from".to_string()));
        let hsts =
            format!("{SERVICE}{table}hsts_max_age = \"365d\"\nhsts_include_subdomains = true\n");
        let c = parse(&hsts, None).unwrap();
        assert_eq!(
            c.proxy.edge.tls[0].hsts.as_ref().unwrap().header(),
            "max-age=31536000; includeSubDomains"
        );
    }

    #[test]
    fn acme_defaults_to_lets_encrypt_http01_and_names_every_mistake() {
        use crate::config::{AcmeChallenge, LETS_ENCRYPT};
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        let table = format!(
            "\n[[proxy.tls]]\nlisten = \"127.0.0.1:8443\"\nredirect_from = \"127.0.0.1:8080\"\ncertificates = [{{ cert = \"{cert}\", key = \"{key}\" }}]\n"
        );
        let ok = format!("{SERVICE}{table}acme = {{ domains = [\"App.example.com\"] }}\n");
        let c = parse(&ok, None).unwrap();
        let a = c.proxy.edge.tls[0].acme.as_ref().unwrap();
        assert_eq!(a.domains, vec!["app.example.com".to_string()]);
        assert_eq!(a.directory, LETS_ENCRYPT);
        assert_eq!(a.challenge, AcmeChallenge::Http01);
        assert_eq!(
            (a.contact.as_ref(), a.ca_file.as_ref(), a.renew_before),
            (None, None, None)
        );

        let bad = format!(
            "{SERVICE}{table}acme = {{ domains = [\"*.example.com\"], directory = \"http://ca\", contact = \"nobody\", \
             challenge = \"dns-01\", ca_file = \"{key}\", renew_before = \"0s\" }}\n"
        );
        let keys = keys_of(&bad);
        for k in [
            "domains",
            "directory",
            "contact",
            "challenge",
            "ca_file",
            "renew_before",
        ] {
            let k = format!("proxy.tls[0].acme.{k}");
            assert!(keys.contains(&k), "{k} not in {keys:?}");
        }
        let missing = format!("{SERVICE}{table}acme = {{ contact = \"a@b.c\" }}\n");
        assert!(keys_of(&missing).contains(&"proxy.tls[0].acme.domains".to_string()));
        let no_redirect = ok.replace("redirect_from = \"127.0.0.1:8080\"\n", "");
        assert!(keys_of(&no_redirect).contains(&"proxy.tls[0].acme.challenge".to_string()));
        let alpn = no_redirect.replace(
            "] }",
            "], challenge = \"tls-alpn-01\", renew_before = \"10d\" }",
        );
        let c = parse(&alpn, None).unwrap();
        let a = c.proxy.edge.tls[0].acme.as_ref().unwrap();
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(
            a.renew_before,
            Some(std::time::Duration::from_secs(864_000))
        );
    }

    #[test]
    fn two_acme_tables_starting_with_the_same_domain_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        let table = |port: u16, domains: &str| {
            format!(
                "\n[[proxy.tls]]\nlisten = \"127.0.0.1:{port}\"\ncertificates = [{{ cert = \"{cert}\", key = \"{key}\" }}]\n\
                 acme = {{ domains = {domains}, challenge = \"tls-alpn-01\" }}\n"
            )
        };
        let api = "\n[services.api]\nlisten = \"127.0.0.1:9443\"\n\n[services.api.runtime]\nkind = \"process\"\ncommand = [\"./api\", \"{port}\"]\n";
        let same = format!(
            "{SERVICE}{api}{}{}",
            table(8443, "[\"a.example\", \"b.example\"]"),
            table(9443, "[\"A.example\"]")
        );
        assert_eq!(keys_of(&same), ["proxy.tls[1].acme.domains"]);
        let other_first = format!(
            "{SERVICE}{api}{}{}",
            table(8443, "[\"a.example\"]"),
            table(9443, "[\"b.example\", \"a.example\"]")
        );
        assert!(parse(&other_first, None).is_ok());
    }
}
