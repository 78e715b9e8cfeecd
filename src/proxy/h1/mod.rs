//! The fast path: a hand-written HTTP/1.1 forwarder for the common request.
//!
//! Why it exists: the benchmark (BENCHMARKS.md) showed the general path (hyper server
//! → hyper-util pooled client → hyper) spending its time in per-request machinery that
//! a proxy does not need: a `Request` with a parsed `HeaderMap` built and re-encoded on
//! each side, a pool checkout, a channel hop to the client connection's own task, a
//! boxed future and a timer per request. Here one task per client connection reads a
//! head, writes the rewritten head to an upstream connection that this client
//! connection owns (connection-affine: no pool, no lock, no second task), and passes
//! the response through with its framing checked but its body untouched. Small
//! responses leave in one write.
//!
//! What it takes: see `request` (HTTP/1.1, origin-form, a `Content-Length` body up to
//! [`FAST_BODY_MAX`], no upgrade, no `Expect`, no `Transfer-Encoding`). What it leaves
//! to the general path: requests to a service that is mirroring or to a slot that
//! serves TLS; requests to a deployment's guarded new slot (`shield`) with a body, or
//! that the shield might retry after a status (an idempotent method with `on_status`
//! on: that needs the response head held back and the request sent twice; see
//! [`fast_guard`]); anything routed to a local answer (404, 503). Everything else is handed, with the bytes already read,
//! to the general path for the rest of the connection ([`End::General`], [`Rewind`]),
//! which answers exactly as before.
//!
//! Guarded requests (a previous release runs beside the new one: canary steps, the
//! watch, `warm_for`) stay here otherwise, and are recorded through the guard (its
//! budget and burst trigger) as on the general path. A connection the new slot
//! refuses is the shield's other retry (nothing was sent; any method): within the
//! budget the request goes once more to the previous slot, whose answer the client
//! gets, and the refusal counts against the new release ([`Conn::forward`]). Why
//! here and not only on the general path: with `warm_for` (5 minutes by default) every
//! request after a deployment is guarded, and the general path costs about 2.5 times
//! the user-space CPU per request (BENCHMARKS.md "The warm period took the general path").
//! Both paths choose the upstream the same way ([`Proxy::choose`]) and record each
//! request exactly once through the same [`Recorder`].
//!
//! Failure mapping is the general path's: connect refused, reset, EOF or garbage
//! before a response head → 502 and `UpstreamFailed`; no response head within
//! `upstream_timeout` → 504 and `UpstreamFailed`; a client that vanishes →
//! `ClientFailed`. A reused upstream connection that turns out closed before answering
//! a `GET`/`HEAD`/`OPTIONS` without body is retried once on a new connection.
//! `CUTOVER_PROXY_FAST_PATH=0` turns the fast path off (everything takes the general
//! path), for comparison and as a safety valve.

pub(super) mod chunked;
pub(super) mod exchange;
mod gate;
mod io;
pub(super) mod pool;
pub(super) mod request;
pub(super) mod response;
pub(super) mod spare;
pub(super) mod wire;

use std::task::Poll;
use std::time::Instant as StdInstant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(super) use io::connect as connect_upstream;
pub(crate) use io::Rewind;

use super::body::Recorder;
use super::conn::{ConnState, ListenerCtx};
use super::forward::Chosen;
use super::shield::RetryKind;
use super::stats::Outcome;
use super::{cookies, Proxy};
use crate::domain::endpoint::Endpoint;
use chunked::ChunkedEnd;
use gate::Gated;
use io::{Deadline, Upstreams, IDLE_RELEASE};
use request::Parse;
use response::{Additions, Framing, RespHead, RespParse};

/// Largest request body the fast path forwards; larger bodies take the general path,
/// which streams both directions at once (an upstream may answer before reading it).
pub const FAST_BODY_MAX: u64 = 64 * 1024;
/// Bytes read at a time while passing a body on.
const READ_CHUNK: usize = 16 * 1024;
/// Room made for a head (most are well under 1 KiB; a larger one grows the buffer).
/// Smaller than [`READ_CHUNK`] so that a burst of new connections costs less memory.
const HEAD_CHUNK: usize = pool::READ_BUF;
/// A request or response head larger than this is not the fast path's business.
const MAX_HEAD: usize = 64 * 1024;

