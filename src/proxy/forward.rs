//! One client request → one upstream, and what the client sees when that fails.
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
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::body::{ClientBodyError, LimitedBody, ProxyBody, Recorder};
use super::headers::{self, X_CUTOVER_SLOT};
use super::server::ListenerCtx;
use super::stats::Outcome;
use super::Proxy;
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

        // Route: one snapshot load; keep only what we need, release the snapshot.
        let preview = listener.routes.preview_only
            || req.headers().contains_key(&self.settings.preview_header);
        let (slot, addr, stats) = {
            // An absolute-form target's host wins over `Host` (RFC 9112 §3.2.2).
            let host = req
                .uri()
                .host()
                .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
            let Some(service) = listener.routes.service_for(host) else {
                return local(StatusCode::NOT_FOUND, "no service for host\n");
            };
            let snapshot = self.routes.load();
            let route = snapshot.service(service);
            let upstream = if preview {
                route.and_then(|r| r.preview.as_ref())
            } else {
                route.and_then(|r| r.live.as_ref())
            };
            match upstream {
                Some(u) => (u.slot, u.addr, u.stats.clone()),
                None if preview => {
                    return local(StatusCode::SERVICE_UNAVAILABLE, "no preview slot\n")
                }
                None => return local(StatusCode::SERVICE_UNAVAILABLE, "no live slot\n"),
            }
        };
        let Some(uri) = self.upstream_uri(addr, req.uri()) else {
            return local(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        let recorder = Recorder::start(&stats, received);

        let upgrade = headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if preview {
            parts.headers.remove(&self.settings.preview_header);
        }
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::add_forwarded(&mut parts.headers, client_ip);
        parts.uri = uri;
        // HTTP/1.1 upstream whatever the client spoke, so upstream connections pool.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let upstream_req = Request::from_parts(parts, LimitedBody::new(body, limit));

        let sent = tokio::time::timeout(
            self.settings.upstream_timeout,
            self.client.request(upstream_req),
        )
        .await;
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return failed(e, slot, recorder),
            Err(_elapsed) => {
                tracing::debug!(%slot, %addr, "upstream sent no response headers in time");
                recorder.finish(Outcome::UpstreamFailed);
                return with_slot(
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
                    slot,
                );
            }
        };

        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                tracing::debug!(%slot, %addr, "upstream switched protocols unasked");
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
        Response::from_parts(parts, ProxyBody::upstream(body, recorder, status.as_u16()))
    }

    /// `http://<upstream>/<original path and query>`; the client sends it origin-form.
    fn upstream_uri(&self, addr: std::net::SocketAddr, original: &Uri) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority(addr));
        parts.path_and_query = Some(
            original
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).ok()
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
