//! DATA PLANE: the built-in reverse proxy.
//!
//! One [`Proxy`] (routing table, settings, the general path's pooled upstream
//! client) serves any number of listeners through [`serve`]. A listener maps a request to a service
//! ([`ListenerRoutes`]: Host, default, or "always preview"); the routing table
//! ([`table::Routes`]) maps the service to the slot's address right now. A switch swaps
//! the table; requests already forwarded finish where they started.
//!
//! # Layout
//! - [`server`]: accept loop, per-connection serving, graceful shutdown; `conn`: what
//!   one listener's connections share (its routes, its state: serving, draining,
//!   stopped), read by `server`, `h1`, `forward` and `upgrade` alike.
//! - `h1`: the fast path, a hand-written HTTP/1.1 forwarder for the common request
//!   (connection-affine upstream connections, heads rewritten, bodies passed through);
//!   it hands anything unusual, with the bytes already read, to the general path.
//! - `forward`: the general path (hyper server + hyper-util client): one request →
//!   one upstream, and the mapping of failures to 4xx/5xx and to an [`stats::Outcome`].
//! - `headers`: hop-by-hop removal, `X-Forwarded-*`, `x-cutover-slot`.
//! - `body`: streaming bodies, the request-size limit, and the [`body::Recorder`] that
//!   records every proxied request exactly once.
//! - `upgrade`: WebSocket / HTTP upgrade tunnels.
//! - [`stats`], [`table`]: per-slot counters and the swapped routing table;
//!   [`upstream`]: one slot's address and counters, what the table holds and a split
//!   chooses between.
//! - [`split`]: weighted canary split and sticky cookies; `cookies`: reading and
//!   stripping the proxy's own cookies (preview, sticky).
//! - [`mirror`]: copying a sample of live requests to another slot, and the report.
//! - [`shield`]: a deployment's guard over its new slot (retry on the previous
//!   release, the burst trigger); `shield_path`: the general path's guarded send.
//!
//! # Cost per request (the hot path)
//! On the fast path (`h1`), for the common request: one read of the client's head and
//! one write of the rewritten head to an upstream connection this client connection
//! already holds, one read of the response and one write to the client (head and a
//! small body together); one `ArcSwap` load of the routing table, one hash lookup for
//! the Host and one for the service, an `Arc` clone of the chosen slot's counters. No
//! heap allocation per request once the connection's buffers exist, no lock, no
//! second task, no timer re-armed per request. The general path (hyper server and
//! hyper-util pooled client) adds a parsed `HeaderMap` per side, a pool checkout, a
//! hop to the client connection's task, a boxed future and a timer per request.
//! During a canary (a split is set) one more atomic `fetch_add` picks the slot, and a
//! response may get a `Set-Cookie`; a request carrying the proxy's own cookies pays for
//! one rebuilt `Cookie` header. Mirrored requests (only while mirroring) take the
//! general path and allocate their copy off the client's path.
//!
//! # Invariants
//! - Each proxied request is recorded exactly once in the `SlotStats` of the upstream
//!   it was sent to, and counted in flight until then (the drain relies on it).
//! - Requests that never reach an upstream (404, 503, 413) are not recorded.
//! - Nothing on the request path takes a lock.

mod affine;
mod body;
mod conn;
mod cookies;
mod direct;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod headers;
mod idle;
pub mod mirror;
pub mod preview;
mod redirect;
pub mod server;
pub mod shield;
mod shield_path;
pub mod split;
pub mod stats;
pub mod table;
pub mod tls;
mod tls_upstream;
mod upgrade;
pub mod upstream;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::domain::endpoint::Endpoint;

pub use headers::{host_without_port, X_CUTOVER_SLOT};
pub use server::{serve, serve_with_grace, DEFAULT_SHUTDOWN_GRACE};

/// The header sent when `proxy.preview_header` is not a valid header name (validation
/// should have refused it already).
pub const DEFAULT_PREVIEW_HEADER: &str = "x-cutover-preview";
/// The default `proxy.preview_cookie`.
pub const DEFAULT_PREVIEW_COOKIE: &str = "cutover-preview";

