//! Small HTTP/1.1 backends for tests: each runs in-process on `127.0.0.1:0`, counts
//! the requests it answered, and stops accepting (and drops its open connections)
//! when the [`Backend`] is dropped.
//!
//! Include it from any integration test file without a `tests/support/mod.rs`:
//!
//! ```ignore
//! #[path = "support/backend.rs"]
//! mod backend;
//! use backend::Backend;
//!
//! let blue = Backend::text("blue").await;          // 200 "blue"
//! let slow = Backend::slow(Duration::from_secs(1), "slow").await;
//! let custom = Backend::start(|req| async move { backend::reply(200, "hi") }).await;
//! let refused = backend::dead_addr().await;         // nothing listens there
//! ```
//!
//! Ready-made backends: [`Backend::text`], [`Backend::status`], [`Backend::slow`],
//! [`Backend::echo_headers`] (request headers as the body),
//! [`Backend::with_response_headers`], [`Backend::trickle`] (a slowly streamed body)
//! and [`Backend::upgrade_echo`] (answers 101, then echoes bytes).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The body type every backend handler returns.
pub type BackendBody = BoxBody<Bytes, Infallible>;

/// A running test backend. Dropping it stops it.
pub struct Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.accept.abort();
    }
}

/// A response with `status` and a plain-text body.
pub fn reply(status: u16, body: impl Into<Bytes>) -> Response<BackendBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).expect("valid status");
    resp
}

impl Backend {
    /// Serves every request with `handler` (HTTP/1.1, keep-alive, upgrades allowed).
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BackendBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = hits.clone();
        let accept = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                while conns.try_join_next().is_some() {}
                let handler = handler.clone();
                let counter = counter.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend { addr, hits, accept }
    }

    /// 200 with `body`.
    pub async fn text(body: &'static str) -> Backend {
        Self::start(move |_| async move { reply(200, body) }).await
    }

    /// `code` with a body naming it.
    pub async fn status(code: u16) -> Backend {
        Self::start(move |_| async move { reply(code, format!("status {code}")) }).await
    }

    /// 200 with `body`, after sleeping `delay` before the response headers.
    pub async fn slow(delay: Duration, body: &'static str) -> Backend {
        Self::start(move |_| async move {
            tokio::time::sleep(delay).await;
            reply(200, body)
        })
        .await
    }

    /// 200 whose body is the request's headers, one `name: value` line each, sorted.
    pub async fn echo_headers() -> Backend {
        Self::start(|req| async move {
            let mut lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("<binary>")))
                .collect();
            lines.sort();
            reply(200, lines.join("\n") + "\n")
        })
        .await
    }

    /// 200 "ok" carrying the given response headers.
    pub async fn with_response_headers(
        headers: &'static [(&'static str, &'static str)],
    ) -> Backend {
        Self::start(move |_| async move {
            let mut resp = reply(200, "ok");
            for (k, v) in headers {
                resp.headers_mut().append(
                    header::HeaderName::from_static(k),
                    header::HeaderValue::from_static(v),
                );
            }
            resp
        })
        .await
    }

    /// 200 streaming `chunks` chunks of 1 KiB, the first at once, then one every `every`
    /// (chunked encoding).
    pub async fn trickle(chunks: usize, every: Duration) -> Backend {
        Self::start(move |_| async move {
            Response::new(
                Trickle {
                    left: chunks,
                    every,
                    sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                }
                .boxed(),
            )
        })
        .await
    }

    /// Answers an upgrade request with `101` (`Upgrade: echo`), then echoes every byte
    /// until the client closes. Other requests get 200 "not an upgrade".
    pub async fn upgrade_echo() -> Backend {
        Self::start(|mut req| async move {
            if !req.headers().contains_key(header::UPGRADE) {
                return reply(200, "not an upgrade");
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut resp = Response::new(Empty::new().boxed());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("upgrade"),
            );
            resp.headers_mut()
                .insert(header::UPGRADE, header::HeaderValue::from_static("echo"));
            resp
        })
        .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An address nothing listens on, so connecting is refused: a socket bound to it and
/// never listening, kept for the rest of the test binary. Why not bind and release: the
/// next `127.0.0.1:0` bind (another test's, or this test's own proxy) may be given the
/// same port, and a proxy whose "dead" slot is its own listener forwards to itself in
/// a loop (seen once in CI: 9,988 requests counted for one).
pub async fn dead_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = socket.local_addr().expect("address");
    std::mem::forget(socket);
    addr
}

struct Trickle {
    left: usize,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b'x'; 1024])))))
    }
}
