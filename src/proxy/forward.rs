//! One client request → one upstream, and what the client sees when that fails.
//!
//! Which upstream: the preview slot for the preview listener, the preview header or
//! the preview cookie; otherwise the split's pick during a canary (sticky cookie, else
//! weight), else the live slot. The proxy's own header and cookies are removed before
//! forwarding. While mirroring, a sampled normal request is also copied (`mirror`);
//! the copy never touches this request's response.
//!
//! The order matters: refuse what never needs an upstream (413 by `Content-Length`,
//! 404, 503) before choosing one, so those are not recorded; from the moment an
//! upstream is chosen a [`Recorder`] owns the request's bookkeeping and records it
//! exactly once, whatever happens next (including the client vanishing, which drops
//! this future or the response body).
//!
//! Who failed decides the outcome (it is what rollback reacts to):
//! - connect refused/timed out, reset, garbage from upstream → 502, `UpstreamFailed`;
//! - no response headers within `upstream_timeout` → 504, `UpstreamFailed`;
//! - the client's body broke or grew past the limit → 413/400, `ClientFailed`;
//! - the client sent no body bytes for `client_body_timeout` → 408, `ClientFailed`
//!   (the upstream's timer only runs while the upstream is the one being waited for:
//!   see `body::upstream_wait`);
//! - the client left before the end of the response → `ClientFailed`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, SET_COOKIE, TRANSFER_ENCODING};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::affine::{self, SendError};
use super::body::{upstream_wait, ClientBodyError, LimitedBody, ProxyBody, Recorder};
use super::conn::ListenerCtx;
use super::headers::{self, X_CUTOVER_SLOT};
use super::mirror::{self, Mirror};
use super::stats::{Outcome, SlotStats};
use super::tls_upstream::{connect_tls, tls_failure, UpstreamPool};
use super::upstream::Upstream;
use super::{cookies, Proxy};
use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;
use crate::tls::ClientTls;

