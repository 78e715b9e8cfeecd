//! The accept loop, per-connection serving and graceful shutdown of one listener.
//!
//! Shape (after mini-redis): [`serve`] takes an already bound listener, so tests bind
//! `127.0.0.1:0`, and a `shutdown` future. Each accepted socket gets one task: first
//! the fast path (`h1`), then, if it hands the connection over, a hyper HTTP/1.1
//! connection (keep-alive, header read timeout, upgrades) whose service is
//! [`Proxy::handle`](super::Proxy). A broken client only ever ends its own task.
//!
//! Shutdown is three-staged, broadcast through a `watch` channel:
//! 1. *Lingering*, for [`LINGER`]: the listener is closed (or, on a hand-over, only this
//!    process's copy: the new daemon accepts from the same socket); keep-alive
//!    connections stay open and answer their next request with `Connection: close`,
//!    so a busy client closes after a complete response instead of sending a request
//!    on a connection the proxy is closing.
//! 2. *Draining*: every connection finishes the request it is serving (hyper's
//!    `graceful_shutdown`), then closes; idle ones close at once.
//! 3. *Stopped*, after the grace period: whatever is left (slow requests, upgraded
//!    tunnels) is dropped.
//!
//! Accepting is fair to the connections already open: the accept loop takes one
//! connection per turn of its worker and then yields, so whatever became ready on open
//! connections meanwhile (a TLS handshake's second flight, a request) runs before the
//! next connection is accepted, as nginx does with `multi_accept off`. Draining the
//! whole accept queue at once (up to tokio's budget of 128) let a burst of new
//! handshakes, about 0.4 ms of CPU each, run ahead of every handshake already under
//! way: new TLS handshakes' p99 was 1.4–1.8× nginx's in the same runs; it is now below
//! it (BENCHMARKS.md, "New TLS handshakes: accepting one connection per turn, and spare
//! upstream connections").
//!
//! Every connection and tunnel task holds a clone of the listener context
//! (`ListenerCtx`, in `conn.rs`), which owns an `mpsc::Sender`; when the last one is
//! gone the receiver sees the channel close, so "all connections finished" needs no
//! counter and no lock.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conn::{stopped, ConnState, ListenerCtx};
use super::idle::{IdleSet, Parked};
use super::{ListenerRoutes, Proxy};

/// How long [`serve`] lets open requests finish after `shutdown` resolves before it
/// drops the connections still open. Matches the default `proxy.drain_timeout`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves one already-bound listener until `shutdown` resolves, then stops accepting
/// and lets open requests finish for up to [`DEFAULT_SHUTDOWN_GRACE`].
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    routes: ListenerRoutes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_grace(proxy, listener, routes, shutdown, DEFAULT_SHUTDOWN_GRACE).await
}

/// [`serve`] with an explicit grace period for open requests at shutdown.
/// The per-listener connection semaphores (`ProxySettings::max_connections`). Looked
/// up once per listening socket when it starts, never on the request path.
#[derive(Debug, Default)]
pub struct ConnectionCaps {
    by_listener: std::sync::Mutex<std::collections::HashMap<SocketAddr, Arc<Semaphore>>>,
}

impl ConnectionCaps {
    /// The semaphore of the listener on `addr` (created with `max` permits on first use).
    pub fn for_listener(&self, addr: SocketAddr, max: usize) -> Arc<Semaphore> {
        self.by_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_insert_with(|| Arc::new(Semaphore::new(max.max(1))))
            .clone()
    }
}

/// How long keep-alive connections linger after the listener closed (see the module
/// doc): long enough for a client sending a request every few hundred milliseconds to
/// send one more and be told to close.
pub const LINGER: Duration = Duration::from_secs(1);

