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

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::stats::{Outcome, OwnedInFlight, SlotStats};

/// Counts one request in flight on its slot and records it exactly once: through
/// [`Recorder::finish`], or as [`Outcome::ClientFailed`] when dropped unfinished (the
/// client went away and hyper dropped the handler or the response body).
#[derive(Debug)]
pub struct Recorder {
    in_flight: Option<OwnedInFlight>,
    received: Instant,
    /// The deployment's guard, told the outcome (requests to a guarded new slot).
    guard: Option<Arc<super::shield::Guard>>,
}

impl Recorder {
    pub fn start(stats: &Arc<SlotStats>, received: Instant) -> Self {
        Self {
            in_flight: Some(stats.begin_owned()),
            received,
            guard: None,
        }
    }

    /// Also tells `guard` how the request ended (its burst trigger).
    pub fn guarded(mut self, guard: Arc<super::shield::Guard>) -> Self {
        self.guard = Some(guard);
        self
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        // Record before the in-flight guard drops, so a drain that sees zero in
        // flight also sees every request recorded.
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.stats().record(outcome, self.received.elapsed());
            drop(in_flight);
            if let Some(guard) = self.guard.take() {
                guard.observe(outcome);
            }
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
    /// The client sent nothing for `client_body_timeout`.
    TimedOut { after: Duration },
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "request body larger than {limit} bytes"),
            Self::Read(_) => f.write_str("reading the request body from the client failed"),
            Self::TimedOut { after } => {
                write!(f, "the client sent no request body bytes for {after:?}")
            }
        }
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::TooLarge { .. } | Self::TimedOut { .. } => None,
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

/// What a request body is doing, shared by the body (which writes it) with the
/// request's upstream timer and its response body (which read it), so that a slow or
/// failed client is never taken for a failing upstream.
#[derive(Debug)]
pub struct BodyWatch {
    received: Instant,
    /// Milliseconds after `received` of the last progress (a frame read, or the end).
    last_ms: AtomicU64,
    /// The body is waiting for the client right now (not for the upstream to take more).
    waiting_on_client: AtomicBool,
    /// The body failed because of the client (too large, broken, timed out).
    client_failed: AtomicBool,
}

impl BodyWatch {
    fn new(received: Instant) -> Self {
        Self {
            received,
            last_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            client_failed: AtomicBool::new(false),
        }
    }

    fn progress(&self) {
        let ms = u64::try_from(self.received.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }

    /// When the upstream's time runs out, measured from the last progress of the body.
    pub fn upstream_until(&self, timeout: Duration) -> Instant {
        if self.waiting_on_client.load(Ordering::Relaxed) {
            // The client's own timer (`client_body_timeout`) decides this wait.
            return Instant::now() + timeout;
        }
        self.received + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
    }

    /// The client broke the request (its body failed).
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }
}

/// Waits for `fut` (the upstream's answer) at most `timeout` past the later of
/// `received` and the request body's last progress, and not at all while the body is
/// waiting on the client (its own timer bounds that). `None` when time ran out.
pub async fn upstream_wait<F: Future>(
    fut: F,
    timeout: Duration,
    received: Instant,
    watch: Option<&BodyWatch>,
) -> Option<F::Output> {
    tokio::pin!(fut);
    let mut until = received + timeout;
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            () = tokio::time::sleep_until(until.into()) => {}
        }
        let next = watch?.upstream_until(timeout);
        if next <= Instant::now() {
            return None;
        }
        until = next;
    }
}

