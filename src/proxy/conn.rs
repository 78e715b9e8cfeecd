//! What one listener's connections share, and where the listener is in its life.
//!
//! Its own file so the serving pieces form a chain instead of a knot: `server` (accept
//! loop, drain) builds a [`ListenerCtx`] and hands each connection to `h1` (the fast
//! path), which hands unusual requests to `forward` (the general path), which starts
//! `upgrade` tunnels; all of them read this context and its [`ConnState`], and none of
//! them needs to import the one above it.

use hyper::server::conn::http1;
use tokio::sync::{mpsc, watch};

use super::ListenerRoutes;

/// Where a listener is in its life; connections and tunnels watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Serving,
    /// The listener is closed (or handed to a new daemon): keep-alive connections stay
    /// open for a moment and answer their next request with `Connection: close`, so a
    /// busy client closes cleanly instead of racing a close with its next request.
    Lingering,
    /// Finish the current request, then close; idle connections close at once.
    Draining,
    /// Close now.
    Stopped,
}

/// What every connection of one listener shares.
pub(crate) struct ListenerCtx {
    pub(crate) routes: ListenerRoutes,
    /// The listener is bound to a non-loopback address.
    pub(crate) public: bool,
    pub(crate) state: watch::Receiver<ConnState>,
    /// The general path's connection settings (header read timeout, keep-alive).
    pub(super) http: http1::Builder,
    /// HTTP/1.1 or HTTP/2 (by the connection preface): TLS listeners, and plaintext
    /// ones with h2c on.
    pub(super) auto: Option<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    /// This listener terminates TLS.
    pub(crate) tls: Option<std::sync::Arc<super::tls::TlsListener>>,
    /// This is a `redirect_from` listener: every request for a host the TLS
    /// listener has a certificate for is redirected to HTTPS on this port (ACME
    /// HTTP-01 challenges answered).
    pub(super) redirect_to: Option<super::tls::RedirectTarget>,
    /// Never sent on: its receiver learns that every holder is gone.
    pub(super) _alive: mpsc::Sender<()>,
}

/// Resolves once the listener is stopped for good (or gone).
pub(crate) async fn stopped(state: &mut watch::Receiver<ConnState>) {
    let _ = state.wait_for(|s| *s == ConnState::Stopped).await;
}
