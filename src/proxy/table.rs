//! The routing table: which endpoint each service's live and preview slots answer on.
//!
//! The table is an immutable snapshot behind an [`ArcSwap`]: the request path does one
//! atomic load and never takes a lock; a switch builds a new snapshot and swaps it in.
//! Requests already forwarded keep their upstream connection, so a switch never cuts
//! an in-flight request (the drain then waits for the old slot's in-flight count).
//!
//! Progressive delivery adds two optional parts next to a service's [`ServiceRoute`]
//! (kept as it was, so a plain blue-green switch looks exactly as before): a weighted
//! [`Split`] of the normal traffic (canary steps) and a [`Mirror`] that copies a
//! sample of it. Both live in the same snapshot, so a request sees one consistent
//! picture with one atomic load; their per-request state is atomics inside them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::mirror::Mirror;
use super::shield::Guard;
use super::split::Split;
use super::stats::SlotStats;
use super::upstream::Upstream;
use crate::domain::Slot;

/// Where one service's traffic goes right now.
#[derive(Debug, Clone, Default)]
pub struct ServiceRoute {
    /// Receives all normal traffic. `None` = nothing deployed yet (503).
    pub live: Option<Upstream>,
    /// Receives requests carrying the preview header, and the preview listener's traffic.
    pub preview: Option<Upstream>,
}

/// Everything the proxy knows about one service's traffic.
#[derive(Debug, Clone, Default)]
pub struct ServiceEntry {
    pub route: ServiceRoute,
    /// When set, normal traffic is split by weight instead of all going to
    /// `route.live` (which is then the split's stable upstream).
    pub split: Option<Arc<Split>>,
    /// When set, a sample of normal traffic is copied to the mirror target.
    pub mirror: Option<Arc<Mirror>>,
    /// While a deployment's previous release runs beside its new one: the shield and
    /// burst trigger over normal traffic to the new slot (`shield`).
    pub guard: Option<Arc<Guard>>,
}

/// An immutable snapshot of every service's route.
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    services: HashMap<String, ServiceEntry>,
}

impl RoutingSnapshot {
    pub fn service(&self, name: &str) -> Option<&ServiceRoute> {
        self.services.get(name).map(|e| &e.route)
    }

    /// The service's route with its split and mirror, if any.
    pub fn entry(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.get(name)
    }
}

/// The shared, atomically swapped routing table.
#[derive(Debug, Default)]
pub struct Routes {
    current: ArcSwap<RoutingSnapshot>,
    /// Serialises writers only (read-copy-update); readers never touch it.
    writer: Mutex<()>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot to route one request with.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingSnapshot>> {
        self.current.load()
    }

    /// A copy of one service's current route.
    pub fn get(&self, service: &str) -> ServiceRoute {
        self.current
            .load()
            .service(service)
            .cloned()
            .unwrap_or_default()
    }

    /// A copy of one service's route, split and mirror.
    pub fn entry(&self, service: &str) -> ServiceEntry {
        self.current
            .load()
            .entry(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces one service's route and returns the one it replaced, so the caller can
    /// drain the upstream that stopped receiving traffic. Ends any weighted split (all
    /// normal traffic to `route.live`); mirroring goes on.
    pub fn set(&self, service: &str, route: ServiceRoute) -> ServiceRoute {
        self.update(service, |e| {
            e.split = None;
            std::mem::replace(&mut e.route, route)
        })
    }

    /// Splits the service's normal traffic as `split` says (its stable upstream becomes
    /// `route.live`; the preview route stays). Returns the route it replaced.
    pub fn set_split(&self, service: &str, split: Split) -> ServiceRoute {
        self.update(service, |e| {
            let previous = e.route.clone();
            e.route.live = Some(split.stable.clone());
            e.split = Some(Arc::new(split));
            previous
        })
    }

    /// Starts (`Some`) or stops (`None`) mirroring the service's normal traffic.
    pub fn set_mirror(&self, service: &str, mirror: Option<Arc<Mirror>>) {
        self.update(service, |e| e.mirror = mirror);
    }

    /// Sets (`Some`) or removes (`None`) the service's guard; returns the one replaced.
    pub fn set_guard(&self, service: &str, guard: Option<Arc<Guard>>) -> Option<Arc<Guard>> {
        self.update(service, |e| std::mem::replace(&mut e.guard, guard))
    }

    /// The burst trigger fired: normal traffic goes back to the guard's previous slot
    /// (the split ends), if `guard` is still the service's guard and normal traffic
    /// still reaches its new slot. One swap, no await: the worker that saw the failure
    /// calls it.
    pub fn trip(&self, service: &str, guard: &Guard) {
        self.update(service, |e| {
            let ours = e.guard.as_deref().is_some_and(|g| std::ptr::eq(g, guard));
            let live_new = e.route.live.as_ref().map(|u| u.slot) == Some(guard.new.slot);
            if ours && (e.split.is_some() || live_new) {
                e.split = None;
                e.route.live = Some(guard.previous.clone());
            }
        });
    }

    /// Read-copy-update of one service's entry under the writer lock.
    fn update<T>(&self, service: &str, change: impl FnOnce(&mut ServiceEntry) -> T) -> T {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let mut services = old.services.clone();
        let out = change(services.entry(service.to_string()).or_default());
        self.current.store(Arc::new(RoutingSnapshot { services }));
        out
    }
}

/// The per-(service, slot) counters, created once at boot from the config.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    slots: HashMap<String, [Arc<SlotStats>; 2]>,
}

impl StatsRegistry {
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let slots = services
            .into_iter()
            .map(|s| (s.to_string(), [Arc::default(), Arc::default()]))
            .collect();
        Self { slots }
    }

