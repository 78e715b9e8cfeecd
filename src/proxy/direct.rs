//! HTTP/2 streams without a body, sent upstream through the fast path's HTTP/1.1 code
//! (`h1::exchange`) instead of hyper's pooled client: what `forward` does with them
//! once the request is checked, routed and rewritten.
//!
//! Why a path of its own: it is where HTTP/2 clients' requests spend a third of their
//! instructions (`h1::exchange` says where), and nearly every request a browser sends
//! over HTTP/2 qualifies. The answer, the recording and the shield are the general
//! path's: 502 for a connection that fails before a response head, 504 at
//! `upstream_timeout`, the response's hop-by-hop headers removed and the slot header
//! and sticky cookie added, the request recorded once through its [`Recorder`] when its
//! body ends. To a guarded new slot, a refused connection (nothing was sent) is retried
//! once on the previous slot within the shield's budget and counts against the new
//! release, as on the other paths. `forward` decides which requests come here: to a
//! plain-HTTP slot, and to a guarded new slot not those the shield might retry after a
//! status (that holds the response head back and may send the request twice:
//! `send_shielded`).

use std::time::{Duration, Instant};

use http::header::SET_COOKIE;
use http::{HeaderValue, Response, StatusCode};

use super::affine::SendError;
use super::body::{upstream_wait, ProxyBody, Recorder, UpstreamBody};
use super::forward::{failed, local, with_slot, Chosen};
use super::h1::exchange::{self, ExchangeError, Exchanged};
use super::headers::{self, X_CUTOVER_SLOT};
use super::shield::RetryKind;
use super::stats::Outcome;
use super::Proxy;
use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

impl Proxy {
    /// Sends `parts` (rewritten for the upstream) to `chosen`'s slot and answers.
    pub(super) async fn forward_direct(
        &self,
        parts: http::request::Parts,
        chosen: Chosen,
        recorder: Recorder,
        received: Instant,
    ) -> Response<ProxyBody> {
        let timeout = self.settings.upstream_timeout;
        let mut slot = chosen.slot;
        let mut recorder = recorder;
        let mut sent = send(&parts, &chosen.endpoint, timeout, received).await;
        if let (Some(Err(e)), Some(guard)) = (&sent, &chosen.guard) {
            let previous = &guard.previous;
            // Out of our own descriptors, the previous slot could not be reached either.
            if e.is_connect()
                && !super::exhausted(e)
                && previous.tls.is_none()
                && guard.take_retry(RetryKind::Connect)
            {
                tracing::debug!(from = %slot, to = %previous.slot, kind = RetryKind::Connect.as_str(), "shield: retrying on the previous release");
                recorder.finish(Outcome::UpstreamFailed);
                recorder = Recorder::start(&previous.stats, received);
                slot = previous.slot;
                sent = send(&parts, &previous.endpoint, timeout, received).await;
            }
        }
        match sent {
            Some(Ok(exchanged)) => respond(exchanged, slot, &chosen, recorder),
            Some(Err(e)) => failed(SendError::Direct(e), slot, recorder),
            None => {
                tracing::debug!(%slot, "upstream sent no response headers in time");
                recorder.finish(Outcome::UpstreamFailed);
                with_slot(
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
                    slot,
                )
            }
        }
    }
}

/// One attempt, within `upstream_timeout` (`None`: no response head in time).
async fn send(
    parts: &http::request::Parts,
    endpoint: &Endpoint,
    timeout: Duration,
    received: Instant,
) -> Option<Result<Exchanged, ExchangeError>> {
    upstream_wait(exchange::send(endpoint, parts), timeout, received, None).await
}

/// The client's response, as `forward` makes it from a pooled client's.
fn respond(
    exchanged: Exchanged,
    slot: Slot,
    chosen: &Chosen,
    recorder: Recorder,
) -> Response<ProxyBody> {
    let Exchanged {
        status,
        mut headers,
        body,
    } = exchanged;
    headers::strip_hop_by_hop(&mut headers, false);
    headers.insert(X_CUTOVER_SLOT, HeaderValue::from_static(slot.as_str()));
    // A retried request was answered by the previous slot: no cookie for the new.
    if let Some(cookie) = chosen.set_cookie.clone().filter(|_| slot == chosen.slot) {
        headers.append(SET_COOKIE, cookie);
    }
    let body = ProxyBody::upstream(UpstreamBody::Direct(body), recorder, status.as_u16(), None);
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