/// How the proxy treats requests; from `[proxy]` in the config.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// A request carrying this header (any value) goes to the preview slot.
    pub preview_header: http::HeaderName,
    /// A request carrying a cookie of this name (any value) goes to the preview slot.
    pub preview_cookie: String,
    /// Time allowed to receive a request's headers; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: u64,
    /// Time to wait for an upstream's response headers (connect included) once the
    /// request is sent, and for the upstream to take more of it; then 504.
    pub upstream_timeout: Duration,
    /// Longest wait for the next bytes of a request body; then 408, recorded as the
    /// client's failure (a slow client never counts against a release).
    pub client_body_timeout: Duration,
    /// Largest request head; larger gets 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Most header lines in a request head; more gets 431.
    pub max_header_lines: usize,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are kept; every other client's
    /// are replaced.
    pub trusted_proxies: Arc<[crate::config::IpNet]>,
    /// Pass `CONNECT` on to the app (else 405).
    pub allow_connect: bool,
    /// Add `x-cutover-slot` to responses.
    pub slot_header: bool,
    /// Who may reach the preview slot by header or cookie.
    pub preview: preview::PreviewAccess,
    /// Open client connections one listener serves at once (all workers together);
    /// the rest wait in the kernel's accept queue, so a flood of connections can
    /// never use up the descriptors the proxy needs for upstreams, the API and other
    /// listeners.
    pub max_connections: usize,
    /// The semaphores behind `max_connections`, one per listening address, shared by
    /// every worker's copy of these settings.
    pub caps: Arc<server::ConnectionCaps>,
    /// Serve common requests on the hand-written HTTP/1.1 fast path (`h1`); `false`
    /// sends everything through the general (hyper) path. On unless
    /// `CUTOVER_PROXY_FAST_PATH=0`.
    pub fast_path: bool,
    /// TLS listeners, redirect listeners and ACME challenges (`tls`); empty unless
    /// the daemon set it from `[[proxy.tls]]`.
    pub tls: Arc<tls::TlsEdge>,
    /// Prior-knowledge HTTP/2 (h2c) on plaintext listeners.
    pub h2c: bool,
    /// The general path sends through an upstream connection owned by the client
    /// connection (`affine`) instead of the pool, and the fast path is off. A
    /// benchmark setting, not a supported one: `CUTOVER_PROXY_AFFINE=1`.
    pub affine_upstream: bool,
}

impl ProxySettings {
    /// Whether a client connected from `peer` may tell us about forwarded hops.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(peer))
    }

    pub fn from_config(c: &crate::config::ProxyConfig) -> Self {
        let preview_header = http::HeaderName::from_bytes(c.preview_header.as_bytes())
            .unwrap_or_else(|_| http::HeaderName::from_static(DEFAULT_PREVIEW_HEADER));
        Self {
            preview_header,
            preview_cookie: c.preview_cookie.clone(),
            header_read_timeout: c.header_read_timeout,
            max_body_bytes: c.max_body_bytes,
            upstream_timeout: c.upstream_timeout,
            client_body_timeout: c.edge.client_body_timeout,
            max_header_bytes: c.edge.max_header_bytes,
            max_header_lines: c.edge.max_header_lines,
            trusted_proxies: c.edge.trusted_proxies.clone().into(),
            allow_connect: c.edge.allow_connect,
            slot_header: c.edge.slot_header,
            preview: preview::PreviewAccess::from_config(&c.edge.preview),
            max_connections: c.edge.max_connections,
            caps: Arc::default(),
            fast_path: fast_path_from_env(),
            tls: Arc::default(),
            h2c: c.edge.h2c,
            affine_upstream: affine_from_env(),
        }
    }
}

/// Whether an upstream connect failed for want of Cutover's own descriptors (EMFILE,
/// ENFILE) anywhere in the error's chain (hyper's connector and the direct exchange
/// wrap the io::Error): Cutover's overload, never an upstream's failure
/// ([`stats::Outcome::Overloaded`]), and nothing the shield's retry could help.
pub(crate) fn exhausted(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |err| err.source()).any(|err| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(crate::domain::endpoint::out_of_descriptors)
    })
}

/// `CUTOVER_PROXY_FAST_PATH=0` (or `off`, `false`) turns the fast path off.
fn fast_path_from_env() -> bool {
    !matches!(
        std::env::var("CUTOVER_PROXY_FAST_PATH").as_deref(),
        Ok("0" | "off" | "false")
    )
}

/// `CUTOVER_PROXY_AFFINE=1` (or `on`, `true`): see `affine`.
fn affine_from_env() -> bool {
    matches!(
        std::env::var("CUTOVER_PROXY_AFFINE").as_deref(),
        Ok("1" | "on" | "true")
    )
}

