//! Routers: where a service's traffic is pointed: the built-in proxy, or a load
//! balancer the user already runs (nginx, HAProxy, Traefik, Caddy; see
//! README.md, "External routers"), a DNS name (`dns.rs`), or a Kubernetes Service
//! selector or Gateway API HTTPRoute (`kubernetes.rs`).
//!
//! The orchestrator only sees [`Router`]. A router must make a change take effect
//! before `apply` returns, report what it actually routes to (so drift shows), and give
//! per-slot request statistics when it can (the watch's rollback triggers read them).

pub mod builtin;
pub mod caddy;
pub mod dns;
pub(crate) mod external;
pub mod haproxy;
pub mod kubernetes;
pub mod nginx;
pub mod traefik;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::routing::{MirrorReport, MirrorSpec, Target};
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("service `{0}` is not known to the router")]
    UnknownService(String),
    #[error("the router rejected the change: {0}")]
    Rejected(String),
    #[error("the router is unreachable: {0}")]
    Unreachable(String),
    #[error("the {router} router cannot {what}")]
    Unsupported {
        router: &'static str,
        what: &'static str,
    },
}

#[async_trait]
pub trait Router: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Sends the service's normal traffic to `live` and preview traffic to `preview`.
    /// Returns once new requests go there. In-flight requests finish where they started.
    async fn apply(
        &self,
        service: &str,
        live: Option<Target>,
        preview: Option<Target>,
    ) -> Result<(), RouterError>;

    /// Whether [`Router::apply_weighted`] works (canary steps need it).
    fn supports_weights(&self) -> bool {
        false
    }

    /// Splits the service's normal traffic: `canary_percent` (0..=100) of requests to
    /// `canary`, the rest to `stable`. Returns once the split is in effect.
    async fn apply_weighted(
        &self,
        service: &str,
        stable: Target,
        canary: Target,
        canary_percent: u8,
    ) -> Result<(), RouterError> {
        let _ = (service, stable, canary, canary_percent);
        Err(RouterError::Unsupported {
            router: self.kind(),
            what: "split traffic by weight",
        })
    }

    /// Copies a sample of the service's live requests to `spec.target` (its responses
    /// are discarded and compared with the live ones), or stops mirroring (`None`).
    async fn mirror(&self, service: &str, spec: Option<MirrorSpec>) -> Result<(), RouterError> {
        let _ = service;
        match spec {
            None => Ok(()),
            Some(_) => Err(RouterError::Unsupported {
                router: self.kind(),
                what: "mirror traffic",
            }),
        }
    }

    /// How mirrored requests compared with the live ones since mirroring began.
    async fn mirror_report(&self, service: &str) -> Option<MirrorReport> {
        let _ = service;
        None
    }

    /// The live slot the router actually routes to now.
    async fn observed_live(&self, service: &str) -> Result<Option<Slot>, RouterError>;

    /// Waits until no request is in flight on `slot` or `timeout` passes; returns the
    /// number still in flight.
    async fn drain(&self, service: &str, slot: Slot, timeout: Duration)
        -> Result<u64, RouterError>;

    /// Cumulative request statistics of one slot, if this router can see them.
    async fn stats(&self, service: &str, slot: Slot) -> Option<StatsSnapshot>;

    /// Guards a deployment's new slot in the data plane while `previous` still runs:
    /// the shield and the burst trigger (`proxy::shield`). Only the built-in proxy
    /// sees requests, so only it guards; the others return `None` and do nothing.
    fn protect(
        &self,
        service: &str,
        new: Target,
        previous: Target,
        shield: &crate::config::ShieldConfig,
        burst: Option<&crate::config::BurstConfig>,
    ) -> Option<std::sync::Arc<crate::proxy::shield::Guard>> {
        let _ = (service, new, previous, shield, burst);
        None
    }

    /// The watch is over: the burst trigger stops firing; the shield goes on while the
    /// previous release stays warm.
    fn end_trigger(&self, service: &str) {
        let _ = service;
    }

    /// Requests to `slot` the shield retried on the previous slot, all reasons.
    fn shield_retries(&self, service: &str, slot: Slot) -> u64 {
        let _ = (service, slot);
        0
    }

    /// The previous release stops (or a new deployment begins): no guard any more.
    fn unprotect(&self, service: &str) {
        let _ = service;
    }
}

/// Builds the router of every configured service; the only place that knows which
/// router kind maps to which implementation. Services without an external router use
/// the built-in proxy (`builtin`).
pub fn routers_from_config(
    config: &crate::config::Config,
    builtin: std::sync::Arc<dyn Router>,
) -> Result<std::collections::HashMap<String, std::sync::Arc<dyn Router>>, RouterError> {
    use crate::config::RouterConfig;
    use std::sync::Arc;
    config
        .services
        .iter()
        .map(|(name, s)| {
            let router: Arc<dyn Router> = match &s.router {
                RouterConfig::Builtin => builtin.clone(),
                RouterConfig::Nginx(c) => Arc::new(nginx::NginxRouter::new(name, c.clone())),
                RouterConfig::Haproxy(c) => Arc::new(haproxy::HaproxyRouter::new(name, c.clone())),
                RouterConfig::Traefik(c) => Arc::new(traefik::TraefikRouter::new(name, c.clone())),
                RouterConfig::Caddy(c) => Arc::new(caddy::CaddyRouter::new(name, c.clone())),
                RouterConfig::Dns(c) => Arc::new(dns::DnsRouter::new(name, c.clone())?),
                RouterConfig::Kubernetes(c) => {
                    Arc::new(kubernetes::KubernetesRouter::new(name, c.clone()))
                }
            };
            Ok((name.clone(), router))
        })
        .collect()
}
