//! Traffic mirroring: copy a sample of a service's live requests to another slot,
//! discard its answers, and count how they compare with the live ones.
//!
//! The rule is that the client never notices. The live request is forwarded exactly as
//! without mirroring; the copy is a separate task on a separate connection pool that
//! the client's response never waits for:
//! - the body is copied as it streams upstream (`LimitedBody::tee`), so the live
//!   request is not held back either; only bodies whose size is known and at most
//!   [`MAX_BODY`] are mirrored (an unannounced or larger body is not, and not counted);
//! - at most [`MAX_IN_FLIGHT`] copies per mirror are in flight; a request that would
//!   exceed that is not copied but counted as `dropped`, so a stuck target costs
//!   dropped copies, never latency;
//! - a copy that gets no response headers within the proxy's `upstream_timeout`, or
//!   cannot connect, counts as `failed`.
//!
//! Comparison: the live side reports the status the client got (the upstream's, or the
//! proxy's 502/504) and the time to its response headers; the copy measures the same
//! for the mirror target. When both are known the copy counts as `compared`, and as
//! `mismatched` if the status classes (2xx, 4xx, 5xx, ...) differ. A live request that
//! the client broke off (or whose body was too large) is not compared.
//!
//! Copies are not recorded in any slot's `SlotStats`: the watch and `/metrics` see only
//! real traffic. Every copy carries `x-cutover-mirror: 1`.
//!
//! A target whose slots serve TLS (`[services.<name>.upstream_tls]`, set on the mirror
//! by the built-in router) gets its copies over TLS with the same trust, through TLS
//! pools of the mirror's own (`tls_upstream::MirrorTlsPools`). A copy whose handshake
//! fails counts as `failed`; the first such failure of each mirror is logged as a
//! warning naming the cause and the key to set (later ones at debug, so a broken target
//! cannot flood the log).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderName;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use super::body::LimitedBody;
use super::tls_upstream::{tls_failure, MirrorTlsPools, TlsClientOf};
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::{MirrorReport, MirrorSpec, Target};
use crate::tls::ClientTls;

/// Largest request body that is mirrored.
pub const MAX_BODY: usize = 64 * 1024;
/// Copies of one mirror in flight at once; more are dropped.
pub const MAX_IN_FLIGHT: usize = 64;
/// Added to every mirrored request, so the target can tell copies from real traffic.
pub const X_CUTOVER_MIRROR: HeaderName = HeaderName::from_static("x-cutover-mirror");

/// The connection pool copies to a plaintext target are sent through (separate from
/// the live one).
pub type MirrorClient = Client<HttpConnector, Full<Bytes>>;

/// Every pool copies go through: the plain one and one per TLS trust setting, all apart
/// from the live pools, so a copy never takes a live connection.
pub(super) struct MirrorClients {
    plain: MirrorClient,
    tls: MirrorTlsPools,
    connector: HttpConnector,
}

impl MirrorClients {
    /// Pools built on `connector` (its connect timeout and `TCP_NODELAY`).
    pub(super) fn new(connector: &HttpConnector) -> Self {
        let plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build(connector.clone());
        Self {
            plain,
            tls: MirrorTlsPools::new(MAX_IN_FLIGHT),
            connector: connector.clone(),
        }
    }

    /// The client for a target served over TLS with `tls` (`None`: plain HTTP); the
    /// error says why the trust could not be built (an unreadable `ca_file`).
    fn for_target(&self, tls: Option<&Arc<ClientTls>>) -> Result<CopyClient, String> {
        match tls {
            None => Ok(CopyClient::Plain(self.plain.clone())),
            Some(settings) => self
                .tls
                .get(settings, &self.connector)
                .map(CopyClient::Tls)
                .map_err(|e| e.to_string()),
        }
    }
}

/// One copy's client.
enum CopyClient {
    Plain(MirrorClient),
    Tls(TlsClientOf<Full<Bytes>>),
}

impl CopyClient {
    fn request(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            CopyClient::Plain(c) => c.request(req),
            CopyClient::Tls(c) => c.request(req),
        }
    }
}

/// Why a [`MirrorSpec`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MirrorSpecError {
    #[error("mirror percent must be 1..=100, got {0}")]
    Percent(u8),
    #[error("`{0}` is not an HTTP method")]
    Method(String),
}

