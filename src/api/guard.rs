//! Who may call the API at all, decided once for every route before any handler runs.
//!
//! - **Host** (DNS rebinding): a web page can make a browser send requests to
//!   `127.0.0.1:7070` under a name the attacker controls; such a request carries that
//!   name as `Host`. Only loopback addresses, `localhost`, the address the API listens
//!   on and `[api] allowed_hosts` are answered; anything else gets 403.
//! - **Token**: calls that change state (POST) always need the bearer token; reads
//!   (GET) too when `[api] read_requires_token`. The routes the table marks
//!   [`Access::Open`](super::routes::Access::Open) (`/healthz`, the dashboard's files)
//!   are always open.
//! - **Failed authentication** is rate-limited per client address: after
//!   [`MAX_FAILURES`] failures within [`WINDOW`], that address gets 429 until the
//!   window ends, whatever it sends. The table is bounded ([`MAX_CLIENTS`]).
//! - **Errors are JSON**: whatever axum answers by itself (405, 413, a query string it
//!   cannot read, ...) is rewritten into the documented `{"error": {...}}` shape.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};

/// Failed authentications tolerated per client address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 20;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Client addresses remembered at most (older entries are forgotten first).
const MAX_CLIENTS: usize = 10_000;

/// The API's access rules and the failure counts.
#[derive(Debug)]
pub struct ApiGuard {
    listen: SocketAddr,
    read_requires_token: bool,
    allowed_hosts: Vec<String>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl ApiGuard {
    pub fn new(api: &crate::config::ApiConfig) -> Self {
        ApiGuard {
            listen: api.listen,
            read_requires_token: api.edge.read_requires_token,
            allowed_hosts: api.edge.allowed_hosts.clone(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a `Host` value names this API.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = crate::proxy::host_without_port(host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return ip.is_loopback() || ip == self.listen.ip();
        }
        name.eq_ignore_ascii_case("localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether `ip` is locked out now.
    fn locked_out(&self, ip: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now.duration_since(*since) < WINDOW)
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_CLIENTS && !failures.contains_key(&ip) {
            failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if failures.len() >= MAX_CLIENTS {
                failures.clear();
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

/// The paths of the table's [`Access::Open`](super::routes::Access::Open) routes.
fn open_paths() -> &'static std::collections::HashSet<&'static str> {
    static OPEN: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    OPEN.get_or_init(|| {
        super::routes::table()
            .into_iter()
            .filter(|r| r.access == super::routes::Access::Open)
            .map(|r| r.path)
            .collect()
    })
}

/// The middleware: Host, lockout, token, in that order.
pub async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let guard = &s.guard;
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| guard.host_allowed(h)) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "the Host header does not name this API (add the name to `api.allowed_hosts`)",
        )
        .into_response();
    }
    let open = open_paths().contains(req.uri().path());
    let needs_token = !open && (req.method() != Method::GET || guard.read_requires_token);
    if !needs_token {
        return next.run(req).await;
    }
    // Without a socket (tests through `oneshot`) every caller is one client.
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let now = Instant::now();
    if guard.locked_out(ip, now) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!(
                "more than {MAX_FAILURES} failed authentications from this address; try again later"
            ),
        )
        .into_response();
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if super::constant_time_eq(t.as_bytes(), s.token.as_bytes()) => next.run(req).await,
        _ => {
            guard.failed(ip, now);
            ApiError::unauthorized().into_response()
        }
    }
}

/// Rewrites any error answer that is not JSON yet (axum's own 405, 413, 400 for a
/// query string, ...) into `{"error": {"code", "message"}}`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(parts.status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, allowed: &[&str]) -> ApiGuard {
        let api = crate::config::ApiConfig {
            listen: listen.parse().unwrap(),
            edge: crate::config::ApiEdge {
                allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        ApiGuard::new(&api)
    }

    #[test]
    fn only_loopback_the_listen_address_and_allowed_names_are_answered() {
        let g = guard("10.0.0.5:7070", &["cutover.internal"]);
        for ok in [
            "127.0.0.1:7070",
            "127.9.9.9",
            "[::1]:7070",
            "localhost:7070",
            "LOCALHOST",
            "10.0.0.5:7070",
            "cutover.internal:7070",
            "Cutover.Internal",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "10.0.0.6:7070",
            "cutover.internal.evil.example",
            "",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_client_is_locked_out_after_too_many_failures_until_the_window_ends() {
        let g = guard("127.0.0.1:7070", &[]);
        let (a, b): (IpAddr, IpAddr) = ("10.1.1.1".parse().unwrap(), "10.1.1.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(!g.locked_out(a, t0));
            g.failed(a, t0);
        }
        assert!(g.locked_out(a, t0));
        assert!(!g.locked_out(b, t0), "another client is not affected");
        assert!(!g.locked_out(a, t0 + WINDOW), "the window ended");
    }
}
