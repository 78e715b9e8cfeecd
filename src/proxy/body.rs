//! Bodies on both sides of the proxy, and the one place a request gets recorded.
//!
//! Bodies stream frame by frame (nothing is buffered, except the copy of a small body
//! being mirrored). Two wrappers do the bookkeeping:
//! - [`LimitedBody`] (client → upstream) counts bytes and fails the upload once it
//!   passes `max_body_bytes`, for bodies whose size was not announced up front; for a
//!   mirrored request it also copies the body for the mirror ([`LimitedBody::tee`]).
//! - [`ProxyBody`] (upstream → client) owns the request's [`Recorder`] and records the
//!   request when the body ends, fails, or is dropped early, so latency runs from
//!   receipt to the last byte and every request is recorded exactly once.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::stats::{Outcome, OwnedInFlight, SlotStats};

/// Counts one request in flight on its slot and records it exactly once: through
/// [`Recorder::finish`], or as [`Outcome::ClientFailed`] when dropped unfinished (the
/// client went away and hyper dropped the handler or the response body).
#[derive(Debug)]
pub struct Recorder {
    in_flight: Option<OwnedInFlight>,
    received: Instant,
}

impl Recorder {
    pub fn start(stats: &Arc<SlotStats>, received: Instant) -> Self {
        Self {
            in_flight: Some(stats.begin_owned()),
            received,
        }
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        // Record before the in-flight guard drops, so a drain that sees zero in
        // flight also sees every request recorded.
        if let Some(guard) = self.in_flight.take() {
            guard.stats().record(outcome, self.received.elapsed());
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.record(Outcome::ClientFailed);
    }
}

/// Why a client's request body could not be passed on. Found in the upstream client's
/// error chain to tell a client failure from an upstream one.
#[derive(Debug)]
pub enum ClientBodyError {
    /// The body grew past `max_body_bytes` while streaming.
    TooLarge { limit: u64 },
    /// Reading the body from the client failed (disconnect, bad chunk encoding).
    Read(hyper::Error),
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "request body larger than {limit} bytes"),
            Self::Read(_) => f.write_str("reading the request body from the client failed"),
        }
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::TooLarge { .. } => None,
            Self::Read(e) => Some(e),
        }
    }
}

impl ClientBodyError {
    /// The `ClientBodyError` somewhere in `err`'s source chain, if any.
    pub fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a ClientBodyError> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }
}

/// The client's request body on its way upstream, cut off past a byte limit, and
/// optionally copied for a mirrored request ([`Tee`]).
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    /// Boxed: only mirrored requests have one, and the common case stays small.
    tee: Option<Box<Tee>>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            tee: None,
        }
    }

    /// Copies the body, as it streams upstream, into a buffer of up to `cap` bytes that
    /// the returned receiver gets once the body ended. The copy never slows the
    /// upstream: a body that fails or grows past `cap` just drops the sender.
    pub fn tee(&mut self, cap: usize) -> oneshot::Receiver<Bytes> {
        let (tx, rx) = oneshot::channel();
        self.tee = Some(Box::new(Tee {
            buf: BytesMut::new(),
            cap,
            done: Some(tx),
        }));
        rx
    }

    fn tee_frame(&mut self, data: &Bytes) {
        if let Some(tee) = &mut self.tee {
            if tee.buf.len() + data.len() > tee.cap {
                self.tee = None;
            } else {
                tee.buf.extend_from_slice(data);
            }
        }
    }

    fn tee_end(&mut self) {
        if let Some(mut tee) = self.tee.take() {
            if let Some(tx) = tee.done.take() {
                let _ = tx.send(tee.buf.split().freeze());
            }
        }
    }
}

/// The copy of a request body being made for a mirrored request.
#[derive(Debug)]
pub struct Tee {
    buf: BytesMut,
    cap: usize,
    done: Option<oneshot::Sender<Bytes>>,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge {
                            limit: this.limit,
                        })));
                    }
                    this.remaining -= len;
                    if this.tee.is_some() {
                        this.tee_frame(data);
                    }
                }
                // hyper stops polling once `is_end_stream` says so: the copy ends now.
                if this.tee.is_some() && this.inner.is_end_stream() {
                    this.tee_end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.tee = None;
                Poll::Ready(Some(Err(ClientBodyError::Read(e))))
            }
            None => {
                this.tee_end();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Every response the proxy sends: an upstream's streamed body, or a short local one.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Upstream {
        inner: Incoming,
        /// `None` once recorded.
        recorder: Option<Recorder>,
        status: u16,
    },
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// Streams `inner` and records the request with `status` when it ends.
    pub fn upstream(inner: Incoming, recorder: Recorder, status: u16) -> Self {
        Self {
            kind: Kind::Upstream {
                inner,
                recorder: Some(recorder),
                status,
            },
        }
    }

    /// A body the proxy wrote itself (errors, 101).
    pub fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local((!bytes.is_empty()).then_some(bytes)),
        }
    }

    pub fn empty() -> Self {
        Self::local(Bytes::new())
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                inner,
                recorder,
                status,
            } => {
                let polled = ready!(Pin::new(&mut *inner).poll_frame(cx));
                let outcome = match &polled {
                    // hyper stops polling once `is_end_stream` says so: record now.
                    Some(Ok(_)) if inner.is_end_stream() => Some(Outcome::Status(*status)),
                    Some(Ok(_)) => None,
                    Some(Err(_)) => Some(Outcome::UpstreamFailed),
                    None => Some(Outcome::Status(*status)),
                };
                if let (Some(outcome), Some(r)) = (outcome, recorder.take()) {
                    r.finish(outcome);
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len()) as u64)
            }
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Upstream {
            inner,
            recorder,
            status,
        } = &mut self.kind
        {
            if let Some(r) = recorder.take() {
                // An empty body (204, HEAD, `Content-Length: 0`) is never polled: it
                // finished. Anything else dropped early means the client left.
                let outcome = if inner.is_end_stream() {
                    Outcome::Status(*status)
                } else {
                    Outcome::ClientFailed
                };
                r.finish(outcome);
            }
        }
    }
}