/// One service's mirror: where copies go, which requests are copied, and the report.
#[derive(Debug)]
pub struct Mirror {
    target: Target,
    authority: Authority,
    /// `Some` when the target serves TLS: copies go over TLS with this trust.
    tls: Option<Arc<ClientTls>>,
    /// Whether a failed copy was logged as a warning yet (once per mirror).
    warned: AtomicBool,
    percent: u8,
    methods: Vec<Method>,
    /// Requests of a mirrored method seen so far (the sample sequence).
    next: AtomicU64,
    in_flight: AtomicUsize,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    mirrored: AtomicU64,
    compared: AtomicU64,
    mismatched: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    live_latency_sum_us: AtomicU64,
    mirror_latency_sum_us: AtomicU64,
}

impl Mirror {
    pub fn new(spec: &MirrorSpec) -> Result<Self, MirrorSpecError> {
        if !(1..=100).contains(&spec.percent) {
            return Err(MirrorSpecError::Percent(spec.percent));
        }
        let methods = spec
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| MirrorSpecError::Method(m.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            authority: authority(&spec.target.endpoint),
            target: spec.target.clone(),
            tls: None,
            warned: AtomicBool::new(false),
            percent: spec.percent,
            methods,
            next: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            counts: Counts::default(),
        })
    }

    /// Copies go over TLS with `tls` (the target slot serves TLS), or plain with `None`.
    pub fn with_tls(mut self, tls: Option<Arc<ClientTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Logs why a copy failed: a warning the first time for this mirror, then at debug.
    fn note_failure(&self, why: &str) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!(slot = %self.target.slot, endpoint = %self.target.endpoint, "mirrored copy failed: {why}");
        } else {
            tracing::warn!(slot = %self.target.slot, endpoint = %self.target.endpoint, "mirrored copy failed (later failures of this mirror are logged at debug): {why}");
        }
    }

    pub fn target(&self) -> Target {
        self.target.clone()
    }

    /// The counts since this mirror began.
    pub fn report(&self) -> MirrorReport {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MirrorReport {
            mirrored: get(&c.mirrored),
            compared: get(&c.compared),
            mismatched: get(&c.mismatched),
            failed: get(&c.failed),
            dropped: get(&c.dropped),
            live_latency_sum_us: get(&c.live_latency_sum_us),
            mirror_latency_sum_us: get(&c.mirror_latency_sum_us),
        }
    }

    /// Whether this request is in the sample: a mirrored method, then every
    /// `percent`-th in the same even sequence as a weighted split.
    fn samples(&self, method: &Method) -> bool {
        if !self.methods.contains(method) {
            return false;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % 100;
        let p = u64::from(self.percent);
        (k + 1) * p / 100 > k * p / 100
    }

    /// Takes an in-flight place, or counts the copy as dropped.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted(self.clone()))
    }
}

/// An in-flight place of one copy, given back when dropped.
struct Admitted(Arc<Mirror>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The live half of a mirrored request: tells the copy how the client's request ended.
/// Dropping it unreported (client went away, client error) skips the comparison.
#[derive(Debug)]
pub struct LiveSide(oneshot::Sender<(u16, Duration)>);

impl LiveSide {
    /// The client got `status` after `latency` (to the response headers).
    pub fn answered(self, status: u16, latency: Duration) {
        let _ = self.0.send((status, latency));
    }
}

/// Copies one request to the mirror if it is in the sample: `parts` as about to be
/// forwarded (hop-by-hop headers already removed), `body` the live body (a tee is put
/// on it when it has content). Spawns the copy and returns the live half, or `None`
/// when nothing is mirrored.
pub(super) fn start(
    mirror: &Arc<Mirror>,
    clients: &MirrorClients,
    parts: &http::request::Parts,
    body: &mut LimitedBody,
    timeout: Duration,
) -> Option<LiveSide> {
    let empty = body.is_end_stream();
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_BODY as u64);
    if !(empty || small) {
        return None;
    }
    if !mirror.samples(&parts.method) {
        return None;
    }
    let uri = uri(&mirror.authority, &parts.uri, mirror.tls.is_some())?;
    let admitted = mirror.admit()?;
    let copied = (!empty).then(|| body.tee(MAX_BODY));
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut()
        .insert(X_CUTOVER_MIRROR, HeaderValue::from_static("1"));
    let (live_tx, live_rx) = oneshot::channel();
    tokio::spawn(copy(
        admitted,
        clients.for_target(mirror.tls.as_ref()),
        req,
        copied,
        live_rx,
        timeout,
    ));
    Some(LiveSide(live_tx))
}

