//! Traefik as a [`Router`](super::Router), through the file provider: Cutover owns one dynamic
//! configuration file holding a weighted service `<service>` over the slot services
//! `<service>-blue` / `<service>-green` (each a load balancer with the slot's URL).
//! The user's routers point at `<service>@file`.
//!
//! A change is one atomic rename of that file; Traefik's watcher picks it up and swaps
//! its handlers in-process (no listener restarts, keep-alive clients are not cut).
//! Traefik applies file changes asynchronously (and throttles them, 2s by default), so
//! `apply` returns only once Traefik's API reports the new weights and URLs; if that
//! does not happen within the timeout, the previous file is put back and the
//! deployment fails before the switch.
//!
//! Statistics come from Traefik's Prometheus metrics per slot service
//! (`traefik_service_requests_total`, `traefik_service_request_duration_seconds`):
//! status classes and the latency histogram, as coarse as Traefik's buckets (set
//! `metrics.prometheus.buckets` finer for a sharper p95). A 502/504 Traefik returns
//! when a slot is unreachable is a 5xx like any other.

mod metrics;

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use serde_json::Value;

use super::external::{call_json, read_or_empty, with_suffix, write_atomic, External};
use super::RouterError;
use crate::config::TraefikRouterConfig;
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::Target;
use crate::domain::stats::StatsSnapshot;
use crate::domain::Slot;

pub struct TraefikRouter {
    service: String,
    config: TraefikRouterConfig,
    lock: tokio::sync::Mutex<()>,
}

impl TraefikRouter {
    pub fn new(service: &str, config: TraefikRouterConfig) -> Self {
        TraefikRouter {
            service: service.to_string(),
            config,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn child(&self, slot: Slot) -> String {
        format!("{}-{slot}", self.service)
    }

    /// The dynamic configuration (YAML) for `(target, weight)` pairs.
    pub fn render(&self, servers: &[(Target, u32)]) -> String {
        let mut out = format!(
            "# Managed by Cutover for service `{}`: rewritten on every switch (the previous\n\
             # version is kept next to it as .prev). Do not edit by hand.\n\
             http:\n  services:\n    {}:\n      weighted:\n        services:\n",
            self.service, self.service
        );
        for (t, w) in servers {
            out.push_str(&format!(
                "          - name: {}\n            weight: {w}\n",
                self.child(t.slot)
            ));
        }
        for (t, _) in servers {
            out.push_str(&format!(
                "    {}:\n      loadBalancer:\n        servers:\n          - url: \"http://{}\"\n",
                self.child(t.slot),
                t.endpoint
            ));
        }
        out
    }

    async fn write_and_wait(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        let c = &self.config;
        let _guard = self.lock.lock().await;
        let text = self.render(servers);
        let previous = read_or_empty(&c.file)?;
        if previous == text && self.loaded(servers).await.is_ok() {
            return Ok(());
        }
        write_atomic(&with_suffix(&c.file, ".prev"), &previous)?;
        write_atomic(&c.file, &text)?;
        let deadline = tokio::time::Instant::now() + c.timeout;
        loop {
            match self.loaded(servers).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    write_atomic(&c.file, &previous)?;
                    return Err(match e {
                        RouterError::Rejected(m) => RouterError::Rejected(format!(
                            "traefik did not load the new configuration within {:?}: {m}",
                            c.timeout
                        )),
                        other => other,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn api(&self, path: &str) -> Result<Value, RouterError> {
        call_json(
            &self.config.api,
            Method::GET,
            path,
            None,
            Duration::from_secs(2),
        )
        .await
    }

    /// Whether Traefik's running configuration is exactly `servers`.
    async fn loaded(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        let p = &self.config.provider;
        let weighted = self
            .api(&format!("/api/http/services/{}@{p}", self.service))
            .await?;
        if let Some(err) = weighted.get("err") {
            return Err(RouterError::Rejected(format!(
                "traefik reports an error on {}@{p}: {err}",
                self.service
            )));
        }
        let mut have: Vec<(String, u64)> = weighted["weighted"]["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_string(),
                    s["weight"].as_u64().unwrap_or(1),
                )
            })
            .collect();
        let mut want: Vec<(String, u64)> = servers
            .iter()
            .map(|(t, w)| (self.child(t.slot), u64::from(*w)))
            .collect();
        have.sort();
        want.sort();
        if have != want {
            return Err(RouterError::Rejected(format!(
                "weights are {have:?}, expected {want:?}"
            )));
        }
        for (t, _) in servers {
            let child = self
                .api(&format!("/api/http/services/{}@{p}", self.child(t.slot)))
                .await?;
            let url = format!("http://{}", t.endpoint);
            let urls: Vec<&str> = child["loadBalancer"]["servers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["url"].as_str())
                .collect();
            if urls != [url.as_str()] {
                return Err(RouterError::Rejected(format!(
                    "{} has {urls:?}, expected [{url:?}]",
                    self.child(t.slot)
                )));
            }
        }
        Ok(())
    }

    fn slot_of_child(&self, name: &str) -> Option<Slot> {
        let name = name.split('@').next().unwrap_or(name);
        Slot::ALL.into_iter().find(|s| self.child(*s) == name)
    }

    /// The metrics endpoint (for tests and docs).
    pub fn metrics_addr(&self) -> &Endpoint {
        &self.config.metrics
    }
}

#[async_trait]
impl External for TraefikRouter {
    const KIND: &'static str = "traefik";

    fn service(&self) -> &str {
        &self.service
    }

    fn full_weight(&self) -> u32 {
        100
    }

    async fn install(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        self.write_and_wait(servers).await
    }

    async fn observed(&self) -> Result<Option<Slot>, RouterError> {
        let v = self
            .api(&format!(
                "/api/http/services/{}@{}",
                self.service, self.config.provider
            ))
            .await?;
        Ok(v["weighted"]["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    self.slot_of_child(s["name"].as_str()?)?,
                    s["weight"].as_u64().unwrap_or(1),
                ))
            })
            .filter(|(_, w)| *w > 0)
            .max_by_key(|(_, w)| *w)
            .map(|(slot, _)| slot))
    }

    /// Traefik does not report in-flight requests per service.
    async fn in_flight(&self, _slot: Slot) -> Result<Option<u64>, RouterError> {
        Ok(None)
    }

    async fn slot_stats(&self, slot: Slot) -> Option<StatsSnapshot> {
        let resp = super::external::call(
            &self.config.metrics,
            Method::GET,
            "/metrics",
            None,
            Duration::from_secs(2),
        )
        .await
        .ok()?;
        let name = format!("{}@{}", self.child(slot), self.config.provider);
        Some(metrics::service_stats(
            &String::from_utf8_lossy(&resp.body),
            &name,
        ))
    }
}