/// How the fast path left a client connection.
pub(crate) enum End<S> {
    Closed,
    /// The general path takes over; `Bytes` were read from the client and not used.
    General(S, Bytes),
    /// Nothing buffered, nothing held and no request for [`IDLE_RELEASE`] (plain TCP
    /// only): the caller parks the connection without a task (`proxy/idle.rs`) until
    /// its socket is readable, then serves it again. The `Instant` is the request head's
    /// deadline (`header_read_timeout` after the last response), which still holds.
    Idle(S, Instant),
}

/// A request the fast path is forwarding: where to, and what is left to do.
struct Plan {
    chosen: Chosen,
    received: StdInstant,
    /// Body bytes still to read from the client (the rest is already in `out`).
    body_left: u64,
    head_request: bool,
    retryable: bool,
    /// The client connection ends after this response.
    close: bool,
    had_body: bool,
    /// Add `x-cutover-slot` to the response.
    slot_header: bool,
}

/// Why a request got no upstream response head.
enum Fail {
    Connect,
    /// The connect failed for want of Cutover's own descriptors (EMFILE, ENFILE): 503,
    /// [`Outcome::Overloaded`], never the release's failure nor a shield retry.
    Exhausted,
    /// Write/read error, EOF or an unusable response.
    Upstream,
    /// A reused connection failed before any response byte: maybe closed while idle.
    Stale,
    /// The client went away mid-request.
    Client,
    /// The client sent no body bytes for `client_body_timeout`: its fault, 408.
    ClientTimeout,
    /// No response head within `upstream_timeout`.
    Timeout,
}

/// Why a response could not be passed on completely.
enum Broke {
    Upstream,
    Client,
}

/// A client connection's buffers and upstream connections. While a plaintext
/// connection waits for a request head with nothing buffered, its buffers are back in
/// the thread's spares (`pool`) and it holds none; after [`IDLE_RELEASE`] it closes its
/// upstream connections and leaves [`serve`] altogether ([`End::Idle`]): this
/// function's state (boxed by the caller, with the request's states inline) is freed,
/// and an idle connection costs its small task and its socket.
struct Conn<S> {
    client: S,
    /// Bytes from the client not yet used.
    cbuf: BytesMut,
    /// Bytes from the upstream not yet passed on.
    ubuf: BytesMut,
    /// The head (and first body bytes) about to be written, either way.
    out: Vec<u8>,
    upstreams: Upstreams,
}