/// Sends one copy, reads and discards its response, and compares.
async fn copy(
    admitted: Admitted,
    client: Result<CopyClient, String>,
    mut req: Request<Full<Bytes>>,
    copied: Option<oneshot::Receiver<Bytes>>,
    live: oneshot::Receiver<(u16, Duration)>,
    timeout: Duration,
) {
    let m = admitted.0.clone();
    if let Some(copied) = copied {
        // The sender goes away if the body broke or outgrew the cap: no copy then.
        let Ok(Ok(body)) = tokio::time::timeout(timeout, copied).await else {
            return;
        };
        *req.body_mut() = Full::new(body);
    }
    m.counts.mirrored.fetch_add(1, Ordering::Relaxed);
    let client = match client {
        Ok(client) => client,
        Err(why) => {
            m.counts.failed.fetch_add(1, Ordering::Relaxed);
            m.note_failure(&why);
            return;
        }
    };
    let sent = Instant::now();
    let answer = match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let answer = (resp.status().as_u16(), sent.elapsed());
            // Read the body so the connection can be reused; bounded like the rest.
            let mut body = resp.into_body();
            let _ = tokio::time::timeout(timeout, async {
                while let Some(Ok(_)) = body.frame().await {}
            })
            .await;
            Some(answer)
        }
        Ok(Err(e)) => {
            m.counts.failed.fetch_add(1, Ordering::Relaxed);
            let why = m
                .tls
                .as_ref()
                .and_then(|tls| tls_failure(&e, &m.target.endpoint, tls))
                .unwrap_or_else(|| failure_text(&e));
            m.note_failure(&why);
            None
        }
        Err(_) => {
            m.counts.failed.fetch_add(1, Ordering::Relaxed);
            m.note_failure(&format!("no response headers within {timeout:?}"));
            None
        }
    };
    // Give the in-flight place back before waiting on a slow live request.
    drop(admitted);
    let (Some((status, latency)), Ok((live_status, live_latency))) = (answer, live.await) else {
        return;
    };
    let c = &m.counts;
    c.compared.fetch_add(1, Ordering::Relaxed);
    if status / 100 != live_status / 100 {
        c.mismatched.fetch_add(1, Ordering::Relaxed);
    }
    c.live_latency_sum_us
        .fetch_add(micros(live_latency), Ordering::Relaxed);
    c.mirror_latency_sum_us
        .fetch_add(micros(latency), Ordering::Relaxed);
}

/// An upstream client error with its causes, on one line.
fn failure_text(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The endpoint's text as the copies' URI authority: a host name is resolved by the
/// mirror client's connector when it opens a connection.
fn authority(endpoint: &Endpoint) -> Authority {
    Authority::from_maybe_shared(Bytes::from(endpoint.to_string()))
        .expect("an endpoint's text is a valid authority")
}

/// `http://<mirror>/<path and query>` of the forwarded request's URI (`https://` when
/// the target serves TLS).
fn uri(authority: &Authority, forwarded: &Uri, tls: bool) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(
        forwarded
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Slot;

    fn spec(percent: u8, methods: &[&str]) -> MirrorSpec {
        MirrorSpec {
            target: Target::new(
                "web",
                Slot::Green,
                "127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap(),
            ),
            percent,
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn only_listed_methods_are_sampled_and_exactly_percent_of_them() {
        let m = Mirror::new(&spec(25, &["get", "HEAD"])).unwrap();
        let picked = (0..400).filter(|_| m.samples(&Method::GET)).count();
        assert_eq!(picked, 100);
        assert!(!m.samples(&Method::POST));
        assert!(m.methods.contains(&Method::HEAD));
    }

    #[test]
    fn a_spec_with_a_bad_percent_or_method_is_refused() {
        assert!(matches!(
            Mirror::new(&spec(0, &["GET"])),
            Err(MirrorSpecError::Percent(0))
        ));
        assert!(matches!(
            Mirror::new(&spec(101, &["GET"])),
            Err(MirrorSpecError::Percent(101))
        ));
        assert!(matches!(
            Mirror::new(&spec(5, &["G ET"])),
            Err(MirrorSpecError::Method(_))
        ));
    }

    #[test]
    fn copies_beyond_the_in_flight_bound_are_dropped_and_places_come_back() {
        let m = Arc::new(Mirror::new(&spec(100, &["GET"])).unwrap());
        let held: Vec<_> = (0..MAX_IN_FLIGHT).map(|_| m.admit().unwrap()).collect();
        assert!(m.admit().is_none());
        assert_eq!(m.report().dropped, 1);
        drop(held);
        assert!(m.admit().is_some());
        assert_eq!(m.in_flight.load(Ordering::Relaxed), 0);
    }
}