impl Default for ProxySettings {
    /// The config defaults.
    fn default() -> Self {
        Self {
            preview_header: http::HeaderName::from_static(DEFAULT_PREVIEW_HEADER),
            preview_cookie: DEFAULT_PREVIEW_COOKIE.to_string(),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 10 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_header_lines: 100,
            trusted_proxies: Arc::from(Vec::new()),
            allow_connect: false,
            slot_header: false,
            preview: preview::PreviewAccess::default(),
            max_connections: 10_000,
            caps: Arc::default(),
            fast_path: fast_path_from_env(),
            tls: Arc::default(),
            h2c: false,
            affine_upstream: affine_from_env(),
        }
    }
}

/// What one listening socket serves: Host -> service name, a default service, or
/// (preview listener) always the preview slot of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerRoutes {
    /// Host (without port; matched case-insensitively) → service name.
    pub by_host: HashMap<String, String>,
    /// Service for a Host not in `by_host` (or no Host); `None` → 404.
    pub default: Option<String>,
    /// Every request goes to the service's preview slot.
    pub preview_only: bool,
}

impl ListenerRoutes {
    /// Host keys lower-cased and without port, as [`ListenerRoutes::service_for`] expects.
    fn normalized(mut self) -> Self {
        self.by_host = self
            .by_host
            .into_iter()
            .map(|(h, s)| (headers::host_without_port(&h).to_ascii_lowercase(), s))
            .collect();
        self
    }

    /// The service for a request's host (`Host` header or URI authority, port allowed).
    fn service_for(&self, host: Option<&str>) -> Option<&str> {
        let by_host = host.filter(|_| !self.by_host.is_empty()).and_then(|h| {
            let h = headers::host_without_port(h);
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(&h.to_ascii_lowercase())
            } else {
                self.by_host.get(h)
            }
        });
        by_host.or(self.default.as_ref()).map(String::as_str)
    }
}

/// Every listener the config asks for: each service's `listen` (grouped by address;
/// `hosts` -> by_host, no hosts -> default) and each `preview_listen` (preview_only,
/// default = that service).
/// Then each `[[proxy.tls]]` `redirect_from` (no routes: it only redirects).
pub fn listeners_from_config(c: &crate::config::Config) -> Vec<(SocketAddr, ListenerRoutes)> {
    // Services behind an external router (nginx, HAProxy, ...) have no listener here.
    let mut out = group_listeners(c.services.values().filter_map(|s| {
        Some(ListenSpec {
            service: &s.name,
            listen: s.listen.filter(|_| s.router.is_builtin())?,
            hosts: &s.hosts,
            preview_listen: s.preview_listen,
        })
    }));
    for t in &c.proxy.edge.tls {
        if let Some(from) = t.redirect_from {
            out.push((from, ListenerRoutes::default()));
        }
    }
    out
}

/// The parts of a service's config that decide its listeners.
struct ListenSpec<'a> {
    service: &'a str,
    listen: SocketAddr,
    hosts: &'a [String],
    preview_listen: Option<SocketAddr>,
}

/// Listeners in the order their address first appears (services in name order).
fn group_listeners<'a>(
    specs: impl IntoIterator<Item = ListenSpec<'a>>,
) -> Vec<(SocketAddr, ListenerRoutes)> {
    let mut out: Vec<(SocketAddr, ListenerRoutes)> = Vec::new();
    let mut previews = Vec::new();
    for spec in specs {
        let idx = match out.iter().position(|(a, _)| *a == spec.listen) {
            Some(i) => i,
            None => {
                out.push((spec.listen, ListenerRoutes::default()));
                out.len() - 1
            }
        };
        let routes = &mut out[idx].1;
        if spec.hosts.is_empty() {
            routes.default = Some(spec.service.to_string());
        }
        for host in spec.hosts {
            routes
                .by_host
                .insert(host.to_ascii_lowercase(), spec.service.to_string());
        }
        if let Some(addr) = spec.preview_listen {
            previews.push((
                addr,
                ListenerRoutes {
                    by_host: HashMap::new(),
                    default: Some(spec.service.to_string()),
                    preview_only: true,
                },
            ));
        }
    }
    out.extend(previews);
    out
}