pub async fn serve_with_grace(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    routes: ListenerRoutes,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let (state_tx, state_rx) = watch::channel(ConnState::Serving);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(proxy.settings().header_read_timeout)
        // Bounded heads (431 beyond): hyper's own defaults (~400 KiB, 100 lines) let
        // 1,000 trickling clients hold 400 MB. 8 KiB is hyper's floor; config
        // validation keeps `max_header_bytes` at or above it.
        .max_buf_size(proxy.settings().max_header_bytes.max(8192))
        .max_headers(proxy.settings().max_header_lines)
        .keep_alive(true);
    let local = listener.local_addr()?;
    let tls = proxy.settings().tls.listener(local).cloned();
    let redirect_to = proxy.settings().tls.redirect_target(local);
    // TLS listeners speak HTTP/2 when ALPN chose it; plaintext ones only with h2c on.
    let auto = (tls.is_some() || proxy.settings().h2c).then(|| auto_builder(proxy.settings()));
    let ctx = Arc::new(ListenerCtx {
        public: !local.ip().is_loopback(),
        routes: routes.normalized(),
        state: state_rx,
        http,
        auto,
        tls,
        redirect_to,
        _alive: alive_tx,
    });

    let cap = proxy
        .settings()
        .caps
        .for_listener(local, proxy.settings().max_connections);
    // Idle plaintext connections of this listener on this thread, without tasks.
    let idle = Arc::new(IdleSet::default());
    let resume = {
        let (proxy, idle) = (proxy.clone(), idle.clone());
        move |p: Parked| {
            // A socket reset meanwhile has no peer: it is simply closed.
            let Ok(peer) = p.stream.peer_addr() else {
                return;
            };
            let conn = Conn {
                proxy: proxy.clone(),
                ctx: p.ctx,
                idle: idle.clone(),
                peer,
                _permit: p.permit,
            };
            tokio::spawn(conn.serve_plain(p.stream, Some(p.head_by)));
        }
    };
    tokio::spawn(super::idle::watch(idle.clone(), ctx.state.clone(), resume));
    tokio::pin!(shutdown);
    loop {
        // A free connection slot first: at the cap, new clients wait in the kernel's
        // accept queue instead of taking descriptors.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = cap.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = Conn {
                        proxy: proxy.clone(),
                        ctx: ctx.clone(),
                        idle: idle.clone(),
                        peer,
                        _permit: permit,
                    };
                    tokio::spawn(conn.serve(stream));
                    // One connection per turn: the connections already open (a
                    // handshake's second flight, a request) go before the next new one.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    // Usually out of file descriptors or a connection reset before
                    // accept; back off briefly instead of spinning, keep serving.
                    tracing::warn!(listener = %local, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }

    drop(listener);
    drop(ctx);
    let _ = state_tx.send(ConnState::Lingering);
    tokio::select! {
        () = tokio::time::sleep(LINGER.min(grace)) => {}
        // Every connection is gone already.
        _ = alive_rx.recv() => return Ok(()),
    }
    let _ = state_tx.send(ConnState::Draining);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!(listener = %local, ?grace, "requests still open after the grace period; closing them");
        let _ = state_tx.send(ConnState::Stopped);
        // Tasks drop their connection as soon as they see `Stopped`.
        let _ = tokio::time::timeout(Duration::from_secs(1), alive_rx.recv()).await;
    }
    Ok(())
}

/// The general path's HTTP/1.1 + HTTP/2 server settings, for TLS and h2c listeners.
/// HTTP/2 limits (safe defaults, see README "TLS and HTTP/2"): 128 concurrent streams
/// per connection, header lists bounded like HTTP/1.1 heads (`max_header_bytes`),
/// a PING every 20s answered within 20s or the connection closes, at most 20 streams
/// reset by the client before the server accepted them (h2's rapid-reset guard,
/// CVE-2023-44487) and 1024 streams reset for protocol errors per connection.
fn auto_builder(settings: &super::ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_header_lines)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(settings.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    b
}

/// Streams one HTTP/2 connection may have open at once.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// One client connection's task, from accept (or from its parked state) until it
/// closes or is parked again.
///
/// Why the paths are boxed: a connection's task lives as long as it is busy (an idle
/// plaintext one is parked without a task, `idle.rs`), and TLS, the redirect listener,
/// hyper's server and the fast path each need their own (large) states; each is
/// allocated only while used.
struct Conn {
    proxy: Arc<Proxy>,
    ctx: Arc<ListenerCtx>,
    idle: Arc<IdleSet>,
    peer: SocketAddr,
    /// Its slot under `max_connections`, held until it closes (parked included).
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// A newly accepted connection.
    async fn serve(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let ctx = self.ctx.clone();
        if let Some(target) = ctx.redirect_to.clone() {
            let serve = super::redirect::serve(&self.proxy, &ctx, stream, self.peer, target);
            return Box::pin(serve).await;
        }
        if ctx.tls.is_some() || ctx.auto.is_some() {
            let client_ip = client_ip(&self.peer);
            let client = Client {
                proxy: &self.proxy,
                ctx: &ctx,
                peer: &self.peer,
                client_ip: &client_ip,
                trusted: self.proxy.settings().trusts(self.peer.ip()),
            };
            if ctx.tls.is_some() {
                return Box::pin(serve_tls(client, stream)).await;
            }
            return Box::pin(client.auto(TokioIo::new(stream))).await;
        }
        self.serve_plain(stream, None).await;
    }

