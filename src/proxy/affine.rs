//! The general path with a connection-affine upstream connection: a benchmark setting.
//!
//! Why it exists: issue #16 asks whether the hand-written fast path (`h1`) earns its
//! ~1,000 lines against the obvious alternative, hyper on both sides with the upstream
//! connection owned by the client connection (`hyper::client::conn::http1`, no pool,
//! driven in the client connection's own task), instead of hyper-util's pooled client
//! (a pool checkout and a hop to the pooled connection's task per request). With
//! `CUTOVER_PROXY_AFFINE=1` in the daemon's environment every request takes the
//! general path and sends through the [`Affine`] of its client connection. It is not
//! a supported configuration: it is there so the benchmark can run the same binary
//! three ways (fast path, general path with the pool, general path connection-affine)
//! side by side. BENCHMARKS.md records the comparison and the decision.
//!
//! How "the same task" works: `server` polls the connection's [`Affine`] driver
//! before and after the hyper server connection (see [`Affine::poll_drive`]), so the
//! upstream connection makes progress exactly when the client connection's task runs.
//! The lock is never contended: the service future and the driver run one after the
//! other inside one task's poll.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::LimitedBody;
use crate::domain::endpoint::Endpoint;

type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One client connection's upstream connection (at most one, to the endpoint of its
/// last request).
#[derive(Default)]
pub(crate) struct Affine {
    inner: Mutex<Inner>,
}

/// What a request carries to find its connection's [`Affine`] (a request extension).
#[derive(Clone)]
pub(crate) struct Handle(pub(crate) Arc<Affine>);

#[derive(Default)]
struct Inner {
    sender: Option<(Endpoint, http1::SendRequest<LimitedBody>)>,
    driver: Option<Driver>,
}

/// Why a request sent on the general path got no response head.
pub(crate) enum SendError {
    /// From hyper-util's pooled client.
    Pooled(hyper_util::client::legacy::Error),
    /// Connecting to the upstream failed (affine).
    Connect(std::io::Error),
    /// The upstream connection failed (affine), or the request body did.
    Upstream(hyper::Error),
    /// An HTTP/2 stream's exchange on the fast path's upstream code (`h1::exchange`).
    Direct(super::h1::exchange::ExchangeError),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            SendError::Pooled(e) => e.is_connect(),
            SendError::Connect(_) => true,
            SendError::Upstream(_) => false,
            SendError::Direct(e) => e.is_connect(),
        }
    }

    /// The error, for finding a client body failure in its source chain.
    pub(crate) fn as_error(&self) -> &(dyn StdError + 'static) {
        match self {
            SendError::Pooled(e) => e,
            SendError::Connect(e) => e,
            SendError::Upstream(e) => e,
            SendError::Direct(e) => e,
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Pooled(e) => fmt::Debug::fmt(e, f),
            SendError::Connect(e) => write!(f, "connect: {e:?}"),
            SendError::Upstream(e) => fmt::Debug::fmt(e, f),
            SendError::Direct(e) => write!(f, "{e}"),
        }
    }
}

impl From<hyper_util::client::legacy::Error> for SendError {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        SendError::Pooled(e)
    }
}

impl Affine {
    /// Sends `req` (its URI absolute, as for the pooled client) on this connection's
    /// upstream connection to `endpoint`, opening one if there is none (or it is to
    /// another endpoint, or closed). A reused connection found closed before the
    /// request went out is replaced once.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        mut req: Request<LimitedBody>,
    ) -> Result<Response<Incoming>, SendError> {
        // Origin-form on the wire, as the pooled client sends it.
        if let Some(pq) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(pq);
        }
        let reused = self.take_sender(endpoint);
        let (mut sender, mut fresh) = match reused {
            Some(mut s) => match s.ready().await {
                Ok(()) => (s, false),
                Err(_) => (self.open(endpoint).await?, true),
            },
            None => (self.open(endpoint).await?, true),
        };
        loop {
            sender.ready().await.map_err(SendError::Upstream)?;
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.lock().sender = Some((endpoint.clone(), sender));
                    return Ok(resp);
                }
                // A reused connection the upstream closed before taking the request:
                // once more on a new one (the request was not sent).
                Err(mut e) if !fresh && e.message().is_some() => {
                    req = e.take_message().expect("checked");
                    sender = self.open(endpoint).await?;
                    fresh = true;
                }
                Err(e) => return Err(SendError::Upstream(e.into_error())),
            }
        }
    }

    fn take_sender(&self, endpoint: &Endpoint) -> Option<http1::SendRequest<LimitedBody>> {
        let mut inner = self.lock();
        match inner.sender.take() {
            Some((ep, s)) if ep == *endpoint && !s.is_closed() => Some(s),
            _ => {
                inner.driver = None;
                None
            }
        }
    }

    async fn open(
        &self,
        endpoint: &Endpoint,
    ) -> Result<http1::SendRequest<LimitedBody>, SendError> {
        let stream: TcpStream = endpoint.connect().await.map_err(SendError::Connect)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Upstream)?;
        // Driven by the client connection's task from now on (`poll_drive`), which is
        // polling us right now and polls the driver right after.
        self.lock().driver = Some(Box::pin(conn.with_upgrades()));
        Ok(sender)
    }

    /// Drives the upstream connection; called by the client connection's task around
    /// each poll of the hyper server connection. A finished connection is forgotten.
    pub(crate) fn poll_drive(&self, cx: &mut Context<'_>) {
        let mut inner = self.lock();
        if let Some(driver) = inner.driver.as_mut() {
            if let Poll::Ready(res) = driver.as_mut().poll(cx) {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "affine upstream connection ended");
                }
                inner.driver = None;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
