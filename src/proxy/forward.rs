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
//! - the client left before the end of the response → `ClientFailed`.

use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, SET_COOKIE};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::body::{ClientBodyError, LimitedBody, ProxyBody, Recorder};
use super::conn::ListenerCtx;
use super::headers::{self, X_CUTOVER_SLOT};
use super::mirror::{self, Mirror};
use super::stats::{Outcome, SlotStats};
use super::upstream::Upstream;
use super::{cookies, Proxy};
use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

impl Proxy {
    /// Serves one request received on a listener (the hyper service body).
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        listener: &std::sync::Arc<ListenerCtx>,
        client_ip: &HeaderValue,
    ) -> Response<ProxyBody> {
        let received = Instant::now();
        let limit = self.settings.max_body_bytes;
        if declared_length(&req).is_some_and(|len| len > limit) {
            return local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }

        // An absolute-form target's host wins over `Host` (RFC 9112 §3.2.2).
        let host = req
            .uri()
            .host()
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
        let Some(service) = listener.routes.service_for(host) else {
            return local(StatusCode::NOT_FOUND, "no service for host\n");
        };
        let cookies = cookies::scan(req.headers(), &self.settings.preview_cookie, service);
        let preview = listener.routes.preview_only
            || cookies.preview
            || req.headers().contains_key(&self.settings.preview_header);
        let chosen = match self.choose(service, preview, cookies.sticky) {
            Ok(chosen) => chosen,
            Err(msg) => return local(StatusCode::SERVICE_UNAVAILABLE, msg),
        };
        let slot = chosen.slot;
        let Some(uri) = self.upstream_uri(&chosen.endpoint, req.uri()) else {
            return local(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        let recorder = Recorder::start(&chosen.stats, received);

        let upgrade = headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if preview {
            parts.headers.remove(&self.settings.preview_header);
        }
        if cookies.ours {
            cookies::strip(&mut parts.headers, &self.settings.preview_cookie);
        }
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::add_forwarded(&mut parts.headers, client_ip);
        parts.uri = uri;
        // HTTP/1.1 upstream whatever the client spoke, so upstream connections pool.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let mut body = LimitedBody::new(body, limit);
        let mirrored = match &chosen.mirror {
            Some(m) if !upgrade => mirror::start(
                m,
                &self.mirror_client,
                &parts,
                &mut body,
                self.settings.upstream_timeout,
            ),
            _ => None,
        };
        let upstream_req = Request::from_parts(parts, body);

        let sent = tokio::time::timeout(
            self.settings.upstream_timeout,
            self.client.request(upstream_req),
        )
        .await;
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let resp = failed(e, slot, recorder);
                // A client failure (413/400) is not the upstream's answer: not compared.
                if let Some(m) = mirrored.filter(|_| resp.status().is_server_error()) {
                    m.answered(resp.status().as_u16(), received.elapsed());
                }
                return resp;
            }
            Err(_elapsed) => {
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
        headers::strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.insert(X_CUTOVER_SLOT, slot_value(slot));
        if let Some(cookie) = chosen.set_cookie {
            parts.headers.append(SET_COOKIE, cookie);
        }
        Response::from_parts(parts, ProxyBody::upstream(body, recorder, status.as_u16()))
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
        Ok(Chosen {
            set_cookie: set_cookie.cloned(),
            mirror: entry.mirror.clone(),
            ..Chosen::plain(up)
        })
    }

    /// `http://<upstream>/<original path and query>`; the client sends it origin-form.
    /// A host name in the authority is resolved by the client's connector when it opens
    /// a connection (pooled connections are reused without a lookup).
    fn upstream_uri(&self, endpoint: &Endpoint, original: &Uri) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
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

/// Where one request goes, and what comes with that.
pub(super) struct Chosen {
    pub(super) slot: Slot,
    pub(super) endpoint: Endpoint,
    pub(super) stats: std::sync::Arc<SlotStats>,
    /// The sticky cookie to set on the response (during a split).
    pub(super) set_cookie: Option<HeaderValue>,
    /// The service's mirror, if mirroring (normal traffic only).
    pub(super) mirror: Option<std::sync::Arc<Mirror>>,
}

impl Chosen {
    fn plain(up: &Upstream) -> Self {
        Self {
            slot: up.slot,
            endpoint: up.endpoint.clone(),
            stats: up.stats.clone(),
            set_cookie: None,
            mirror: None,
        }
    }
}

/// The response for a request the upstream client could not complete.
fn failed(
    e: hyper_util::client::legacy::Error,
    slot: Slot,
    recorder: Recorder,
) -> Response<ProxyBody> {
    if let Some(client) = ClientBodyError::find(&e) {
        recorder.finish(Outcome::ClientFailed);
        return match client {
            ClientBodyError::TooLarge { .. } => {
                local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            }
            ClientBodyError::Read(_) => local(StatusCode::BAD_REQUEST, "bad request body\n"),
        };
    }
    tracing::debug!(%slot, error = ?e, "upstream request failed");
    recorder.finish(Outcome::UpstreamFailed);
    let msg = if e.is_connect() {
        "upstream unreachable\n"
    } else {
        "upstream failed\n"
    };
    with_slot(local(StatusCode::BAD_GATEWAY, msg), slot)
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A short plain-text response written by the proxy itself.
fn local(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(Bytes::from_static(msg.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn with_slot(mut resp: Response<ProxyBody>, slot: Slot) -> Response<ProxyBody> {
    resp.headers_mut().insert(X_CUTOVER_SLOT, slot_value(slot));
    resp
}

fn slot_value(slot: Slot) -> HeaderValue {
    HeaderValue::from_static(slot.as_str())
}
