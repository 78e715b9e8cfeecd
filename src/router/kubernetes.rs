//! Kubernetes as a [`Router`](super::Router), through `kubectl`, in one of two ways:
//!
//! - **Service selector** (`service`, blue-green): the Service's selector gets
//!   `cutover.dev/slot: <slot>` (a merge patch touching only that key). Before the
//!   patch, some pod the new selector picks must be ready; after it, Cutover waits
//!   until the Service's EndpointSlices list only that slot's pods, and puts the old
//!   selector back if they do not within the timeout.
//! - **Gateway API HTTPRoute** (`httproute`, blue-green and canary): the weights of
//!   the backendRefs naming the slots' Services in the route's rule are set, in one
//!   JSON patch guarded by the route's `resourceVersion` (a concurrent edit is read
//!   again, not overwritten). A slot given weight must have a ready endpoint first.
//!
//! Either way the cluster's data plane (kube-proxy, the gateway) follows the API
//! asynchronously, so `apply` returns `settle` after the change is confirmed. A
//! connection a client already holds to an old pod stays there (that is how
//! kube-proxy works): the previous release keeps serving it while it stays warm.
//! The cluster counts no requests per slot, so the watch's error-rate and latency
//! triggers see nothing with this router (health checks and pod restarts still roll
//! back), and a drain waits a fixed grace.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::external::External;
use super::RouterError;
use crate::config::{KubeRoute, KubernetesRouterConfig, SLOT_LABEL};
use crate::domain::routing::Target;
use crate::domain::Slot;
use crate::kube::{pod_ready, selector, KubeError, Kubectl, PatchType};

/// How often the endpoints are read while waiting for them to follow a change.
const POLL: Duration = Duration::from_millis(200);
/// Attempts at an HTTPRoute change that others keep editing at the same time.
const ATTEMPTS: u32 = 3;

pub struct KubernetesRouter {
    service: String,
    cfg: KubernetesRouterConfig,
    kubectl: Kubectl,
    lock: tokio::sync::Mutex<()>,
}