    /// Plaintext HTTP/1.1 until the connection closes, or parks when idle.
    /// `head_by`: a parked connection's request-head deadline, which still holds.
    async fn serve_plain(self, stream: TcpStream, head_by: Option<Instant>) {
        let client_ip = client_ip(&self.peer);
        let client = Client {
            proxy: &self.proxy,
            ctx: &self.ctx,
            peer: &self.peer,
            client_ip: &client_ip,
            trusted: self.proxy.settings().trusts(self.peer.ip()),
        };
        let Idle(stream, head_by) = serve_fast_then_h1(&client, stream, head_by).await else {
            return;
        };
        let Conn {
            ctx,
            idle,
            _permit: permit,
            ..
        } = self;
        idle.park(Parked {
            ctx,
            stream,
            permit,
            head_by,
        });
    }
}

/// The client's address as `X-Forwarded-For` gets it: computed once per connection
/// (or busy period), each request clones it (a reference count).
fn client_ip(peer: &SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// How HTTP/1.1 serving left a connection.
enum Served<S> {
    Done,
    /// Idle for `IDLE_RELEASE` with nothing held (plain TCP only): park it; the
    /// `Instant` is its request-head deadline.
    Idle(S, Instant),
}
use Served::Idle;

/// What every path needs to know about a client connection (borrowed from its task).
#[derive(Clone, Copy)]
struct Client<'a> {
    proxy: &'a Arc<Proxy>,
    ctx: &'a Arc<ListenerCtx>,
    peer: &'a SocketAddr,
    client_ip: &'a HeaderValue,
    trusted: bool,
}

impl Client<'_> {
    /// The general path on the auto (HTTP/1.1 or HTTP/2) server.
    async fn auto<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (proxy, ctx) = (self.proxy.clone(), self.ctx.clone());
        serve_auto(
            proxy,
            ctx,
            io,
            *self.peer,
            self.client_ip.clone(),
            self.trusted,
        )
        .await;
    }

    /// The general (hyper) HTTP/1.1 path for the rest of a connection.
    async fn h1<S>(self, stream: super::h1::Rewind<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (proxy, ctx) = (self.proxy.clone(), self.ctx.clone());
        serve_h1(
            proxy,
            ctx,
            stream,
            *self.peer,
            self.client_ip.clone(),
            self.trusted,
        )
        .await;
    }
}

