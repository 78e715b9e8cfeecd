//! [`CertStore`]: the certificates one TLS listener serves, chosen per handshake by
//! SNI, and the place ACME installs what it obtains.
//!
//! Two sources feed it: PEM files from the config (reloaded by `reload.rs` when they
//! change; a bad new file keeps the old certificate and records the error) and
//! certificates installed at runtime with [`CertStore::set_dynamic`] (ACME). A dynamic
//! certificate for a name wins over a file's. Lookups are lock-free (`ArcSwap`
//! snapshots); only writers (a reload, an ACME install) copy a map.
//!
//! Selection, in order: a TLS-ALPN-01 challenge (RFC 8737) when the client offers only
//! `acme-tls/1` and a challenge certificate is registered for the name; an exact name;
//! a wildcard `*.example.com` for exactly one more label (RFC 6125 §6.4.3:
//! `a.example.com` matches, `a.b.example.com` and `example.com` do not); then the
//! default certificate (the first one configured), unless the listener refuses
//! unknown names, in which case the handshake fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::challenge::Challenges;
use super::der::CertFacts;
use super::load::{load_pair, CertFiles};
use super::TlsError;

/// The ALPN protocol of TLS-ALPN-01 challenges (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One certificate as served, with what we know about it.
#[derive(Debug, Clone)]
pub struct Served {
    pub key: Arc<CertifiedKey>,
    pub facts: CertFacts,
    /// The host names it is selected for (the config's `names`, else its DNS names,
    /// else its common name), lower-cased.
    pub names: Vec<String>,
}

/// What `cutover status` and `/metrics` show about one configured certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertStatus {
    /// The first name it serves (the metric's `name` label).
    pub name: String,
    pub names: Vec<String>,
    /// The certificate file, or `dynamic` for one installed at runtime.
    pub source: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// The last reload's failure for this file, if the served certificate is older
    /// than the file.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Snapshot {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

#[derive(Debug)]
struct FileEntry {
    files: CertFiles,
    /// The bytes last loaded (cert, key), to notice a change.
    loaded: (Vec<u8>, Vec<u8>),
    served: Served,
    error: Option<String>,
}

/// The certificate resolver of one TLS listener (see the module doc).
#[derive(Debug)]
pub struct CertStore {
    files: Mutex<Vec<FileEntry>>,
    from_files: ArcSwap<Snapshot>,
    dynamic: ArcSwap<HashMap<String, Served>>,
    dynamic_snapshot: ArcSwap<Snapshot>,
    challenges: Arc<Challenges>,
    refuse_unknown: bool,
}