/// Serves `client` on the fast path until it closes or needs the general path.
pub(crate) async fn serve<S>(
    proxy: &Proxy,
    ctx: &ListenerCtx,
    client: S,
    client_ip: &[u8],
    trusted: bool,
    first_head_by: Option<Instant>,
) -> End<S>
where
    S: ClientIo,
{
    let settings = proxy.settings();
    let mut conn = Conn {
        client,
        cbuf: BytesMut::new(),
        ubuf: BytesMut::new(),
        out: Vec::new(),
        upstreams: Upstreams::default(),
    };
    let mut deadline = Deadline::new(Instant::now() + settings.header_read_timeout);
    let (mut draining_rx, mut stopped_rx) = (ctx.state.clone(), ctx.state.clone());
    // Gated: polled again only when the state changed, not at each of the task's
    // wake-ups (`gate` says why).
    let mut draining = Gated::new(async move {
        // Idle connections close only once lingering is over (see `ConnState`).
        let _ = draining_rx
            .wait_for(|s| matches!(s, ConnState::Draining | ConnState::Stopped))
            .await;
    });
    let mut stopped = Gated::new(async move {
        let _ = stopped_rx.wait_for(|s| *s == ConnState::Stopped).await;
    });
    let mut drain_seen = false;
    let mut first_head_by = first_head_by;

    loop {
        let waiting_since = Instant::now();
        let head_by = first_head_by
            .take()
            .unwrap_or(waiting_since + settings.header_read_timeout);
        deadline.set(head_by);
        // How far `cbuf` was searched for the end of the head, and whether bytes that
        // may complete a head (a line end) arrived since the last look.
        let (mut scanned, mut look) = (0, !conn.cbuf.is_empty());
        let plan = loop {
            if look {
                look = false;
                match conn.plan(proxy, ctx, client_ip, trusted) {
                    Step::Forward(plan) => break plan,
                    Step::TooLarge => return Box::pin(conn.refuse_head()).await,
                    // hyper would refuse it at once too (400): no need for the rest.
                    Step::Invalid => return End::General(conn.client, conn.cbuf.freeze()),
                    // The general path gets only whole heads, so a head is read under
                    // one deadline and one size limit, whichever path ends up with it.
                    Step::General if head_end(&conn.cbuf, &mut scanned) => {
                        return End::General(conn.client, conn.cbuf.freeze());
                    }
                    Step::Partial | Step::General => {}
                }
            }
            if conn.cbuf.len() >= settings.max_header_bytes {
                return Box::pin(conn.refuse_head()).await;
            }
            if drain_seen {
                return End::Closed;
            }
            // Nothing buffered: idle between requests. Hold no buffer while waiting,
            // and after `IDLE_RELEASE` let go of the upstream connections and (plain
            // TCP) of this function's state.
            let idle = conn.cbuf.is_empty();
            let release = idle && (conn.upstreams.holds_any() || conn.client.tcp().is_some());
            if idle {
                conn.release_buffers();
                if release {
                    deadline.set(head_by.min(waiting_since + IDLE_RELEASE));
                }
            } else {
                conn.cbuf.reserve(HEAD_CHUNK);
            }
            let before = conn.cbuf.len();
            tokio::select! {
                biased;
                () = &mut draining, if !drain_seen => drain_seen = true,
                read = read_client(&mut conn.client, &mut conn.cbuf, idle) => match read {
                    Ok(Some(0)) | Err(_) => return End::Closed,
                    // A head can only end with a line end: parse again only then.
                    Ok(Some(_)) => look = conn.cbuf[before..].contains(&b'\n'),
                    // A spurious wake-up: wait again.
                    Ok(None) => {}
                },
                () = deadline.expired() => {
                    if Instant::now() >= head_by {
                        return End::Closed;
                    }
                    // Idle for `IDLE_RELEASE`: the upstream connections go, and a
                    // plain TCP connection leaves to wait in its caller's small state.
                    conn.upstreams.clear();
                    if conn.cbuf.is_empty() && conn.client.tcp().is_some() {
                        return End::Idle(conn.client, head_by);
                    }
                    deadline.set(head_by);
                }
            }
        };

        deadline.set(Instant::from_std(plan.received) + settings.upstream_timeout);
        let mut recorder = Recorder::start(&plan.chosen.stats, plan.received);
        if let Some(guard) = &plan.chosen.guard {
            guard.admitted();
            recorder = recorder.guarded(guard.clone());
        }
        let keep_alive = tokio::select! {
            biased;
            () = &mut stopped => return End::Closed,
            // Inline, no allocation per request: this whole function's state is boxed
            // by its caller and freed when the connection goes idle (`End::Idle`).
            keep = conn.forward(plan, recorder, &mut deadline, settings) => keep,
        };
        if !keep_alive {
            return End::Closed;
        }
    }
}

/// A client connection the fast path serves: plain TCP, or TLS (rustls) over it.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin {
    /// The socket itself when the stream is plain TCP: an idle read then waits for it
    /// to be readable before taking a buffer. A TLS stream may hold decrypted bytes
    /// the socket does not show, so it reads with a buffer held (rustls keeps its own
    /// buffers for the connection anyway).
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        None
    }
}