/// A TLS listener's connection: the handshake, then HTTP/1.1 (the fast path) or
/// HTTP/2 (the general path) as ALPN chose.
async fn serve_tls(client: Client<'_>, stream: TcpStream) {
    let Some(tls) = client.ctx.tls.clone() else {
        return;
    };
    let peer = *client.peer;
    // A client that never finishes its handshake holds a connection slot only for
    // `handshake_timeout`.
    let stream =
        match tokio::time::timeout(tls.handshake_timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    // HTTP/1.1 over TLS takes the fast path like plaintext (HSTS, which the fast path
    // does not write, sends it to the general path); HTTP/2 the general one.
    let h2 = stream.get_ref().1.alpn_protocol() == Some(super::tls::ALPN_H2);
    if h2 || tls.hsts.is_some() || !client.proxy.settings().fast_path {
        return client.auto(TokioIo::new(stream)).await;
    }
    // TLS connections are never handed back idle (`h1::End::Idle` is for plain TCP).
    let _ = serve_fast_then_h1(&client, stream, None).await;
}

/// HTTP/1.1: the fast path first, then (if it hands the connection over) hyper's
/// HTTP/1.1 server on the general path. The fast path runs boxed, one allocation per
/// busy period; a plaintext connection with nothing to do for `IDLE_RELEASE` comes
/// back ([`super::h1::End::Idle`]) to be parked.
async fn serve_fast_then_h1<S>(
    client: &Client<'_>,
    stream: S,
    head_by: Option<Instant>,
) -> Served<S>
where
    S: super::h1::ClientIo + Send + 'static,
{
    let settings = client.proxy.settings();
    if !settings.fast_path || settings.affine_upstream {
        let stream = super::h1::Rewind::new(stream, bytes::Bytes::new());
        Box::pin(client.h1(stream)).await;
        return Served::Done;
    }
    let served = Box::pin(super::h1::serve(
        client.proxy,
        client.ctx,
        stream,
        client.client_ip.as_bytes(),
        client.trusted,
        head_by,
    ))
    .await;
    match served {
        super::h1::End::Closed => Served::Done,
        super::h1::End::General(s, pre) => {
            let stream = super::h1::Rewind::new(s, pre);
            Box::pin(client.h1(stream)).await;
            Served::Done
        }
        super::h1::End::Idle(s, by) => Idle(s, by),
    }
}

/// The general (hyper) HTTP/1.1 path for the rest of a connection.
async fn serve_h1<S>(
    proxy: Arc<Proxy>,
    ctx: Arc<ListenerCtx>,
    stream: super::h1::Rewind<S>,
    peer: SocketAddr,
    client_ip: HeaderValue,
    trusted: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let affine = proxy
        .settings()
        .affine_upstream
        .then(|| Arc::new(super::affine::Affine::default()));
    let mut state = ctx.state.clone();
    let svc_ctx = ctx.clone();
    let svc_affine = affine.clone();
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if let Some(a) = &svc_affine {
            req.extensions_mut()
                .insert(super::affine::Handle(a.clone()));
        }
        let proxy = proxy.clone();
        let ctx = svc_ctx.clone();
        let client_ip = client_ip.clone();
        async move {
            let mut resp = proxy.handle(req, &ctx, &client_ip, trusted).await;
            // Lingering: this is the connection's last response.
            if *ctx.state.borrow() != ConnState::Serving
                && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = ctx
        .http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    // With a connection-affine upstream (`affine`), its connection is driven here, in
    // this task, around each poll of the client connection.
    let serve = |cx: &mut std::task::Context<'_>, conn: std::pin::Pin<&mut _>| {
        let Some(a) = &affine else {
            return Future::poll(conn, cx);
        };
        a.poll_drive(cx);
        let res = Future::poll(conn, cx);
        a.poll_drive(cx);
        res
    };

    tokio::select! {
        res = std::future::poll_fn(|cx| serve(cx, conn.as_mut())) => return log_end(res, peer),
        _ = state.wait_for(|s| matches!(s, ConnState::Draining | ConnState::Stopped)) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        res = std::future::poll_fn(|cx| serve(cx, conn.as_mut())) => log_end(res, peer),
        () = stopped(&mut state) => {}
    }
}

/// The general path on the auto (HTTP/1.1 or HTTP/2) server, for TLS and h2c
/// listeners. Draining sends HTTP/2 a GOAWAY: streams already open finish.
async fn serve_auto<I>(
    proxy: Arc<Proxy>,
    ctx: Arc<ListenerCtx>,
    io: I,
    peer: SocketAddr,
    client_ip: HeaderValue,
    trusted: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Some(auto) = ctx.auto.clone() else {
        return;
    };
    let mut state = ctx.state.clone();
    let svc_ctx = ctx.clone();
    // Boxed: HTTP/2 spawns a task per stream holding this future, and tokio moves a
    // task's future when it creates and finishes it: copying the request's whole state
    // machine (several KiB) each time. Boxed, an HTTP/2 request took 7.6 % fewer
    // instructions (BENCHMARKS.md "TLS handshakes and HTTP/2"); a box is one allocation.
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        let ctx = svc_ctx.clone();
        let client_ip = client_ip.clone();
        // HTTP/2 has no `Connection` header (RFC 9113 §8.2.2): draining is its GOAWAY.
        let h1 = req.version() < http::Version::HTTP_2;
        Box::pin(async move {
            let mut resp = proxy.handle(req, &ctx, &client_ip, trusted).await;
            if let Some(hsts) = ctx.tls.as_ref().and_then(|t| t.hsts.clone()) {
                resp.headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            if h1
                && *ctx.state.borrow() != ConnState::Serving
                && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        })
    });
    let conn = auto.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return log_end_any(res, peer),
        _ = state.wait_for(|s| matches!(s, ConnState::Draining | ConnState::Stopped)) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        res = conn.as_mut() => log_end_any(res, peer),
        () = stopped(&mut state) => {}
    }
}

fn log_end_any(res: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

fn log_end(res: hyper::Result<()>, peer: SocketAddr) {
    if let Err(e) = res {
        // Timeouts, malformed requests, resets: the client's problem, not ours.
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}