/// The client's request body on its way upstream, cut off past a byte limit or after
/// `client_body_timeout` without a byte, and optionally copied for a mirrored request
/// ([`Tee`]).
#[derive(Debug)]
pub struct LimitedBody {
    inner: Source,
    remaining: u64,
    limit: u64,
    /// Boxed: only mirrored requests have one, and the common case stays small.
    tee: Option<Box<Tee>>,
    timeout: Duration,
    /// Armed the first time the client keeps us waiting.
    sleep: Option<Pin<Box<Sleep>>>,
    watch: Option<Arc<BodyWatch>>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64, timeout: Duration) -> Self {
        Self {
            inner: Source::Incoming(inner),
            remaining: limit,
            limit,
            tee: None,
            timeout,
            sleep: None,
            watch: None,
        }
    }

    /// A body already received in full (kept for a retry on another slot).
    pub fn full(bytes: Bytes) -> Self {
        Self {
            inner: Source::Full((!bytes.is_empty()).then_some(bytes)),
            remaining: u64::MAX,
            limit: u64::MAX,
            tee: None,
            timeout: Duration::MAX,
            sleep: None,
            watch: None,
        }
    }

    /// The body's shared state, for the upstream timer and the response body; created
    /// on first use (a body-less request never needs one).
    pub fn watch(&mut self, received: Instant) -> Arc<BodyWatch> {
        self.watch
            .get_or_insert_with(|| Arc::new(BodyWatch::new(received)))
            .clone()
    }

    fn client_error(&mut self, e: ClientBodyError) -> ClientBodyError {
        self.tee = None;
        if let Some(w) = &self.watch {
            w.client_failed.store(true, Ordering::Relaxed);
        }
        e
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
        let inner = match &mut this.inner {
            Source::Incoming(inner) => inner,
            Source::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        let polled = match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if let Some(w) = &this.watch {
                    w.waiting_on_client.store(true, Ordering::Relaxed);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    let e = this.client_error(ClientBodyError::TimedOut { after: timeout });
                    return Poll::Ready(Some(Err(e)));
                }
                return Poll::Pending;
            }
            Poll::Ready(polled) => polled,
        };
        if let Some(sleep) = &mut this.sleep {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + this.timeout);
        }
        if let Some(w) = &this.watch {
            w.progress();
        }
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        let e = this.client_error(ClientBodyError::TooLarge { limit: this.limit });
                        return Poll::Ready(Some(Err(e)));
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
            Some(Err(e)) => Poll::Ready(Some(Err(this.client_error(ClientBodyError::Read(e))))),
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
        match &self.inner {
            Source::Incoming(inner) => inner.size_hint(),
            Source::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Where a [`LimitedBody`]'s bytes come from.
#[derive(Debug)]
enum Source {
    Incoming(Incoming),
    Full(Option<Bytes>),
}

impl Source {
    fn is_end_stream(&self) -> bool {
        match self {
            Source::Incoming(inner) => inner.is_end_stream(),
            Source::Full(b) => b.is_none(),
        }
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
        inner: UpstreamBody,
        /// `None` once recorded.
        recorder: Option<Recorder>,
        status: u16,
        /// The request body's state: a response cut off because the client's body
        /// failed is the client's failure.
        watch: Option<Arc<BodyWatch>>,
    },
    Local(Option<Bytes>),
}

/// An upstream's response body: from hyper's client, or read by the stream's own task
/// (`h1::exchange`, HTTP/2 streams).
#[derive(Debug)]
pub enum UpstreamBody {
    Hyper(Incoming),
    Direct(super::h1::exchange::DirectBody),
}

impl From<Incoming> for UpstreamBody {
    fn from(b: Incoming) -> Self {
        UpstreamBody::Hyper(b)
    }
}

/// The error a response body ends with (hyper's or the connection's).
pub type BodyError = Box<dyn StdError + Send + Sync>;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Direct(b) => b.size_hint(),
        }
    }
}

impl ProxyBody {
    /// Streams `inner` and records the request with `status` when it ends.
    pub fn upstream(
        inner: impl Into<UpstreamBody>,
        recorder: Recorder,
        status: u16,
        watch: Option<Arc<BodyWatch>>,
    ) -> Self {
        Self {
            kind: Kind::Upstream {
                inner: inner.into(),
                recorder: Some(recorder),
                status,
                watch,
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                inner,
                recorder,
                status,
                watch,
            } => {
                let polled = ready!(Pin::new(&mut *inner).poll_frame(cx));
                let outcome = match &polled {
                    // hyper stops polling once `is_end_stream` says so, and after
                    // trailers, which always end a body: record now.
                    Some(Ok(f)) if f.is_trailers() || inner.is_end_stream() => {
                        Some(Outcome::Status(*status))
                    }
                    Some(Ok(_)) => None,
                    Some(Err(_)) if watch.as_ref().is_some_and(|w| w.client_failed()) => {
                        Some(Outcome::ClientFailed)
                    }
                    Some(Err(_)) => Some(Outcome::UpstreamFailed),
                    None => Some(Outcome::Status(*status)),
                };
                // Only once the outcome is known: a recorder taken and dropped before
                // then would record the request as the client's failure at its first
                // frame (every response longer than one frame was, until this was seen).
                if let Some(outcome) = outcome {
                    if let Some(r) = recorder.take() {
                        r.finish(outcome);
                    }
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
            ..
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
