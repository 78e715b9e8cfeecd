//! Rules for `[services.<name>.runtime]` with `kind = "kubernetes"`: one Deployment
//! per slot in the user's cluster, through `kubectl`.
//!
//! Validated here down to what the API server would refuse (names, labels, the image
//! reference) and to what Cutover needs to reach a slot (`endpoints`), so a mistake is
//! a config error, not a failed deployment.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::kinds::{KubernetesRuntimeConfig, RuntimeConfig, SlotPorts};
use crate::config::kube::{access, dns_label, label_key, label_value, RawAccess};
use crate::config::kube_types::{EXTRA_SLOT, NAME_LABEL, SLOT_LABEL};
use crate::config::read::{read, Problems};
use crate::config::rules::{
    argv_ok, check_placeholders, container_port, duration, endpoint, env_ok, image, int_range,
    url_path,
};
use crate::config::values::RawDuration;
use crate::domain::Slot;

/// `[services.<name>.runtime]` with `kind = "kubernetes"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesRuntime {
    /// Already used to choose this struct; listed so it is a known key.
    #[allow(dead_code)]
    pub kind: Option<String>,
    pub kubectl: Option<String>,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub timeout: Option<RawDuration>,
    pub image: Option<String>,
    pub port: Option<i64>,
    pub replicas: Option<i64>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub ready_path: Option<String>,
    pub endpoints: Option<BTreeMap<String, String>>,
    pub stop_grace: Option<RawDuration>,
}

pub(super) fn kubernetes(
    service: &str,
    at: &str,
    value: &toml::Value,
    base: &Path,
    p: &mut Problems,
) -> (Option<RuntimeConfig>, Option<SlotPorts>) {
    let Some(r) = read::<RawKubernetesRuntime>(value, at, p) else {
        return (None, None);
    };
    let access = access(
        &r,
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
    if !dns_label(&format!("{service}-green")) {
        p.add(
            at,
            format!("the service name {service:?} cannot name a Kubernetes Deployment (`{service}-blue`): use lower-case letters, digits and `-`, at most 57"),
        );
    }
    let image = image(&r, r.raw.image.as_deref(), p);
    let port = container_port(&r, r.raw.port, p);
    let replicas = r.optional("replicas", r.raw.replicas, |n| {
        int_range(p, r.key("replicas"), n, 1, 1000).map(|n| n as u32)
    });
    let command = r.optional("command", r.raw.command.as_ref(), |argv| {
        argv_ok(p, &r.key("command"), argv).then(|| argv.clone())
    });
    let args = r.optional("args", r.raw.args.as_ref(), |argv| {
        let before = p.count();
        for (i, a) in argv.iter().enumerate() {
            check_placeholders(p, &format!("{}[{i}]", r.key("args")), a);
        }
        (p.count() == before).then(|| argv.clone())
    });
    let env = r.optional("env", r.raw.env.as_ref(), |env| env_ok(&r, env, p));
    let labels = r.optional("labels", r.raw.labels.as_ref(), |labels| {
        let before = p.count();
        for (k, v) in labels {
            let key = format!("{}.{k:?}", r.key("labels"));
            if !label_key(k) {
                p.add(&key, format!("expected a label key like \"app\" or \"example.com/tier\", got {k:?}"));
            } else if k == NAME_LABEL || k.starts_with("cutover.dev/") {
                p.add(&key, format!("Cutover sets `{NAME_LABEL}` and `{SLOT_LABEL}` itself; remove {k:?}"));
            }
            if !label_value(v) {
                p.add(&key, format!("expected a label value (at most 63 letters, digits, `-`, `_`, `.`), got {v:?}"));
            }
        }
        (p.count() == before).then(|| labels.clone())
    });
    let ready_path = r.optional("ready_path", r.raw.ready_path.as_deref(), |path| {
        url_path(p, r.key("ready_path"), path)
    });
    let (endpoints, extra_endpoint) = r
        .required(
            "endpoints",
            r.raw.endpoints.as_ref(),
            "where Cutover reaches each slot, like { blue = \"web-blue.prod.svc:80\", green = \"web-green.prod.svc:80\" } (and `extra` for the database proof's instance)",
            p,
        )
        .and_then(|map| {
            let before = p.count();
            let mut out = BTreeMap::new();
            let mut extra = None;
            for (k, v) in map {
                let key = format!("{}.{k}", r.key("endpoints"));
                match k.parse::<Slot>() {
                    Ok(slot) => {
                        if let Some(e) = endpoint(p, key, v) {
                            out.insert(slot, e);
                        }
                    }
                    Err(_) if k == EXTRA_SLOT => extra = endpoint(p, key, v),
                    Err(_) => p.add(
                        key,
                        format!("expected the slots `blue` and `green`, and `extra` for the database proof's instance, got {k:?}"),
                    ),
                }
            }
            for slot in [Slot::Blue, Slot::Green] {
                if !map.contains_key(slot.as_str()) {
                    p.add(
                        format!("{}.{}", r.key("endpoints"), slot.as_str()),
                        "missing: expected `host:port` where Cutover reaches this slot's pods (its Service)",
                    );
                }
            }
            if out.len() == 2 && out.get(&Slot::Blue) == out.get(&Slot::Green) {
                p.add(
                    format!("{}.green", r.key("endpoints")),
                    "expected an address different from blue's: the checks of one slot would reach the other",
                );
            }
            if let Some(slot) = out.iter().find(|(_, e)| Some(*e) == extra.as_ref()).map(|(s, _)| *s) {
                p.add(
                    format!("{}.extra", r.key("endpoints")),
                    format!("expected an address different from {slot}'s: the proof would check the live slot instead of its own instance"),
                );
            }
            (p.count() == before).then_some((out, extra))
        })
        .unzip();
    let stop_grace = duration(
        &r,
        "stop_grace",
        r.raw.stop_grace,
        std::time::Duration::from_secs(30),
    );

    let config = (|| {
        Some(RuntimeConfig::Kubernetes(KubernetesRuntimeConfig {
            access: access?,
            image: image?,
            port: port?,
            replicas: replicas?.unwrap_or(1),
            command: command?,
            args: args?,
            env: env?.unwrap_or_default(),
            labels: labels?.unwrap_or_default(),
            ready_path: ready_path?,
            endpoints: endpoints?,
            extra_endpoint: extra_endpoint?,
            stop_grace: stop_grace?,
        }))
    })();
    (config, None)
}
