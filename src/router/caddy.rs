//! Caddy as a [`Router`](super::Router), through its admin API. The user's config tags the service's
//! `reverse_proxy` handler with `"@id": "cutover-<service>"`; Cutover changes only that
//! handler's `upstreams` (`PATCH /id/<id>/upstreams`), reads them back from the running
//! config, and returns.
//!
//! Why only that path: Caddy validates the change and keeps the old config when it is
//! rejected (the answer's `error` becomes the deployment's reason). Every admin change
//! is applied by Caddy as a new config whose servers replace the old ones gracefully;
//! in-flight requests finish, but idle keep-alive client connections of the old servers
//! are closed, which a client that just sent a request on one sees as a failed request.
//! README.md, "External routers" gives the measured figures and the recommendation.
//!
//! A canary split uses Caddy's `weighted_round_robin` selection policy. Caddy reports
//! in-flight requests per upstream (`/reverse_proxy/upstreams`), which the drain waits
//! on; it has no per-upstream response counters, so the watch's error-rate and latency
//! triggers see nothing (health checks and exits still roll back).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use http::Method;
use serde_json::{json, Value};

use super::external::{call_json, External};
use super::RouterError;
use crate::config::CaddyRouterConfig;
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::Target;
use crate::domain::Slot;

pub struct CaddyRouter {
    service: String,
    config: CaddyRouterConfig,
    /// Where each slot was last routed to, to name the slot behind an upstream `dial`
    /// (Caddy dials a `host:port` as written, resolving it per connection).
    addrs: Mutex<HashMap<Slot, Endpoint>>,
    lock: tokio::sync::Mutex<()>,
}

impl CaddyRouter {
    pub fn new(service: &str, config: CaddyRouterConfig) -> Self {
        CaddyRouter {
            service: service.to_string(),
            config,
            addrs: Mutex::new(HashMap::new()),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RouterError> {
        call_json(&self.config.admin, method, path, body, self.config.timeout)
            .await
            .map_err(|e| match e {
                RouterError::Rejected(m) => RouterError::Rejected(format!("caddy admin API: {m}")),
                RouterError::Unreachable(m) => RouterError::Unreachable(format!(
                    "caddy admin API: {m} (is Caddy running with its admin endpoint there?)"
                )),
                other => other,
            })
    }

    fn handler_path(&self) -> String {
        format!("/id/{}", self.config.id)
    }

    /// Points the handler at `servers` (weights only when more than one) and checks the
    /// running config says so.
    async fn change(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        let _guard = self.lock.lock().await;
        {
            let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
            for (t, _) in servers {
                addrs.insert(t.slot, t.endpoint.clone());
            }
        }
        let handler = self.admin(Method::GET, &self.handler_path(), None).await?;
        if handler.get("handler").and_then(Value::as_str) != Some("reverse_proxy") {
            return Err(RouterError::Rejected(format!(
                "caddy: `@id` {:?} is not a reverse_proxy handler: {handler}",
                self.config.id
            )));
        }
        let upstreams: Vec<Value> = servers
            .iter()
            .map(|(t, _)| json!({ "dial": t.endpoint.to_string() }))
            .collect();
        let policy = &handler["load_balancing"]["selection_policy"];
        let weighted = policy["policy"] == "weighted_round_robin";
        let want_weights: Option<Vec<u32>> =
            (servers.len() > 1).then(|| servers.iter().map(|(_, w)| *w).collect());
        let same_upstreams = handler["upstreams"] == Value::Array(upstreams.clone());
        let same_policy = match &want_weights {
            Some(w) => weighted && policy["weights"] == json!(w),
            None => !weighted,
        };
        if same_upstreams && same_policy {
            return Ok(());
        }
        if same_policy {
            // The smallest change: only the upstream list.
            let path = format!("{}/upstreams", self.handler_path());
            self.admin(Method::PATCH, &path, Some(&Value::Array(upstreams.clone())))
                .await?;
        } else {
            let mut h = handler.clone();
            h["upstreams"] = Value::Array(upstreams.clone());
            match &want_weights {
                Some(w) => {
                    h["load_balancing"]["selection_policy"] =
                        json!({ "policy": "weighted_round_robin", "weights": w })
                }
                None => {
                    if let Some(lb) = h.get_mut("load_balancing").and_then(Value::as_object_mut) {
                        lb.remove("selection_policy");
                    }
                }
            }
            self.admin(Method::PATCH, &self.handler_path(), Some(&h))
                .await?;
        }
        let now = self
            .admin(
                Method::GET,
                &format!("{}/upstreams", self.handler_path()),
                None,
            )
            .await?;
        if now != Value::Array(upstreams.clone()) {
            return Err(RouterError::Rejected(format!(
                "caddy: after the change the running upstreams are {now}, expected {}",
                Value::Array(upstreams)
            )));
        }
        Ok(())
    }

    fn addr_of(&self, slot: Slot) -> Option<Endpoint> {
        self.addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .cloned()
    }
}

#[async_trait]
impl External for CaddyRouter {
    const KIND: &'static str = "caddy";

    fn service(&self) -> &str {
        &self.service
    }

    fn full_weight(&self) -> u32 {
        1
    }

    async fn install(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        self.change(servers).await
    }

    async fn observed(&self) -> Result<Option<Slot>, RouterError> {
        let ups = self
            .admin(
                Method::GET,
                &format!("{}/upstreams", self.handler_path()),
                None,
            )
            .await?;
        let first: Option<Endpoint> = ups[0]["dial"].as_str().and_then(|d| d.parse().ok());
        Ok(first.and_then(|a| {
            Slot::ALL
                .into_iter()
                .find(|s| self.addr_of(*s).as_ref() == Some(&a))
        }))
    }

    /// Caddy's own in-flight count for the slot's address.
    async fn in_flight(&self, slot: Slot) -> Result<Option<u64>, RouterError> {
        let Some(addr) = self.addr_of(slot) else {
            return Ok(Some(0));
        };
        let all = self
            .admin(Method::GET, "/reverse_proxy/upstreams", None)
            .await?;
        Ok(Some(
            all.as_array()
                .into_iter()
                .flatten()
                .filter(|u| u["address"].as_str() == Some(addr.to_string().as_str()))
                .filter_map(|u| u["num_requests"].as_u64())
                .sum::<u64>(),
        ))
    }
}