impl KubernetesRouter {
    pub fn new(service: &str, cfg: KubernetesRouterConfig) -> Self {
        KubernetesRouter {
            service: service.to_string(),
            kubectl: Kubectl::new(cfg.access.clone()),
            cfg,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Points the Service's selector at `slot`, once a pod there is ready, and waits
    /// until its endpoints follow.
    async fn switch_selector(&self, name: &str, slot: Slot) -> Result<(), RouterError> {
        let svc = self.get("service", name).await?;
        let Some(old) = svc["spec"]["selector"]
            .as_object()
            .filter(|s| !s.is_empty())
        else {
            return Err(RouterError::Rejected(format!(
                "Service {name} has no selector: give it one with `{SLOT_LABEL}` (and the labels its pods share)"
            )));
        };
        let mut wanted = old.clone();
        wanted.insert(SLOT_LABEL.into(), json!(slot.as_str()));
        let pairs: Vec<(&str, &str)> = wanted
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
            .collect();
        let picks = selector(&pairs);
        let ready = self.ready_pods(&picks).await?;
        if ready.is_empty() {
            return Err(RouterError::Rejected(format!(
                "no ready pod matches {picks}: the slot's pods are not ready, or the Service's selector has labels they do not carry"
            )));
        }
        let before = old.get(SLOT_LABEL).cloned().unwrap_or(Value::Null);
        if before != json!(slot.as_str()) {
            let stored = self
                .patch(
                    "service",
                    name,
                    PatchType::Merge,
                    &json!({ "spec": { "selector": { SLOT_LABEL: slot.as_str() } } }),
                )
                .await?;
            if stored["spec"]["selector"][SLOT_LABEL] != slot.as_str() {
                return Err(RouterError::Rejected(format!(
                    "the cluster stored Service {name}'s selector as {}",
                    stored["spec"]["selector"]
                )));
            }
        }
        if let Err(e) = self.await_endpoints(name, &picks).await {
            let undo = json!({ "spec": { "selector": { SLOT_LABEL: before } } });
            if let Err(u) = self.patch("service", name, PatchType::Merge, &undo).await {
                tracing::error!(service = %self.service, error = %u, "cannot put the Service's selector back");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits until the Service's ready endpoints are all pods `picks` selects (and
    /// there is one).
    async fn await_endpoints(&self, name: &str, picks: &str) -> Result<(), RouterError> {
        let deadline = tokio::time::Instant::now() + self.cfg.access.timeout;
        let slices = selector(&[("kubernetes.io/service-name", name)]);
        loop {
            let wanted = self.ready_pods(picks).await?;
            let endpoints = self.ready_endpoints(&slices).await?;
            let stray: Vec<&String> = endpoints.iter().filter(|e| !wanted.contains(e)).collect();
            if !endpoints.is_empty() && stray.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RouterError::Rejected(format!(
                    "Service {name}'s endpoints did not move to the pods of {picks} within {}s (ready endpoints: {endpoints:?})",
                    self.cfg.access.timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sets the route's slot weights; `servers` names the slots that get traffic.
    async fn set_weights(
        &self,
        route: &str,
        backends: &BTreeMap<Slot, String>,
        servers: &[(Target, u32)],
    ) -> Result<(), RouterError> {
        let weight_of = |slot: Slot| {
            servers
                .iter()
                .find(|(t, _)| t.slot == slot)
                .map_or(0, |(_, w)| *w)
        };
        for slot in Slot::ALL.into_iter().filter(|s| weight_of(*s) > 0) {
            let svc = &backends[&slot];
            let slices = selector(&[("kubernetes.io/service-name", svc)]);
            if self.ready_endpoints(&slices).await?.is_empty() {
                return Err(RouterError::Rejected(format!(
                    "Service {svc} (slot {slot}) has no ready endpoint: the slot's pods are not ready, or its selector does not pick them"
                )));
            }
        }
        for attempt in 1..=ATTEMPTS {
            let r = self.get("httproute", route).await?;
            let (index, refs) = slot_rule(&r, backends).ok_or_else(|| {
                RouterError::Rejected(format!(
                    "HTTPRoute {route} has no rule whose backendRefs name {} or {}",
                    backends[&Slot::Blue],
                    backends[&Slot::Green]
                ))
            })?;
            let new_refs = reweighted(&refs, backends, weight_of)?;
            let ops = json!([
                { "op": "test", "path": "/metadata/resourceVersion", "value": r["metadata"]["resourceVersion"] },
                { "op": "replace", "path": format!("/spec/rules/{index}/backendRefs"), "value": new_refs },
            ]);
            match self
                .kubectl
                .patch("httproute", route, PatchType::Json, &ops)
                .await
            {
                Ok(stored) => {
                    let got = slot_rule(&stored, backends).map(|(_, refs)| refs);
                    if got.as_ref() != Some(&new_refs) {
                        return Err(RouterError::Rejected(format!(
                            "the cluster stored HTTPRoute {route}'s backendRefs as {got:?}"
                        )));
                    }
                    return Ok(());
                }
                // Someone else changed the route between the read and the patch.
                Err(KubeError::Refused(m)) if attempt < ATTEMPTS && m.contains("test") => {
                    tracing::info!(service = %self.service, route, "HTTPRoute changed meanwhile; reading it again");
                }
                Err(e) => return Err(to_router_error(e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Names of the ready pods `picks` selects.
    async fn ready_pods(&self, picks: &str) -> Result<Vec<String>, RouterError> {
        let pods = self
            .kubectl
            .list("pods", picks)
            .await
            .map_err(to_router_error)?;
        Ok(pods
            .iter()
            .filter(|p| pod_ready(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect())
    }

    /// Pod names behind the ready endpoints of the EndpointSlices `slices` selects.
    async fn ready_endpoints(&self, slices: &str) -> Result<Vec<String>, RouterError> {
        let list = self
            .kubectl
            .list("endpointslices", slices)
            .await
            .map_err(to_router_error)?;
        Ok(list
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] != false)
            .filter_map(|e| e["targetRef"]["name"].as_str().map(String::from))
            .collect())
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Value, RouterError> {
        self.kubectl
            .get(kind, name)
            .await
            .map_err(to_router_error)?
            .ok_or_else(|| {
                RouterError::Rejected(format!(
                    "{kind} {name} does not exist in namespace {}",
                    self.kubectl.namespace()
                ))
            })
    }

    async fn patch(
        &self,
        kind: &str,
        name: &str,
        t: PatchType,
        body: &Value,
    ) -> Result<Value, RouterError> {
        self.kubectl
            .patch(kind, name, t, body)
            .await
            .map_err(to_router_error)
    }
}

fn to_router_error(e: KubeError) -> RouterError {
    match e {
        KubeError::Unreachable(m) => RouterError::Unreachable(format!("kubernetes: {m}")),
        other => RouterError::Rejected(format!("kubernetes: {other}")),
    }
}

/// The first rule of the route whose backendRefs name a slot's Service: its index and
/// backendRefs.
fn slot_rule(route: &Value, backends: &BTreeMap<Slot, String>) -> Option<(usize, Vec<Value>)> {
    let ours = |r: &Value| {
        r["name"]
            .as_str()
            .is_some_and(|n| backends.values().any(|b| b == n))
            && r.get("kind").is_none_or(|k| k == "Service")
    };
    route["spec"]["rules"]
        .as_array()?
        .iter()
        .enumerate()
        .find_map(|(i, rule)| {
            let refs = rule["backendRefs"].as_array()?;
            refs.iter().any(ours).then(|| (i, refs.clone()))
        })
}

/// The rule's backendRefs with each slot's weight set: both slots listed (the missing
/// one copied from the other, port included), other backends left as they are.
fn reweighted(
    refs: &[Value],
    backends: &BTreeMap<Slot, String>,
    weight_of: impl Fn(Slot) -> u32,
) -> Result<Vec<Value>, RouterError> {
    let find = |slot: Slot| refs.iter().find(|r| r["name"] == backends[&slot].as_str());
    let template = find(Slot::Blue)
        .or_else(|| find(Slot::Green))
        .cloned()
        .ok_or_else(|| RouterError::Rejected("the rule names neither slot's Service".into()))?;
    let mut out: Vec<Value> = refs
        .iter()
        .filter(|r| !backends.values().any(|b| r["name"] == b.as_str()))
        .cloned()
        .collect();
    for slot in Slot::ALL {
        let mut r = find(slot).cloned().unwrap_or_else(|| {
            let mut t = template.clone();
            t["name"] = json!(backends[&slot]);
            t
        });
        r["weight"] = json!(weight_of(slot));
        out.insert(slot.index(), r);
    }
    Ok(out)
}

#[async_trait]
impl External for KubernetesRouter {
    const KIND: &'static str = "kubernetes";

    fn service(&self) -> &str {
        &self.service
    }

    fn full_weight(&self) -> u32 {
        100
    }

    async fn install(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        let _guard = self.lock.lock().await;
        match &self.cfg.target {
            KubeRoute::Service { name } => match servers {
                [(target, _)] => self.switch_selector(name, target.slot).await?,
                _ => {
                    return Err(RouterError::Unsupported {
                        router: "kubernetes (Service selector)",
                        what: "split traffic by weight (use an HTTPRoute)",
                    })
                }
            },
            KubeRoute::HttpRoute { name, backends } => {
                self.set_weights(name, backends, servers).await?
            }
        }
        tokio::time::sleep(self.cfg.settle).await;
        Ok(())
    }

    async fn observed(&self) -> Result<Option<Slot>, RouterError> {
        match &self.cfg.target {
            KubeRoute::Service { name } => {
                let svc = self.get("service", name).await?;
                Ok(svc["spec"]["selector"][SLOT_LABEL]
                    .as_str()
                    .and_then(|s| s.parse().ok()))
            }
            KubeRoute::HttpRoute { name, backends } => {
                let r = self.get("httproute", name).await?;
                let Some((_, refs)) = slot_rule(&r, backends) else {
                    return Ok(None);
                };
                let weight = |slot: Slot| {
                    refs.iter()
                        .find(|r| r["name"] == backends[&slot].as_str())
                        // Gateway API: an absent weight is 1.
                        .map_or(0, |r| r["weight"].as_u64().unwrap_or(1))
                };
                let (b, g) = (weight(Slot::Blue), weight(Slot::Green));
                Ok(match b.cmp(&g) {
                    std::cmp::Ordering::Greater => Some(Slot::Blue),
                    std::cmp::Ordering::Less => Some(Slot::Green),
                    std::cmp::Ordering::Equal => None,
                })
            }
        }
    }

    /// The cluster does not count in-flight requests per slot.
    async fn in_flight(&self, _slot: Slot) -> Result<Option<u64>, RouterError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> BTreeMap<Slot, String> {
        BTreeMap::from([
            (Slot::Blue, "web-blue".into()),
            (Slot::Green, "web-green".into()),
        ])
    }

    #[test]
    fn a_routes_rule_is_found_by_the_slots_services_and_reweighted_keeping_its_fields() {
        let route = json!({ "spec": { "rules": [
            { "matches": [{ "path": { "value": "/admin" } }], "backendRefs": [{ "name": "admin", "port": 80 }] },
            { "backendRefs": [{ "name": "web-blue", "port": 8080, "weight": 100 }, { "name": "mirror", "port": 80, "weight": 0 }] },
        ] } });
        let (i, refs) = slot_rule(&route, &backends()).unwrap();
        assert_eq!(i, 1);
        let new = reweighted(
            &refs,
            &backends(),
            |s| if s == Slot::Green { 20 } else { 80 },
        )
        .unwrap();
        assert_eq!(
            new,
            vec![
                json!({ "name": "web-blue", "port": 8080, "weight": 80 }),
                json!({ "name": "web-green", "port": 8080, "weight": 20 }),
                json!({ "name": "mirror", "port": 80, "weight": 0 }),
            ]
        );
        assert!(slot_rule(&json!({ "spec": { "rules": [] } }), &backends()).is_none());
        // A backendRef of another kind with the same name is not the slot's Service.
        let other = json!({ "spec": { "rules": [{ "backendRefs": [{ "name": "web-blue", "kind": "ServiceImport" }] }] } });
        assert!(slot_rule(&other, &backends()).is_none());
    }
}
