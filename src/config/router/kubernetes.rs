//! `kind = "kubernetes"`: how `kubectl` reaches the cluster, and which object carries
//! the switch: a Service's selector (`service`, blue-green) or a Gateway API
//! HTTPRoute's backend weights (`httproute`, blue-green and canary).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::kinds::KubernetesRouterConfig;
use crate::config::kube::{access, dns_label, service_name, RawAccess};
use crate::config::kube_types::KubeRoute;
use crate::config::read::{Problems, Read};
use crate::config::rules::{duration, show};
use crate::config::values::RawDuration;
use crate::domain::Slot;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetes {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    kubectl: Option<String>,
    kubeconfig: Option<String>,
    context: Option<String>,
    namespace: Option<String>,
    timeout: Option<RawDuration>,
    service: Option<String>,
    httproute: Option<String>,
    backends: Option<BTreeMap<String, String>>,
    settle: Option<RawDuration>,
}

pub(super) fn kubernetes(
    service: &str,
    r: &Read<RawKubernetes>,
    base: &Path,
    p: &mut Problems,
) -> Option<KubernetesRouterConfig> {
    let access = access(
        r,
        RawAccess {
            kubectl: r.raw.kubectl.as_deref(),
            kubeconfig: r.raw.kubeconfig.as_deref(),
            context: r.raw.context.as_deref(),
            namespace: r.raw.namespace.as_deref(),
            timeout: r.raw.timeout,
        },
        base,
        p,
    );
    let svc = |p: &mut Problems, key: String, name: &str| -> Option<String> {
        if service_name(name) {
            Some(name.to_string())
        } else {
            p.add(
                key,
                format!("expected a Service name (a lower-case letter, then letters, digits and `-`, at most 63), got {name:?}"),
            );
            None
        }
    };
    let target = match (r.raw.service.as_deref(), r.raw.httproute.as_deref()) {
        (Some(_), Some(_)) => {
            p.add(
                r.key("httproute"),
                "set either `service` (a Service's selector is switched) or `httproute` (an HTTPRoute's weights are set), not both",
            );
            None
        }
        (None, Some(route)) => {
            let name = dns_label(route).then(|| route.to_string());
            if name.is_none() {
                p.add(
                    r.key("httproute"),
                    format!("expected an HTTPRoute name (lower-case letters, digits and `-`), got {route:?}"),
                );
            }
            let backends = backends(service, r, p, &svc);
            Some(KubeRoute::HttpRoute {
                name: name?,
                backends: backends?,
            })
        }
        (service_key, None) => {
            if r.raw.backends.is_some() {
                p.add(
                    r.key("backends"),
                    "`backends` names the slots' Services in an HTTPRoute: set `httproute` too, or remove it",
                );
            }
            let name = service_key.unwrap_or(service);
            svc(p, r.key("service"), name).map(|name| KubeRoute::Service { name })
        }
    };
    let settle = duration(
        r,
        "settle",
        r.raw.settle,
        KubernetesRouterConfig::DEFAULT_SETTLE,
    )
    .and_then(|d| {
        if d <= std::time::Duration::from_secs(60) {
            Some(d)
        } else {
            p.add(
                r.key("settle"),
                format!("expected at most 60s, got {}", show(d)),
            );
            None
        }
    });
    Some(KubernetesRouterConfig {
        access: access?,
        target: target?,
        settle: settle?,
    })
}

fn backends(
    service: &str,
    r: &Read<RawKubernetes>,
    p: &mut Problems,
    svc: &dyn Fn(&mut Problems, String, &str) -> Option<String>,
) -> Option<BTreeMap<Slot, String>> {
    let given = r.raw.backends.clone().unwrap_or_default();
    let before = p.count();
    for k in given.keys() {
        if k.parse::<Slot>().is_err() {
            p.add(
                format!("{}.{k}", r.key("backends")),
                format!("expected the slots `blue` and `green`, got {k:?}"),
            );
        }
    }
    let mut out = BTreeMap::new();
    for slot in Slot::ALL {
        let name = given
            .get(slot.as_str())
            .cloned()
            .unwrap_or_else(|| format!("{service}-{slot}"));
        if let Some(n) = svc(p, format!("{}.{slot}", r.key("backends")), &name) {
            out.insert(slot, n);
        }
    }
    if out.contains_key(&Slot::Blue) && out.get(&Slot::Blue) == out.get(&Slot::Green) {
        p.add(
            format!("{}.green", r.key("backends")),
            "expected a Service different from blue's: the weights could not tell the slots apart",
        );
    }
    (p.count() == before).then_some(out)
}