impl ClientIo for TcpStream {
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {}

/// Reads from the client into `cbuf`: `Some(0)` at EOF, `None` after a spurious
/// wake-up. `idle`: `cbuf` holds no memory; on plain TCP it gets a buffer from the
/// spares only once the socket is readable, so a connection waiting for its next
/// request holds none.
async fn read_client<S: ClientIo>(
    client: &mut S,
    cbuf: &mut BytesMut,
    idle: bool,
) -> std::io::Result<Option<usize>> {
    if !idle {
        return client.read_buf(cbuf).await.map(Some);
    }
    let Some(tcp) = client.tcp() else {
        if cbuf.capacity() == 0 {
            *cbuf = pool::read_buf();
        }
        return client.read_buf(cbuf).await.map(Some);
    };
    tcp.readable().await?;
    if cbuf.capacity() == 0 {
        *cbuf = pool::read_buf();
    }
    // Pending means the readiness was stale: wait again, without the buffer held.
    std::future::poll_fn(|cx| match io::poll_read_once(tcp, cbuf, cx) {
        Poll::Ready(r) => Poll::Ready(r.map(Some)),
        Poll::Pending => Poll::Ready(Ok(None)),
    })
    .await
}

/// What to do with the bytes received so far.
enum Step {
    Partial,
    Forward(Plan),
    /// For the general path, once the head is complete.
    General,
    /// Not HTTP the general path could accept either (it answers 400 at once).
    Invalid,
    /// The head is over `max_header_bytes` or `max_header_lines`: 431.
    TooLarge,
}

/// Whether the fast path can serve `head` sent to `chosen`: always when no guard
/// watches the slot; under a guard, when it has no body (the general path receives a
/// small body in full before sending it, so a client that stalls it never reaches the
/// new release), the shield would not retry it after a status, and the previous slot
/// (where a refused connection is retried) does not serve TLS.
fn fast_guard(chosen: &Chosen, head: &request::Head<'_, '_>) -> bool {
    let Some(guard) = &chosen.guard else {
        return true;
    };
    let status_retry = http::Method::from_bytes(head.method.as_bytes())
        .map_or(true, |m| guard.status_retry_possible(&m));
    head.body_len == 0 && !status_retry && guard.previous.tls.is_none()
}

/// Whether `buf` holds the end of a request head (an empty line, CRLF or bare LF as
/// httparse accepts). `scanned` is how far earlier calls searched.
fn head_end(buf: &[u8], scanned: &mut usize) -> bool {
    let from = scanned.saturating_sub(2);
    let found = buf[from..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\r\n" && from + i > 0 && buf[from + i - 1] == b'\n'));
    *scanned = buf.len();
    found
}

impl<S: ClientIo> Conn<S> {
    /// Gives the (empty) buffers back to the thread's spares.
    fn release_buffers(&mut self) {
        pool::give_read(&mut self.cbuf);
        pool::give_read(&mut self.ubuf);
        pool::give_out(&mut self.out);
    }

    /// Looks at the head in `cbuf`; for a fast-path request, writes the upstream head
    /// and the body bytes already received to `out` and consumes them from `cbuf`.
    fn plan(&mut self, proxy: &Proxy, ctx: &ListenerCtx, client_ip: &[u8], trusted: bool) -> Step {
        let settings = proxy.settings();
        let preview_header = settings.preview_header.as_str();
        let max_body = settings.max_body_bytes.min(FAST_BODY_MAX);
        let mut headers = request::slots();
        let head = match request::parse(&self.cbuf, &mut headers, preview_header, max_body) {
            Parse::Partial => return Step::Partial,
            Parse::General => return Step::General,
            Parse::Invalid => return Step::Invalid,
            Parse::Fast(head) => head,
        };
        if head.len > settings.max_header_bytes || head.lines() > settings.max_header_lines {
            return Step::TooLarge;
        }
        let received = StdInstant::now();
        let Some(service) = ctx.routes.service_for(Some(head.host)) else {
            return Step::General;
        };
        let access = &settings.preview;
        let cookies =
            cookies::scan_values(head.cookies(), &settings.preview_cookie, service, access);
        let opened = cookies.preview
            || head
                .preview_value
                .is_some_and(|v| access.allows(service, v));
        let preview = match super::forward::preview_route(ctx, access.enabled, opened) {
            Some(preview) => preview,
            // The general path answers 403.
            None => return Step::General,
        };
        // A request to a guarded new slot that the shield might retry after a status
        // takes the general path (`shield_path`); see the module doc.
        let chosen = match proxy.choose(service, preview, cookies.sticky) {
            Ok(c) if c.mirror.is_none() && c.tls.is_none() && fast_guard(&c, &head) => c,
            _ => return Step::General,
        };
        if self.out.capacity() == 0 {
            self.out = pool::out_buf();
        }
        self.out.clear();
        let strip = cookies.ours.then_some(settings.preview_cookie.as_str());
        let https = ctx.tls.is_some();
        head.write_upstream(
            &mut self.out,
            client_ip,
            (trusted, https),
            preview_header,
            strip,
        );
        let closing = *ctx.state.borrow() != ConnState::Serving;
        let (head_len, body_len) = (head.len, head.body_len);
        let (head_request, retryable, close) = (head.is_head(), head.retryable(), head.close);
        self.cbuf.advance(head_len);
        let prefix = self
            .cbuf
            .len()
            .min(usize::try_from(body_len).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&self.cbuf[..prefix]);
        self.cbuf.advance(prefix);
        let plan = Plan {
            chosen,
            received,
            body_left: body_len - prefix as u64,
            head_request,
            retryable,
            close: close || closing,
            had_body: body_len > 0,
            slot_header: settings.slot_header,
        };
        Step::Forward(plan)
    }

    /// Answers 431 to a head over the limits and closes: the rest of it is not read.
    async fn refuse_head(mut self) -> End<S> {
        self.out.clear();
        response::refusal(&mut self.out, 431, "request head too large\n");
        let _ = self.client.write_all(&self.out).await;
        let _ = self.client.flush().await;
        let _ = self.client.shutdown().await;
        End::Closed
    }

    /// Forwards one planned request and passes the response on. Records it. Whether
    /// the client connection stays open.
    async fn forward(
        &mut self,
        mut plan: Plan,
        mut recorder: Recorder,
        deadline: &mut Deadline,
        settings: &super::ProxySettings,
    ) -> bool {
        let mut got = self.exchange_head(&plan, deadline, settings).await;
        // The shield: the new slot refused the connection (nothing was sent).
        let refused = matches!(got, Err(Fail::Connect));
        let guard = refused.then(|| plan.chosen.guard.clone()).flatten();
        if let Some(guard) = guard {
            if guard.take_retry(RetryKind::Connect) {
                recorder.finish(Outcome::UpstreamFailed);
                let previous = &guard.previous;
                tracing::debug!(from = %plan.chosen.slot, to = %previous.slot, kind = "connect", "shield: retrying on the previous release");
                plan.chosen = Chosen::plain(previous);
                recorder = Recorder::start(&plan.chosen.stats, plan.received);
                got = self.exchange_head(&plan, deadline, settings).await;
            }
        }
        let slot = plan.chosen.slot;
        let plan_endpoint = plan.chosen.endpoint.clone();
        let (upstream, head) = match got {
            Ok(ok) => ok,
            Err(Fail::Client) => {
                recorder.finish(Outcome::ClientFailed);
                return false;
            }
            Err(Fail::ClientTimeout) => {
                // Nothing came back from the upstream yet: the client gets 408 and the
                // half-sent request is abandoned with its upstream connection.
                recorder.finish(Outcome::ClientFailed);
                tracing::debug!(%slot, endpoint = %plan_endpoint, "client body timed out");
                self.out.clear();
                response::local(
                    &mut self.out,
                    408,
                    settings.slot_header.then_some(slot.as_str()),
                    "request body timed out\n",
                    true,
                );
                let _ = self.client.write_all(&self.out).await;
                let _ = self.client.flush().await;
                return false;
            }
            Err(Fail::Exhausted) => {
                recorder.finish(Outcome::Overloaded);
                self.out.clear();
                let slot_name = settings.slot_header.then_some(slot.as_str());
                // Closing gives a descriptor back.
                response::local(&mut self.out, 503, slot_name, "proxy overloaded\n", true);
                let _ = self.client.write_all(&self.out).await;
                let _ = self.client.flush().await;
                return false;
            }
            Err(fail) => {
                recorder.finish(Outcome::UpstreamFailed);
                let (status, msg) = match fail {
                    Fail::Timeout => (504, "upstream timed out\n"),
                    Fail::Connect => (502, "upstream unreachable\n"),
                    _ => (502, "upstream failed\n"),
                };
                tracing::debug!(%slot, endpoint = %plan.chosen.endpoint, status, "upstream request failed");
                // Unread body bytes would be taken for the next request: close.
                let close = plan.close || plan.had_body;
                self.out.clear();
                let slot_name = settings.slot_header.then_some(slot.as_str());
                response::local(&mut self.out, status, slot_name, msg, close);
                return self.client.write_all(&self.out).await.is_ok()
                    && self.client.flush().await.is_ok()
                    && !close;
            }
        };
        match self
            .relay_body(upstream, &head, &plan.chosen.endpoint)
            .await
        {
            Ok(()) => {
                recorder.finish(Outcome::Status(head.status));
                !head.close_client
            }
            Err(Broke::Upstream) => {
                tracing::debug!(%slot, endpoint = %plan.chosen.endpoint, "upstream broke off a response");
                recorder.finish(Outcome::UpstreamFailed);
                false
            }
            Err(Broke::Client) => {
                recorder.finish(Outcome::ClientFailed);
                false
            }
        }
    }

    /// Sends the request (retrying once on a fresh connection if a reused one turns
    /// out closed) and reads the response head. On success, `out` holds the client's
    /// head and `ubuf` the bytes after the upstream's head.
    ///
    /// Whose clock runs: `deadline` (the upstream timeout) bounds what the upstream
    /// does (connect, take the request, answer) and is pushed back each time the
    /// client delivers body bytes, so it only ever measures the upstream; each wait
    /// for the client's body is bounded by `client_body_timeout` instead
    /// (`Fail::ClientTimeout`).
    async fn exchange_head(
        &mut self,
        plan: &Plan,
        deadline: &mut Deadline,
        settings: &super::ProxySettings,
    ) -> Result<(TcpStream, RespHead), Fail> {
        let endpoint = &plan.chosen.endpoint;
        let (mut upstream, mut reused) = match self.upstreams.take(endpoint, plan.received) {
            Some(s) => (s, true),
            None => (upstream_bound(deadline, connect(endpoint)).await??, false),
        };
        loop {
            match self
                .try_exchange(&mut upstream, plan, deadline, settings)
                .await
            {
                Ok(head) => return Ok((upstream, head)),
                Err(Fail::Stale) if reused && plan.retryable => {
                    tracing::debug!(%endpoint, "reused upstream connection was closed; retrying");
                    upstream = upstream_bound(deadline, connect(endpoint)).await??;
                    reused = false;
                }
                Err(Fail::Stale) => return Err(Fail::Upstream),
                Err(fail) => return Err(fail),
            }
        }
    }

    async fn try_exchange(
        &mut self,
        upstream: &mut TcpStream,
        plan: &Plan,
        deadline: &mut Deadline,
        settings: &super::ProxySettings,
    ) -> Result<RespHead, Fail> {
        match upstream_bound(deadline, upstream.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Fail::Stale),
            Err(timeout) => return Err(timeout),
        }
        let mut left = plan.body_left;
        while left > 0 {
            self.cbuf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(
                settings.client_body_timeout,
                self.client.read_buf(&mut self.cbuf),
            );
            match read.await {
                Err(_elapsed) => return Err(Fail::ClientTimeout),
                Ok(Ok(0) | Err(_)) => return Err(Fail::Client),
                Ok(Ok(_)) => {}
            }
            deadline.set(Instant::now() + settings.upstream_timeout);
            let take = self
                .cbuf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let sent = upstream_bound(deadline, upstream.write_all(&self.cbuf[..take])).await?;
            if sent.is_err() {
                return Err(Fail::Upstream);
            }
            self.cbuf.advance(take);
            left -= take as u64;
        }
        if plan.body_left > 0 {
            // The request is complete: from now on the upstream has `upstream_timeout`.
            deadline.set(Instant::now() + settings.upstream_timeout);
        }
        upstream_bound(deadline, self.read_response_head(upstream, plan)).await?
    }

    /// Reads the upstream's response head, passing 1xx heads on to the client.
    async fn read_response_head(
        &mut self,
        upstream: &mut TcpStream,
        plan: &Plan,
    ) -> Result<RespHead, Fail> {
        self.ubuf.clear();
        if self.ubuf.capacity() == 0 {
            self.ubuf = pool::read_buf();
        }
        let add = Additions {
            slot: plan.slot_header.then_some(plan.chosen.slot.as_str()),
            set_cookie: plan.chosen.set_cookie.as_ref().map(|v| v.as_bytes()),
            close: plan.close,
        };
        loop {
            self.ubuf.reserve(HEAD_CHUNK);
            match upstream.read_buf(&mut self.ubuf).await {
                Ok(0) | Err(_) if self.ubuf.is_empty() && plan.body_left == 0 => {
                    return Err(Fail::Stale)
                }
                Ok(0) | Err(_) => return Err(Fail::Upstream),
                Ok(_) => {}
            }
            loop {
                self.out.clear();
                match response::parse(&self.ubuf, plan.head_request, add, &mut self.out) {
                    RespParse::Final(head) => {
                        self.ubuf.advance(head.len);
                        return Ok(head);
                    }
                    RespParse::Informational { len } => {
                        self.ubuf.advance(len);
                        if self.client.write_all(&self.out).await.is_err()
                            || self.client.flush().await.is_err()
                        {
                            return Err(Fail::Client);
                        }
                        if self.ubuf.is_empty() {
                            break;
                        }
                    }
                    RespParse::Partial if self.ubuf.len() < MAX_HEAD => break,
                    RespParse::Partial | RespParse::Bad => return Err(Fail::Upstream),
                }
            }
        }
    }

    /// Passes the response body on (`out` holds the client's head, `ubuf` what was
    /// read past the upstream's head), then keeps the upstream connection if it can
    /// carry another request.
    async fn relay_body(
        &mut self,
        mut upstream: TcpStream,
        head: &RespHead,
        endpoint: &Endpoint,
    ) -> Result<(), Broke> {
        let clean = match head.framing {
            Framing::Empty => {
                self.write_out().await?;
                self.ubuf.is_empty()
            }
            Framing::Length(total) => {
                let mut left = total;
                let take = self.take_into_out(left);
                left -= take as u64;
                self.write_out().await?;
                while left > 0 {
                    self.read_upstream(&mut upstream).await?;
                    let take = self
                        .ubuf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.write_ubuf(take).await?;
                    left -= take as u64;
                }
                self.ubuf.is_empty()
            }
            Framing::Chunked => {
                let mut end = ChunkedEnd::default();
                let mut first = true;
                loop {
                    let done = end.feed(&self.ubuf).map_err(|_| Broke::Upstream)?;
                    let take = done.unwrap_or(self.ubuf.len());
                    if first {
                        self.take_into_out(take as u64);
                        self.write_out().await?;
                        first = false;
                    } else {
                        self.write_ubuf(take).await?;
                    }
                    if done.is_some() {
                        break;
                    }
                    self.read_upstream(&mut upstream).await?;
                }
                self.ubuf.is_empty()
            }
            Framing::UntilClose => {
                let n = self.ubuf.len();
                self.take_into_out(n as u64);
                self.write_out().await?;
                loop {
                    self.ubuf.clear();
                    self.ubuf.reserve(READ_CHUNK);
                    match upstream.read_buf(&mut self.ubuf).await {
                        Ok(0) => break,
                        Ok(n) => self.write_ubuf(n).await?,
                        Err(_) => return Err(Broke::Upstream),
                    }
                }
                false
            }
        };
        if clean && head.reusable {
            self.upstreams.put(endpoint, upstream, StdInstant::now());
        }
        Ok(())
    }

    /// Moves up to `max` bytes from the front of `ubuf` to the end of `out`.
    fn take_into_out(&mut self, max: u64) -> usize {
        let take = self
            .ubuf
            .len()
            .min(usize::try_from(max).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&self.ubuf[..take]);
        self.ubuf.advance(take);
        take
    }

    async fn write_out(&mut self) -> Result<(), Broke> {
        self.client
            .write_all(&self.out)
            .await
            .map_err(|_| Broke::Client)?;
        // A no-op on TCP; over TLS it sends what the record layer still holds.
        self.client.flush().await.map_err(|_| Broke::Client)
    }

    /// Writes the first `n` bytes of `ubuf` to the client and consumes them.
    async fn write_ubuf(&mut self, n: usize) -> Result<(), Broke> {
        self.client
            .write_all(&self.ubuf[..n])
            .await
            .map_err(|_| Broke::Client)?;
        self.client.flush().await.map_err(|_| Broke::Client)?;
        self.ubuf.advance(n);
        Ok(())
    }

    /// Reads more of the body into `ubuf` (which the caller has drained); EOF or an
    /// error mid-body is the upstream's failure.
    async fn read_upstream(&mut self, upstream: &mut TcpStream) -> Result<(), Broke> {
        self.ubuf.reserve(READ_CHUNK);
        match upstream.read_buf(&mut self.ubuf).await {
            Ok(0) | Err(_) => Err(Broke::Upstream),
            Ok(_) => Ok(()),
        }
    }
}

/// Runs `fut` (something the upstream must do) against the upstream deadline.
async fn upstream_bound<T>(
    deadline: &mut Deadline,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, Fail> {
    tokio::select! {
        biased;
        out = fut => Ok(out),
        () = deadline.expired() => Err(Fail::Timeout),
    }
}

async fn connect(endpoint: &Endpoint) -> Result<TcpStream, Fail> {
    io::connect(endpoint).await.map_err(|e| {
        tracing::debug!(%endpoint, error = %e, "upstream connect failed");
        if crate::domain::endpoint::out_of_descriptors(&e) {
            Fail::Exhausted
        } else {
            Fail::Connect
        }
    })
}
