//! The built-in proxy as a [`Router`]: a switch is one atomic swap of the routing
//! snapshot, so it takes effect for the very next request and never cuts one in flight.
//!
//! It does everything progressive delivery asks of a router: exact weighted splits
//! with sticky cookies (`proxy::split`), preview by header and cookie, and mirroring
//! with a comparison report (`proxy::mirror`). Each is a new snapshot swapped in; the
//! request path stays lock-free. The mutexes here guard control-plane bookkeeping only.
//!
//! Stickiness is per service and on by default ([`BuiltinRouter::new`]); turn it off
//! with [`BuiltinRouter::with_sticky`] or [`BuiltinRouter::set_sticky`]. The setting is
//! read when a split is applied, so a change shows from the next `apply_weighted`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{Router, RouterError};
use crate::domain::routing::{MirrorReport, MirrorSpec, Target};
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;
use crate::proxy::mirror::Mirror;
use crate::proxy::shield::Guard;
use crate::proxy::split::Split;
use crate::proxy::table::{Routes, ServiceRoute, StatsRegistry};
use crate::proxy::upstream::Upstream;
use crate::tls::ClientTls;

pub struct BuiltinRouter {
    routes: Arc<Routes>,
    stats: Arc<StatsRegistry>,
    /// Services whose stickiness was turned off (or on) explicitly; default on.
    sticky: Mutex<HashMap<String, bool>>,
    /// The latest mirror of each service, kept after it stops so its report stays
    /// readable until the next one begins.
    mirrors: Mutex<HashMap<String, Arc<Mirror>>>,
    /// Services whose slots serve TLS, with the trust to reach them
    /// (`[services.<name>.upstream_tls]`); set once at start.
    upstream_tls: HashMap<String, Arc<ClientTls>>,
}

impl BuiltinRouter {
    /// A router over the proxy's table; every service sticky.
    pub fn new(routes: Arc<Routes>, stats: Arc<StatsRegistry>) -> Self {
        Self {
            routes,
            stats,
            sticky: Mutex::default(),
            mirrors: Mutex::default(),
            upstream_tls: HashMap::new(),
        }
    }

    /// The services whose slots serve TLS, and how each is trusted.
    pub fn with_upstream_tls(mut self, tls: HashMap<String, ClientTls>) -> Self {
        self.upstream_tls = tls.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        self
    }

    /// Sets stickiness per service (services not listed stay sticky).
    pub fn with_sticky(self, sticky: HashMap<String, bool>) -> Self {
        *lock(&self.sticky) = sticky;
        self
    }

    /// Turns stickiness on or off for one service, from its next weighted split.
    pub fn set_sticky(&self, service: &str, on: bool) {
        lock(&self.sticky).insert(service.to_string(), on);
    }

    fn is_sticky(&self, service: &str) -> bool {
        lock(&self.sticky).get(service).copied().unwrap_or(true)
    }

    /// The service's current split as (stable, canary, canary percent), if any.
    pub fn weights(&self, service: &str) -> Option<(Slot, Slot, u8)> {
        let split = self.routes.entry(service).split?;
        Some((split.stable.slot, split.canary.slot, split.percent))
    }

    fn upstream(
        &self,
        service: &str,
        target: Option<Target>,
    ) -> Result<Option<Upstream>, RouterError> {
        target.map(|t| self.upstream_of(service, t)).transpose()
    }

    /// The target with the counters its requests are recorded in.
    fn upstream_of(&self, service: &str, t: Target) -> Result<Upstream, RouterError> {
        let stats = self
            .stats
            .get(service, t.slot)
            .ok_or_else(|| RouterError::UnknownService(service.to_string()))?;
        Ok(Upstream {
            slot: t.slot,
            endpoint: t.endpoint,
            stats,
            tls: self.upstream_tls.get(service).cloned(),
        })
    }
}

#[async_trait]
impl Router for BuiltinRouter {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    async fn apply(
        &self,
        service: &str,
        live: Option<Target>,
        preview: Option<Target>,
    ) -> Result<(), RouterError> {
        let route = ServiceRoute {
            live: self.upstream(service, live)?,
            preview: self.upstream(service, preview)?,
        };
        self.routes.set(service, route);
        Ok(())
    }

    fn supports_weights(&self) -> bool {
        true
    }

    async fn apply_weighted(
        &self,
        service: &str,
        stable: Target,
        canary: Target,
        canary_percent: u8,
    ) -> Result<(), RouterError> {
        if canary_percent > 100 {
            return Err(RouterError::Rejected(format!(
                "canary weight must be 0..=100, got {canary_percent}"
            )));
        }
        if stable.slot == canary.slot {
            return Err(RouterError::Rejected(format!(
                "stable and canary are both the {} slot",
                stable.slot
            )));
        }
        let split = Split::new(
            service,
            self.upstream_of(service, stable)?,
            self.upstream_of(service, canary)?,
            canary_percent,
            self.is_sticky(service),
        );
        self.routes.set_split(service, split);
        Ok(())
    }

    async fn mirror(&self, service: &str, spec: Option<MirrorSpec>) -> Result<(), RouterError> {
        if self.stats.get(service, Slot::Blue).is_none() {
            return Err(RouterError::UnknownService(service.to_string()));
        }
        let Some(spec) = spec else {
            self.routes.set_mirror(service, None);
            return Ok(());
        };
        // The target is one of the service's slots: it serves TLS when they do.
        let mirror = Mirror::new(&spec).map_err(|e| RouterError::Rejected(e.to_string()))?;
        let mirror = Arc::new(mirror.with_tls(self.upstream_tls.get(service).cloned()));
        lock(&self.mirrors).insert(service.to_string(), mirror.clone());
        self.routes.set_mirror(service, Some(mirror));
        Ok(())
    }

    async fn mirror_report(&self, service: &str) -> Option<MirrorReport> {
        lock(&self.mirrors).get(service).map(|m| m.report())
    }

    async fn observed_live(&self, service: &str) -> Result<Option<Slot>, RouterError> {
        Ok(self.routes.get(service).live.map(|u| u.slot))
    }

    async fn drain(
        &self,
        service: &str,
        slot: Slot,
        timeout: Duration,
    ) -> Result<u64, RouterError> {
        let stats = self
            .stats
            .get(service, slot)
            .ok_or_else(|| RouterError::UnknownService(service.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = stats.in_flight().max(0) as u64;
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stats(&self, service: &str, slot: Slot) -> Option<StatsSnapshot> {
        self.stats.get(service, slot).map(|s| s.snapshot())
    }

    fn protect(
        &self,
        service: &str,
        new: Target,
        previous: Target,
        shield: &crate::config::ShieldConfig,
        burst: Option<&crate::config::BurstConfig>,
    ) -> Option<Arc<Guard>> {
        if new.slot == previous.slot {
            return None;
        }
        let new = self.upstream_of(service, new).ok()?;
        let previous = self.upstream_of(service, previous).ok()?;
        let guard = Arc::new(Guard::new(
            service,
            new,
            previous,
            shield,
            burst,
            &self.routes,
        ));
        self.routes.set_guard(service, Some(guard.clone()));
        Some(guard)
    }

    fn end_trigger(&self, service: &str) {
        if let Some(guard) = self.routes.entry(service).guard {
            guard.disarm_trigger();
        }
    }

    fn shield_retries(&self, service: &str, slot: Slot) -> u64 {
        let retries = self.stats.get(service, slot).map(|s| s.shield_retries());
        retries.map_or(0, |r| r.iter().sum())
    }

    fn unprotect(&self, service: &str) {
        self.routes.set_guard(service, None);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
