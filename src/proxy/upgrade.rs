//! HTTP upgrade (WebSocket) pass-through.
//!
//! Once the upstream answers 101, both HTTP connections stop being HTTP: each side
//! hands its socket over (`hyper::upgrade::on`) and a tunnel task copies bytes both
//! ways until either side closes. The tunnel is bound to the upstream that accepted
//! the upgrade, so a routing switch does not move it; it ends when either peer closes
//! or when the listener's shutdown grace runs out.
//!
//! The request itself is recorded (status 101) and leaves the in-flight count when the
//! 101 is sent: a long-lived WebSocket does not hold a slot's drain open.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::conn::{stopped, ConnState};

/// Spawns the tunnel between the client's and the upstream's upgraded connections.
/// `state` ends it when the listener is stopped for good.
pub fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    mut state: watch::Receiver<ConnState>,
    keep_alive: impl Send + 'static,
) {
    tokio::spawn(async move {
        let _keep_alive = keep_alive;
        let tunnel = async {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        };
        tokio::select! {
            () = tunnel => {}
            () = stopped(&mut state) => {}
        }
    });
}
