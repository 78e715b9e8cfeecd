//! The built-in proxy as a [`Router`]: a switch is one atomic swap of the routing
//! snapshot, so it takes effect for the very next request and never cuts one in flight.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Router, RouterError, Target};
use crate::domain::Slot;
use crate::proxy::stats::StatsSnapshot;
use crate::proxy::table::{Routes, ServiceRoute, StatsRegistry, Upstream};

pub struct BuiltinRouter {
    routes: Arc<Routes>,
    stats: Arc<StatsRegistry>,
}

impl BuiltinRouter {
    pub fn new(routes: Arc<Routes>, stats: Arc<StatsRegistry>) -> Self {
        Self { routes, stats }
    }

    fn upstream(
        &self,
        service: &str,
        target: Option<Target>,
    ) -> Result<Option<Upstream>, RouterError> {
        let Some(t) = target else { return Ok(None) };
        let stats = self
            .stats
            .get(service, t.slot)
            .ok_or_else(|| RouterError::UnknownService(service.to_string()))?;
        Ok(Some(Upstream {
            slot: t.slot,
            addr: t.addr,
            stats,
        }))
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
}