impl CertStore {
    /// Loads every configured pair (the first is the default certificate). Any
    /// unreadable or invalid file fails here, naming it.
    pub fn from_files(
        pairs: &[CertFiles],
        refuse_unknown: bool,
        challenges: Arc<Challenges>,
    ) -> Result<CertStore, TlsError> {
        let mut files = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let (served, loaded) = load_pair(pair)?;
            files.push(FileEntry {
                files: pair.clone(),
                loaded,
                served,
                error: None,
            });
        }
        let store = CertStore {
            from_files: ArcSwap::from_pointee(snapshot(files.iter().map(|f| &f.served), true)),
            files: Mutex::new(files),
            dynamic: ArcSwap::default(),
            dynamic_snapshot: ArcSwap::default(),
            challenges,
            refuse_unknown,
        };
        Ok(store)
    }

    /// Installs (or replaces) the certificate served for `host` (an exact name or
    /// `*.example.com`), ahead of any file's. For ACME.
    pub fn set_dynamic(&self, host: &str, key: Arc<CertifiedKey>) -> Result<(), TlsError> {
        let facts = key
            .end_entity_cert()
            .map_err(|e| TlsError::Certificate(format!("{e:?}")))
            .and_then(|c| super::der::read(c).map_err(TlsError::Certificate))?;
        let host = host.to_ascii_lowercase();
        let served = Served {
            key,
            facts,
            names: vec![host.clone()],
        };
        self.dynamic.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(host.clone(), served.clone());
            m
        });
        self.dynamic_snapshot
            .store(Arc::new(snapshot(self.dynamic.load().values(), false)));
        Ok(())
    }

    /// Removes a certificate installed with [`CertStore::set_dynamic`].
    pub fn remove_dynamic(&self, host: &str) {
        let host = host.to_ascii_lowercase();
        self.dynamic.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&host);
            m
        });
        self.dynamic_snapshot
            .store(Arc::new(snapshot(self.dynamic.load().values(), false)));
    }

    /// Re-reads every file whose bytes changed. A file that fails keeps serving its
    /// previous certificate; its error is returned and kept for [`CertStore::status`].
    /// Returns how many certificates changed and the failures.
    pub fn reload(&self) -> (usize, Vec<TlsError>) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = 0;
        let mut failures = Vec::new();
        for entry in files.iter_mut() {
            let now = match entry.files.read() {
                Ok(bytes) => bytes,
                Err(e) => {
                    entry.error = Some(e.to_string());
                    failures.push(e);
                    continue;
                }
            };
            if now == entry.loaded {
                continue;
            }
            match super::load::parse_pair(&entry.files, &now.0, &now.1) {
                Ok(served) => {
                    entry.served = served;
                    entry.loaded = now;
                    entry.error = None;
                    changed += 1;
                }
                Err(e) => {
                    entry.error = Some(e.to_string());
                    failures.push(e);
                }
            }
        }
        if changed > 0 {
            self.from_files
                .store(Arc::new(snapshot(files.iter().map(|f| &f.served), true)));
        }
        (changed, failures)
    }

    /// Every certificate served, files first (in config order), then dynamic ones.
    pub fn status(&self) -> Vec<CertStatus> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<CertStatus> = files
            .iter()
            .map(|f| {
                status_of(
                    &f.served,
                    f.files.cert.display().to_string(),
                    f.error.clone(),
                )
            })
            .collect();
        let dynamic = self.dynamic.load();
        let mut names: Vec<&String> = dynamic.keys().collect();
        names.sort();
        out.extend(
            names
                .into_iter()
                .map(|n| status_of(&dynamic[n], "dynamic".into(), None)),
        );
        out
    }

    /// The certificate for a server name (`None`: no SNI), by the module doc's rules
    /// minus the challenge.
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let files = self.from_files.load();
        let found = sni.and_then(|name| {
            let name = name.to_ascii_lowercase();
            let dynamic = self.dynamic_snapshot.load();
            let parent = name
                .split_once('.')
                .map(|(_, p)| p)
                .filter(|p| p.contains('.'));
            dynamic
                .exact
                .get(&name)
                .or_else(|| files.exact.get(&name))
                .or_else(|| parent.and_then(|p| dynamic.wildcard.get(p)))
                .or_else(|| parent.and_then(|p| files.wildcard.get(p)))
                .cloned()
        });
        match found {
            Some(key) => Some(key),
            None if self.refuse_unknown => None,
            None => files.default.clone(),
        }
    }
}

fn status_of(served: &Served, source: String, error: Option<String>) -> CertStatus {
    CertStatus {
        name: served.names.first().cloned().unwrap_or_default(),
        names: served.names.clone(),
        source,
        not_after: served.facts.not_after,
        error,
    }
}

/// The lookup maps of a set of certificates; earlier ones win a name.
fn snapshot<'a>(served: impl Iterator<Item = &'a Served>, first_is_default: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    for s in served {
        if first_is_default && snap.default.is_none() {
            snap.default = Some(s.key.clone());
        }
        for name in &s.names {
            match name.strip_prefix("*.") {
                Some(parent) => snap.wildcard.entry(parent.to_string()),
                None => snap.exact.entry(name.clone()),
            }
            .or_insert_with(|| s.key.clone());
        }
    }
    snap
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        let acme_only = hello
            .alpn()
            .map(|mut protocols| protocols.all(|p| p == ACME_TLS_ALPN))
            .unwrap_or(false);
        if acme_only {
            // Only ever the challenge certificate: a validation handshake must not be
            // answered with a real one (RFC 8737 §3).
            return sni.and_then(|name| self.challenges.tls_alpn01(name));
        }
        self.select(sni)
    }
}