    /// Counters of one slot; `None` for a service not in the config.
    pub fn get(&self, service: &str, slot: Slot) -> Option<Arc<SlotStats>> {
        self.slots.get(service).map(|s| s[slot.index()].clone())
    }

    /// Every (service, slot, counters), services in name order.
    pub fn iter(&self) -> Vec<(String, Slot, Arc<SlotStats>)> {
        let mut out: Vec<_> = self
            .slots
            .iter()
            .flat_map(|(name, s)| {
                Slot::ALL.map(|slot| (name.clone(), slot, s[slot.index()].clone()))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_returns_the_replaced_route_and_readers_see_the_new_one() {
        let routes = Routes::new();
        let stats = Arc::new(SlotStats::default());
        let blue = Upstream {
            slot: Slot::Blue,
            endpoint: "127.0.0.1:1".parse().unwrap(),
            stats: stats.clone(),
            tls: None,
        };
        let green = Upstream {
            slot: Slot::Green,
            endpoint: "127.0.0.1:2".parse().unwrap(),
            stats,
            tls: None,
        };
        let held = routes.load();
        let old = routes.set(
            "web",
            ServiceRoute {
                live: Some(blue),
                preview: None,
            },
        );
        assert!(old.live.is_none());
        assert!(
            held.service("web").is_none(),
            "an old snapshot stays as it was"
        );
        let old = routes.set(
            "web",
            ServiceRoute {
                live: Some(green),
                preview: None,
            },
        );
        assert_eq!(old.live.unwrap().slot, Slot::Blue);
        assert_eq!(routes.get("web").live.unwrap().slot, Slot::Green);
    }

    #[test]
    fn a_plain_set_ends_the_split_but_not_the_mirror() {
        use crate::domain::routing::{MirrorSpec, Target};
        let routes = Routes::new();
        let up = |slot, port| Upstream {
            slot,
            endpoint: std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
            stats: Arc::new(SlotStats::default()),
            tls: None,
        };
        let preview = ServiceRoute {
            live: None,
            preview: Some(up(Slot::Green, 2)),
        };
        routes.set("web", preview);
        let spec = MirrorSpec {
            target: Target::new(
                "web",
                Slot::Green,
                std::net::SocketAddr::from(([127, 0, 0, 1], 2)),
            ),
            percent: 5,
            methods: vec!["GET".into()],
        };
        routes.set_mirror("web", Some(Arc::new(Mirror::new(&spec).unwrap())));
        let split = Split::new("web", up(Slot::Blue, 1), up(Slot::Green, 2), 10, true);
        routes.set_split("web", split);
        let e = routes.entry("web");
        assert_eq!(
            e.route.live.unwrap().slot,
            Slot::Blue,
            "live is the stable slot"
        );
        assert_eq!(e.route.preview.unwrap().slot, Slot::Green, "preview stays");
        assert_eq!(e.split.unwrap().percent, 10);
        assert!(e.mirror.is_some());

        routes.set("web", ServiceRoute::default());
        let e = routes.entry("web");
        assert!(e.split.is_none());
        assert!(e.mirror.is_some());
        routes.set_mirror("web", None);
        assert!(routes.entry("web").mirror.is_none());
    }
}
