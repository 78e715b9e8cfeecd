//! The general path's send for a request to a guarded new slot (see `shield`): the
//! body, if small, is received in full first so it can be sent twice; a retry-safe
//! failure is recorded against the new slot (its counters and its burst trigger) and
//! the request goes once more, to the previous slot, whose answer the client gets.
//!
//! Retry-safe means: the new slot could not be connected to (nothing was sent; any
//! method), or it answered an idempotent request with a configured status (502, 503,
//! 504 by default; opt-in). Nothing is retried once a byte of the response went to the
//! client: the decision is made on the response head, before anything is written.
//! A client's fault (a broken, oversized or stalled body) is answered as on the plain
//! path and recorded as the client's, never retried.
//!
//! The fast path serves guarded requests itself, retrying a refused connection the
//! same way (`h1::Conn::forward`), and hands this path those the shield might retry
//! after a status (`h1::fast_guard`), so both paths answer, retry and record alike.
//! Each attempt goes through its slot's pool: a slot that serves TLS (`upstream_tls`)
//! is retried on over TLS too.

use std::sync::Arc;
use std::time::Instant;

use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{upstream_wait, ClientBodyError, LimitedBody, ProxyBody, Recorder};
use super::forward::local;
use super::shield::{Guard, RetryKind};
use super::stats::Outcome;
use super::tls_upstream::UpstreamPool;
use super::Proxy;
use crate::domain::Slot;

/// What the upstream client answered (`None`: no head within `upstream_timeout`).
type Sent = Option<Result<Response<Incoming>, hyper_util::client::legacy::Error>>;

impl Proxy {
    /// Sends a guarded request; returns what was sent last, the slot it went to and
    /// the recorder of that attempt (or the answer to a client's fault).
    pub(super) async fn send_shielded(
        &self,
        guard: Arc<Guard>,
        pool: &UpstreamPool<'_>,
        parts: http::request::Parts,
        body: LimitedBody,
        (slot, recorder, received): (Slot, Recorder, Instant),
    ) -> Result<(Sent, Slot, Recorder), Response<ProxyBody>> {
        let timeout = self.settings.upstream_timeout;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let small = http_body::Body::is_end_stream(&body)
            || declared.is_some_and(|len| len <= guard.max_body());
        if !small {
            // A streamed or large body is sent once, as on the plain path.
            let mut body = body;
            let watch = body.watch(received);
            let sent = upstream_wait(
                pool.request(Request::from_parts(parts, body)),
                timeout,
                received,
                Some(&watch),
            )
            .await;
            return Ok((sent, slot, recorder));
        }
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                recorder.finish(Outcome::ClientFailed);
                return Err(client_fault(&e));
            }
        };
        let (method, original, headers) = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        );
        let first = Request::from_parts(parts, LimitedBody::full(bytes.clone()));
        let sent = upstream_wait(pool.request(first), timeout, received, None).await;
        let kind = match &sent {
            // Out of our own descriptors, the previous slot could not be reached either.
            Some(Err(e)) if e.is_connect() && !super::exhausted(e) => Some(RetryKind::Connect),
            Some(Ok(resp))
                if guard.retry_status(resp.status()) && guard.status_retry_possible(&method) =>
            {
                Some(RetryKind::Status)
            }
            _ => None,
        };
        if kind.is_none() {
            return Ok((sent, slot, recorder));
        }
        let previous = &guard.previous;
        // The previous slot's pool (TLS when it serves TLS, as both slots of a service
        // do); when its trust cannot be built there is nothing to retry on.
        let retry_pool = match self.pool(previous.tls.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(slot = %previous.slot, "shield: no retry, TLS upstream: {e}");
                return Ok((sent, slot, recorder));
            }
        };
        let Some(kind) = kind.filter(|&k| guard.take_retry(k)) else {
            return Ok((sent, slot, recorder));
        };
        // The failure counts against the new release, like any other.
        match &sent {
            Some(Ok(resp)) => recorder.finish(Outcome::Status(resp.status().as_u16())),
            _ => recorder.finish(Outcome::UpstreamFailed),
        }
        drop(sent);
        tracing::debug!(from = %slot, to = %previous.slot, kind = kind.as_str(), "shield: retrying on the previous release");
        let tls = previous.tls.is_some();
        let Some(uri) = self.upstream_uri(&previous.endpoint, &original, false, tls) else {
            return Err(local(StatusCode::BAD_REQUEST, "bad request target\n"));
        };
        let recorder = Recorder::start(&previous.stats, received);
        let mut retry = Request::new(LimitedBody::full(bytes));
        *retry.method_mut() = method;
        *retry.uri_mut() = uri;
        *retry.version_mut() = Version::HTTP_11;
        *retry.headers_mut() = headers;
        let sent = upstream_wait(retry_pool.request(retry), timeout, received, None).await;
        Ok((sent, previous.slot, recorder))
    }
}

/// The answer to a body the client broke while it was being received (as `failed`).
fn client_fault(e: &ClientBodyError) -> Response<ProxyBody> {
    match e {
        ClientBodyError::TooLarge { .. } => {
            local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
        }
        ClientBodyError::Read(_) => local(StatusCode::BAD_REQUEST, "bad request body\n"),
        ClientBodyError::TimedOut { .. } => {
            local(StatusCode::REQUEST_TIMEOUT, "request body timed out\n")
        }
    }
}