/// The proxy shared by every listener: routing table, settings, upstream client pool.
pub struct Proxy {
    routes: Arc<table::Routes>,
    settings: ProxySettings,
    client: Client<HttpConnector, body::LimitedBody>,
    /// Mirrored copies go through their own pool, so they never take a live connection.
    mirror_clients: mirror::MirrorClients,
    /// `host:port` authorities of upstreams seen so far, so building an upstream URI
    /// does not format and allocate one per request. Tiny (a few slots), scanned.
    authorities: ArcSwap<Vec<(Endpoint, Authority)>>,
    /// The connector the pools are built from (timeouts), for TLS upstreams' pools.
    connector: HttpConnector,
    /// Pools for upstreams that serve TLS (`tls_upstream.rs`).
    tls_pools: tls_upstream::TlsPools<body::LimitedBody>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(routes: Arc<table::Routes>, settings: ProxySettings) -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.upstream_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Shorter than the 5s keep-alive of common app servers (Node, uvicorn), so
            // we close idle connections before they do and rarely reuse a dying one.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(1024)
            .build(connector.clone());
        let mirror_clients = mirror::MirrorClients::new(&connector);
        Arc::new(Proxy {
            routes,
            settings,
            client,
            mirror_clients,
            authorities: ArcSwap::default(),
            connector,
            tls_pools: tls_upstream::TlsPools::new(1024),
        })
    }

    pub fn routes(&self) -> &Arc<table::Routes> {
        &self.routes
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// `endpoint` as a URI authority, from the cache or made and cached once.
    fn authority(&self, endpoint: &Endpoint) -> Authority {
        if let Some((_, a)) = self.authorities.load().iter().find(|(s, _)| s == endpoint) {
            return a.clone();
        }
        let made = Authority::from_maybe_shared(bytes::Bytes::from(endpoint.to_string()))
            .expect("an endpoint's text is a valid authority");
        self.authorities.rcu(|cached| {
            // Slots get new ports on every deploy: forget old ones now and then.
            let mut next = if cached.len() >= 64 {
                Vec::new()
            } else {
                cached.as_ref().clone()
            };
            if !next.iter().any(|(s, _)| s == endpoint) {
                next.push((endpoint.clone(), made.clone()));
            }
            next
        });
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        service: &'a str,
        listen: &str,
        hosts: &'a [String],
        preview: Option<&str>,
    ) -> ListenSpec<'a> {
        ListenSpec {
            service,
            listen: listen.parse().unwrap(),
            hosts,
            preview_listen: preview.map(|p| p.parse().unwrap()),
        }
    }

    #[test]
    fn services_sharing_an_address_share_a_listener_and_previews_get_their_own() {
        let api_hosts = ["API.example".to_string()];
        let listeners = group_listeners([
            spec("api", "0.0.0.0:80", &api_hosts, None),
            spec("web", "0.0.0.0:80", &[], Some("127.0.0.1:8081")),
            spec("admin", "0.0.0.0:81", &[], None),
        ]);
        assert_eq!(listeners.len(), 3);
        let (addr, main) = &listeners[0];
        assert_eq!(addr.port(), 80);
        assert_eq!(
            main.by_host.get("api.example").map(String::as_str),
            Some("api")
        );
        assert_eq!(main.default.as_deref(), Some("web"));
        assert!(!main.preview_only);
        assert_eq!(listeners[1].1.default.as_deref(), Some("admin"));
        let (addr, preview) = &listeners[2];
        assert_eq!(addr.port(), 8081);
        assert!(preview.preview_only);
        assert_eq!(preview.default.as_deref(), Some("web"));
    }

    #[test]
    fn a_host_matches_without_port_and_case_and_falls_back_to_the_default() {
        let mut routes = ListenerRoutes::default();
        routes.by_host.insert("Shop.Example".into(), "shop".into());
        let routes = routes.normalized();
        assert_eq!(routes.service_for(Some("SHOP.example:8080")), Some("shop"));
        assert_eq!(routes.service_for(Some("other.example")), None);
        let routes = ListenerRoutes {
            default: Some("web".into()),
            ..routes
        };
        assert_eq!(routes.service_for(Some("other.example")), Some("web"));
        assert_eq!(routes.service_for(None), Some("web"));
    }

    #[test]
    fn settings_take_the_config_values_and_lower_case_the_preview_header() {
        let mut c = crate::config::ProxyConfig {
            preview_header: "X-Preview".into(),
            preview_cookie: "preview".into(),
            header_read_timeout: Duration::from_secs(3),
            max_body_bytes: 42,
            upstream_timeout: Duration::from_secs(4),
            drain_timeout: Duration::from_secs(5),
            edge: Default::default(),
        };
        let s = ProxySettings::from_config(&c);
        assert_eq!(s.preview_header.as_str(), "x-preview");
        assert_eq!(s.preview_cookie, "preview");
        assert_eq!(s.header_read_timeout, Duration::from_secs(3));
        assert_eq!(s.max_body_bytes, 42);
        assert_eq!(s.upstream_timeout, Duration::from_secs(4));
        c.preview_header = "not a header".into();
        let s = ProxySettings::from_config(&c);
        assert_eq!(s.preview_header.as_str(), DEFAULT_PREVIEW_HEADER);
    }
}