impl Proxy {
    /// Serves one request received on a listener (the hyper service body). `trusted`:
    /// the peer is in `proxy.trusted_proxies`.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        listener: &std::sync::Arc<ListenerCtx>,
        client_ip: &HeaderValue,
        trusted: bool,
    ) -> Response<ProxyBody> {
        let mut resp = self.forward(req, listener, client_ip, trusted).await;
        if !self.settings.slot_header {
            // Neither ours nor one an upstream made up (the fast path does the same).
            resp.headers_mut().remove(X_CUTOVER_SLOT);
        }
        resp
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        listener: &std::sync::Arc<ListenerCtx>,
        client_ip: &HeaderValue,
        trusted: bool,
    ) -> Response<ProxyBody> {
        let received = Instant::now();
        // Set by `server` only with `CUTOVER_PROXY_AFFINE=1` (a benchmark setting).
        let affine = req.extensions_mut().remove::<affine::Handle>();
        if let Err(refusal) = check_request(&mut req, self.settings.allow_connect) {
            return refused(refusal);
        }
        let limit = self.settings.max_body_bytes;
        if declared_length(&req).is_some_and(|len| len > limit) {
            return local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }

        // `check_request` left exactly one valid Host (an absolute-form target's).
        let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
        let Some(service) = listener.routes.service_for(host) else {
            return local(StatusCode::NOT_FOUND, "no service for host\n");
        };
        let access = &self.settings.preview;
        let cookies = cookies::scan(
            req.headers(),
            &self.settings.preview_cookie,
            service,
            access,
        );
        let opened = cookies.preview
            || req
                .headers()
                .get(&self.settings.preview_header)
                .is_some_and(|v| access.allows(service, v.as_bytes()));
        let Some(preview) = preview_route(listener, access.enabled, opened) else {
            return refused((StatusCode::FORBIDDEN, "preview needs the preview secret\n"));
        };
        let chosen = match self.choose(service, preview, cookies.sticky) {
            Ok(chosen) => chosen,
            Err(msg) => return local(StatusCode::SERVICE_UNAVAILABLE, msg),
        };
        let (slot, endpoint) = (chosen.slot, chosen.endpoint.clone());
        let tls = chosen.tls.is_some();
        let Some(uri) =
            self.upstream_uri(&endpoint, req.uri(), req.method() == Method::CONNECT, tls)
        else {
            return local(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        let mut recorder = Recorder::start(&chosen.stats, received);
        if let Some(guard) = &chosen.guard {
            guard.admitted();
            recorder = recorder.guarded(guard.clone());
        }

        let connect = req.method() == Method::CONNECT;
        let upgrade = connect || headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(&self.settings.preview_header);
        if cookies.ours {
            cookies::strip(&mut parts.headers, &self.settings.preview_cookie);
        }
        let h2 = parts.version == Version::HTTP_2;
        if h2 {
            headers::join_cookie_fields(&mut parts.headers);
        }
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::strip_cutover(&mut parts.headers);
        headers::add_forwarded(
            &mut parts.headers,
            client_ip,
            trusted,
            listener.tls.is_some(),
        );
        parts.uri = uri;
        // HTTP/1.1 upstream whatever the client spoke, so upstream connections pool.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let mut client_upgrade = client_upgrade;
        if let Some(client_upgrade) = client_upgrade.take_if(|_| connect) {
            let ends = (slot, endpoint, chosen.tls.clone(), received);
            return self
                .tunnel(parts, client_upgrade, ends, recorder, listener)
                .await;
        }
        // An HTTP/2 stream without a body: the fast path's upstream side.
        let direct = h2
            && self.settings.fast_path
            && affine.is_none()
            && !upgrade
            && chosen.mirror.is_none()
            && http_body::Body::is_end_stream(&body)
            // A plain-HTTP slot; to a guarded new slot, not a request the shield may
            // retry after a status (that holds the head back: `send_shielded`).
            && chosen.tls.is_none()
            && chosen
                .guard
                .as_ref()
                .is_none_or(|g| !g.status_retry_possible(&parts.method));
        if direct {
            return self.forward_direct(parts, chosen, recorder, received).await;
        }
        let mut body = LimitedBody::new(body, limit, self.settings.client_body_timeout);
        let watch = (!http_body::Body::is_end_stream(&body)).then(|| body.watch(received));
        let mirrored = match &chosen.mirror {
            Some(m) if !upgrade => mirror::start(
                m,
                &self.mirror_clients,
                &parts,
                &mut body,
                self.settings.upstream_timeout,
            ),
            _ => None,
        };
        // The slot's pool: the plain one, or the TLS one of its trust setting.
        let pool = match self.pool(chosen.tls.as_ref()) {
            Ok(pool) => pool,
            Err(e) => {
                tracing::warn!(%slot, "TLS upstream: {e}");
                recorder.finish(Outcome::UpstreamFailed);
                let resp = local(StatusCode::BAD_GATEWAY, "upstream TLS misconfigured\n");
                return with_slot(resp, slot);
            }
        };
        // The upstream's clock: `upstream_timeout` past the end of what the client
        // sent, never running while the client keeps the body waiting.
        let (sent, slot, recorder) = match chosen.guard.clone() {
            Some(guard) if !upgrade && mirrored.is_none() && guard.retries() => {
                let first = (slot, recorder, received);
                match self.send_shielded(guard, &pool, parts, body, first).await {
                    Ok((sent, slot, recorder)) => {
                        (sent.map(|r| r.map_err(SendError::from)), slot, recorder)
                    }
                    Err(refused) => return refused,
                }
            }
            _ => {
                let upstream_req = Request::from_parts(parts, body);
                let send = async {
                    match (&pool, &affine) {
                        (UpstreamPool::Plain(_), Some(a)) => {
                            a.0.send(&endpoint, upstream_req).await
                        }
                        (pool, _) => pool.request(upstream_req).await.map_err(Into::into),
                    }
                };
                let sent = upstream_wait(
                    send,
                    self.settings.upstream_timeout,
                    received,
                    watch.as_deref(),
                )
                .await;
                (sent, slot, recorder)
            }
        };
        let mut resp = match sent {
            Some(Ok(resp)) => resp,
            Some(Err(e)) => {
                if let Some(why) = chosen
                    .tls
                    .as_ref()
                    .and_then(|tls| tls_failure(e.as_error(), &chosen.endpoint, tls))
                {
                    tracing::debug!(%slot, "TLS upstream: {why}");
                }
                let resp = failed(e, slot, recorder);
                // A client failure (413/400) is not the upstream's answer: not compared.
                if let Some(m) = mirrored.filter(|_| resp.status().is_server_error()) {
                    m.answered(resp.status().as_u16(), received.elapsed());
                }
                return resp;
            }
            None => {
                tracing::debug!(%slot, endpoint = %chosen.endpoint, "upstream sent no response headers in time");
                recorder.finish(Outcome::UpstreamFailed);
                if let Some(m) = mirrored {
                    m.answered(504, received.elapsed());
                }
                return with_slot(
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
                    slot,
                );
            }
        };
        if let Some(m) = mirrored {
            m.answered(resp.status().as_u16(), received.elapsed());
        }

        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                tracing::debug!(%slot, endpoint = %chosen.endpoint, "upstream switched protocols unasked");
                recorder.finish(Outcome::UpstreamFailed);
                return with_slot(
                    local(StatusCode::BAD_GATEWAY, "bad upstream response\n"),
                    slot,
                );
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            super::upgrade::spawn_tunnel(
                client_upgrade,
                upstream_upgrade,
                listener.state.clone(),
                listener.clone(),
            );
            recorder.finish(Outcome::Status(101));
            let (mut parts, _) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, true);
            parts.headers.insert(X_CUTOVER_SLOT, slot_value(slot));
            return Response::from_parts(parts, ProxyBody::empty());
        }

        let (mut parts, body) = resp.into_parts();
        // RFC 9112 §6.3: a transfer coding overrides a length; the body was decoded, so
        // a length sent beside it (a suspect sender) must not reach the client.
        if parts.headers.contains_key(TRANSFER_ENCODING) {
            parts.headers.remove(CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.insert(X_CUTOVER_SLOT, slot_value(slot));
        // A retried request was answered by the previous slot: no cookie for the new.
        if let Some(cookie) = chosen.set_cookie.filter(|_| slot == chosen.slot) {
            parts.headers.append(SET_COOKIE, cookie);
        }
        Response::from_parts(
            parts,
            ProxyBody::upstream(body, recorder, status.as_u16(), watch),
        )
    }

    /// `CONNECT` passed on to the app (`proxy.allow_connect`): sent on a connection of
    /// its own to the slot (never to the host the target names: the pooled client
    /// would connect there; over TLS when the slot serves it), and once the app answers 2xx the client's connection and
    /// that one are joined into a tunnel, like a WebSocket's.
    async fn tunnel(
        &self,
        mut parts: http::request::Parts,
        client_upgrade: hyper::upgrade::OnUpgrade,
        (slot, endpoint, tls, received): (Slot, Endpoint, Option<Arc<ClientTls>>, Instant),
        recorder: Recorder,
        listener: &std::sync::Arc<ListenerCtx>,
    ) -> Response<ProxyBody> {
        parts.headers.remove(http::header::CONNECTION);
        parts.headers.remove(http::header::UPGRADE);
        let req = Request::from_parts(parts, http_body_util::Empty::<Bytes>::new());
        let exchange = async {
            let stream = connect_tls(&endpoint, tls.as_deref())
                .await
                .map_err(|why| {
                    tracing::debug!(%slot, "CONNECT to the slot failed: {why}");
                    "upstream unreachable\n"
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(stream)
                .await
                .map_err(|_| "upstream failed\n")?;
            tokio::spawn(conn.with_upgrades());
            sender
                .send_request(req)
                .await
                .map_err(|_| "upstream failed\n")
        };
        let timeout = self.settings.upstream_timeout;
        let mut resp = match upstream_wait(exchange, timeout, received, None).await {
            Some(Ok(resp)) => resp,
            Some(Err(msg)) => {
                recorder.finish(Outcome::UpstreamFailed);
                return with_slot(local(StatusCode::BAD_GATEWAY, msg), slot);
            }
            None => {
                recorder.finish(Outcome::UpstreamFailed);
                return with_slot(
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
                    slot,
                );
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            parts.headers.insert(X_CUTOVER_SLOT, slot_value(slot));
            let body = ProxyBody::upstream(body, recorder, status.as_u16(), None);
            return Response::from_parts(parts, body);
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        super::upgrade::spawn_tunnel(
            client_upgrade,
            upstream_upgrade,
            listener.state.clone(),
            listener.clone(),
        );
        recorder.finish(Outcome::Status(status.as_u16()));
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.insert(X_CUTOVER_SLOT, slot_value(slot));
        Response::from_parts(parts, ProxyBody::empty())
    }

    /// Picks the upstream of one request from the current snapshot: the preview slot,
    /// the split's pick (by sticky cookie, else by weight) or the live slot. Takes only
    /// what the request needs and lets the snapshot go.
    pub(super) fn choose(
        &self,
        service: &str,
        preview: bool,
        sticky: Option<Slot>,
    ) -> Result<Chosen, &'static str> {
        let snapshot = self.routes.load();
        let entry = snapshot.entry(service);
        if preview {
            let up = entry.and_then(|e| e.route.preview.as_ref());
            return up.map(Chosen::plain).ok_or("no preview slot\n");
        }
        let entry = entry.ok_or("no live slot\n")?;
        let (up, set_cookie) = match &entry.split {
            Some(split) => split.pick(sticky),
            None => (entry.route.live.as_ref().ok_or("no live slot\n")?, None),
        };
        let guard = entry.guard.as_ref().filter(|g| g.new.slot == up.slot);
        Ok(Chosen {
            set_cookie: set_cookie.cloned(),
            mirror: entry.mirror.clone(),
            guard: guard.cloned(),
            ..Chosen::plain(up)
        })
    }

    /// `http://<upstream>/<original path and query>`; the client sends it origin-form.
    /// A host name in the authority is resolved by the client's connector when it opens
    /// a connection (pooled connections are reused without a lookup). A `CONNECT`'s
    /// authority-form target is kept as it is (the app decides what it means; the
    /// connection goes to the slot all the same).
    pub(super) fn upstream_uri(
        &self,
        endpoint: &Endpoint,
        original: &Uri,
        connect: bool,
        tls: bool,
    ) -> Option<Uri> {
        if connect {
            return Some(original.clone());
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
        parts.authority = Some(self.authority(endpoint));
        parts.path_and_query = Some(
            original
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).ok()
    }
}

/// Whether a request goes to the preview slot: always on a preview listener bound to
/// loopback; on a public one (`[proxy.preview] public_listen`) only when the header or
/// cookie `opened` it (`None`: refused, 403); elsewhere when preview by header or
/// cookie is `enabled` and they opened it.
pub(super) fn preview_route(listener: &ListenerCtx, enabled: bool, opened: bool) -> Option<bool> {
    preview_rule(
        listener.routes.preview_only,
        listener.public,
        enabled,
        opened,
    )
}

fn preview_rule(preview_only: bool, public: bool, enabled: bool, opened: bool) -> Option<bool> {
    match (preview_only, public) {
        (true, false) => Some(true),
        (true, true) => opened.then_some(true),
        (false, _) => Some(enabled && opened),
    }
}

/// Where one request goes, and what comes with that.
pub(super) struct Chosen {
    pub(super) slot: Slot,
    pub(super) endpoint: Endpoint,
    pub(super) stats: std::sync::Arc<SlotStats>,
    /// The sticky cookie to set on the response (during a split).
    pub(super) set_cookie: Option<HeaderValue>,
    /// The service's mirror, if mirroring (normal traffic only).
    pub(super) mirror: Option<std::sync::Arc<Mirror>>,
    /// The deployment's guard, when this normal request goes to its new slot.
    pub(super) guard: Option<std::sync::Arc<super::shield::Guard>>,
    /// The slot serves TLS (general path only).
    pub(super) tls: Option<std::sync::Arc<crate::tls::ClientTls>>,
}

impl Chosen {
    /// Plain traffic to `up`: no cookie, no mirror, no guard.
    pub(super) fn plain(up: &Upstream) -> Self {
        Self {
            slot: up.slot,
            endpoint: up.endpoint.clone(),
            stats: up.stats.clone(),
            set_cookie: None,
            mirror: None,
            guard: None,
            tls: up.tls.clone(),
        }
    }
}

/// The response for a request the upstream client could not complete.
pub(super) fn failed(e: SendError, slot: Slot, recorder: Recorder) -> Response<ProxyBody> {
    if let Some(client) = ClientBodyError::find(e.as_error()) {
        recorder.finish(Outcome::ClientFailed);
        return match client {
            ClientBodyError::TooLarge { .. } => {
                local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            }
            ClientBodyError::Read(_) => local(StatusCode::BAD_REQUEST, "bad request body\n"),
            ClientBodyError::TimedOut { .. } => {
                local(StatusCode::REQUEST_TIMEOUT, "request body timed out\n")
            }
        };
    }
    tracing::debug!(%slot, error = ?e, "upstream request failed");
    if e.is_connect() && super::exhausted(e.as_error()) {
        recorder.finish(Outcome::Overloaded);
        let mut resp = local(StatusCode::SERVICE_UNAVAILABLE, "proxy overloaded\n");
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return with_slot(resp, slot);
    }
    recorder.finish(Outcome::UpstreamFailed);
    let msg = if e.is_connect() {
        "upstream unreachable\n"
    } else {
        "upstream failed\n"
    };
    with_slot(local(StatusCode::BAD_GATEWAY, msg), slot)
}

/// The request checks of RFC 9110/9112 that hyper leaves to the application, before
/// anything else happens (pingora's `validate_request`): one rule, one citation.
/// Leaves exactly one valid `Host`, the absolute-form target's when there is one.
/// A refusal closes the connection: a client that sends this may frame the rest
/// differently than we read it.
fn check_request<B>(req: &mut Request<B>, allow_connect: bool) -> Result<(), Refusal> {
    const BAD_TARGET: Refusal = (StatusCode::BAD_REQUEST, "bad request target\n");
    // RFC 9110 §9.3.6: CONNECT asks for a tunnel to another host; a reverse proxy in
    // front of an app has none to offer, unless told to pass it on to the app.
    let connect = req.method() == Method::CONNECT;
    if connect && !allow_connect {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not allowed\n"));
    }
    // RFC 9112 §3.2: origin-form, absolute-form, or `*` for OPTIONS; authority-form
    // for CONNECT and only for it. `GET noslash` is none of them.
    let uri = req.uri();
    if connect {
        let authority_form = uri.scheme().is_none()
            && uri
                .path_and_query()
                .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
            && uri
                .authority()
                .is_some_and(|a| a.port().is_some() && headers::valid_host(a.as_str().as_bytes()));
        return match req.headers().get_all(HOST).iter().count() {
            _ if !authority_form => Err(BAD_TARGET),
            1 if req
                .headers()
                .get(HOST)
                .is_some_and(|h| headers::valid_host(h.as_bytes())) =>
            {
                Ok(())
            }
            _ => Err((StatusCode::BAD_REQUEST, "missing or invalid Host header\n")),
        };
    }
    let absolute = match (uri.scheme_str(), uri.authority()) {
        (None, None) if uri.path().starts_with('/') => None,
        (None, None) if uri.path() == "*" && req.method() == Method::OPTIONS => None,
        (Some("http" | "https"), Some(authority)) => Some(authority.clone()),
        _ => return Err(BAD_TARGET),
    };
    // RFC 9112 §3.2: 400 for a request with more than one Host, or with an invalid
    // one, and for an HTTP/1.1 request without one. An HTTP/1.0 request without Host
    // is refused too: the upstream would otherwise see the slot's own address.
    if req.headers().get_all(HOST).iter().count() > 1 {
        return Err((StatusCode::BAD_REQUEST, "more than one Host header\n"));
    }
    match absolute {
        // RFC 9112 §3.2.2: an absolute-form target's authority replaces Host.
        // RFC 9110 §4.2.4: userinfo in an http(s) URI is refused.
        Some(authority) => {
            let text = authority.as_str();
            if text.contains('@') || !headers::valid_host(text.as_bytes()) {
                return Err(BAD_TARGET);
            }
            let value = HeaderValue::from_str(text).map_err(|_| BAD_TARGET)?;
            req.headers_mut().insert(HOST, value);
        }
        None => match req.headers().get(HOST) {
            None => return Err((StatusCode::BAD_REQUEST, "missing Host header\n")),
            Some(h) if !headers::valid_host(h.as_bytes()) => {
                return Err((StatusCode::BAD_REQUEST, "invalid Host header\n"));
            }
            Some(_) => {}
        },
    }
    Ok(())
}

/// A request refused before routing: the status and the body.
type Refusal = (StatusCode, &'static str);

/// The answer to a refused request; the connection closes after it.
fn refused((status, msg): Refusal) -> Response<ProxyBody> {
    let mut resp = local(status, msg);
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
    }
    resp
}

pub(super) fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A short plain-text response written by the proxy itself.
pub(super) fn local(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(Bytes::from_static(msg.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(super) fn with_slot(mut resp: Response<ProxyBody>, slot: Slot) -> Response<ProxyBody> {
    resp.headers_mut().insert(X_CUTOVER_SLOT, slot_value(slot));
    resp
}

fn slot_value(slot: Slot) -> HeaderValue {
    HeaderValue::from_static(slot.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_listener_needs_the_secret_only_off_loopback_and_the_header_only_when_enabled() {
        // (preview_only, public, enabled, opened) → route to preview (None: 403).
        let table = [
            ((true, false, false, false), Some(true)),
            ((true, true, false, false), None),
            ((true, true, false, true), Some(true)),
            ((false, false, false, true), Some(false)),
            ((false, true, true, false), Some(false)),
            ((false, true, true, true), Some(true)),
        ];
        for ((only, public, enabled, opened), want) in table {
            assert_eq!(preview_rule(only, public, enabled, opened), want);
        }
    }

    #[test]
    fn request_checks_follow_rfc_9112() {
        let check = |method: &str, target: &str, hosts: &[&str]| {
            let mut b = Request::builder().method(method).uri(target);
            for h in hosts {
                b = b.header(HOST, *h);
            }
            let mut req = b.body(()).unwrap();
            check_request(&mut req, false)
                .map(|()| req.headers()[HOST].to_str().unwrap().to_string())
        };
        assert_eq!(check("GET", "/", &["a.test"]).unwrap(), "a.test");
        assert_eq!(
            check("GET", "http://b.test:81/x", &["a.test"]).unwrap(),
            "b.test:81"
        );
        assert_eq!(check("OPTIONS", "*", &["a.test"]).unwrap(), "a.test");
        assert_eq!(
            check("GET", "/", &["a", "b"]).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            check("GET", "/", &[]).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            check("GET", "*", &["a"]).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            check("GET", "a.test:80", &["a"]).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            check("CONNECT", "a.test:443", &["a"]).unwrap_err().0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
