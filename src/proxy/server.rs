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
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::{stopped, ConnState, ListenerCtx};
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
    let redirect_to = proxy.settings().tls.redirect_port(local);
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
                    let (proxy, ctx) = (proxy.clone(), ctx.clone());
                    tokio::spawn(async move {
                        serve_connection(proxy, ctx, stream, peer).await;
                        drop(permit);
                    });
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

async fn serve_connection(
    proxy: Arc<Proxy>,
    ctx: Arc<ListenerCtx>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    // Computed once per connection; each request clones it (a reference count).
    let client_ip = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let trusted = proxy.settings().trusts(peer.ip());
    if let Some(port) = ctx.redirect_to {
        return super::redirect::serve(&proxy, &ctx, stream, peer, port).await;
    }
    if let Some(tls) = ctx.tls.clone() {
        // A client that never finishes its handshake holds a connection slot only
        // for `handshake_timeout`.
        let stream = match tokio::time::timeout(
            tls.handshake_timeout,
            tls.acceptor().accept(stream),
        )
        .await
        {
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
        // HTTP/1.1 over TLS takes the fast path like plaintext (HSTS, which the fast
        // path does not write, sends it to the general path); HTTP/2 the general one.
        let h2 = stream.get_ref().1.alpn_protocol() == Some(super::tls::ALPN_H2);
        if h2 || tls.hsts.is_some() || !proxy.settings().fast_path {
            return serve_auto(proxy, ctx, TokioIo::new(stream), peer, client_ip, trusted).await;
        }
        return serve_fast_then_h1(proxy, ctx, stream, peer, client_ip, trusted).await;
    }
    if ctx.auto.is_some() {
        let io = TokioIo::new(stream);
        return serve_auto(proxy, ctx, io, peer, client_ip, trusted).await;
    }
    serve_fast_then_h1(proxy, ctx, stream, peer, client_ip, trusted).await;
}

/// HTTP/1.1: the fast path first, then (if it hands the connection over) hyper's
/// HTTP/1.1 server on the general path.
async fn serve_fast_then_h1<S>(
    proxy: Arc<Proxy>,
    ctx: Arc<ListenerCtx>,
    stream: S,
    peer: SocketAddr,
    client_ip: HeaderValue,
    trusted: bool,
) where
    S: super::h1::ClientIo + Send + 'static,
{
    let settings = proxy.settings();
    let (stream, pre) = if settings.fast_path && !settings.affine_upstream {
        match super::h1::serve(&proxy, &ctx, stream, client_ip.as_bytes(), trusted).await {
            super::h1::End::Closed => return,
            super::h1::End::General(stream, pre) => (stream, pre),
        }
    } else {
        (stream, bytes::Bytes::new())
    };
    let stream = super::h1::Rewind::new(stream, pre);
    // Boxed: a connection on the fast path (most) never has room for hyper's states in
    // its task, which keeps an idle connection's task small.
    Box::pin(serve_h1(proxy, ctx, stream, peer, client_ip, trusted)).await;
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
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let ctx = svc_ctx.clone();
        let client_ip = client_ip.clone();
        Box::pin(async move {
            let mut resp = proxy.handle(req, &ctx, &client_ip, trusted).await;
            if let Some(hsts) = ctx.tls.as_ref().and_then(|t| t.hsts.clone()) {
                resp.headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            if *ctx.state.borrow() != ConnState::Serving
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
