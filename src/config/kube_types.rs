//! The validated types of the Kubernetes runtime and router (`kind = "kubernetes"`).
//!
//! Both reach the cluster through the user's own `kubectl` and kubeconfig, so every
//! way a cluster authenticates (client certificates, tokens, cloud exec plugins)
//! works as it does for the user at the shell. Rules that produce these types are in
//! `runtime/kubernetes.rs` and `router/kubernetes.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

/// The label Cutover puts on a slot's pods (`blue` or `green`); the router's Service
/// selector and the per-slot Services select on it.
pub const SLOT_LABEL: &str = "cutover.dev/slot";
/// The [`SLOT_LABEL`] value of the database proof's extra instance, which runs outside
/// both slots.
pub const EXTRA_SLOT: &str = "extra";
/// The label naming the service on everything Cutover creates.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";

/// How Cutover calls the cluster: `kubectl` with these flags.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeAccess {
    /// The kubectl program. Default `kubectl` (found on `PATH`).
    pub kubectl: PathBuf,
    /// `--kubeconfig`; `None`: kubectl's own default (`KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// `--context`; `None`: the kubeconfig's current context.
    pub context: Option<String>,
    /// The namespace everything is in. Default `default`.
    pub namespace: String,
    /// Time one kubectl call may take. Default 30s.
    pub timeout: Duration,
}

impl KubeAccess {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// `kind = "kubernetes"` runtime: one Deployment per slot, `<service>-<slot>`, written
/// by server-side apply and scaled to zero when the slot stops.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesRuntimeConfig {
    pub access: KubeAccess,
    /// The container image; `{version}`, `{slot}` and `{service}` are substituted.
    pub image: String,
    /// The port the app listens on in the container (`containerPort`).
    pub port: u16,
    /// Pods per slot. Default 1.
    pub replicas: u32,
    /// The container's `command` and `args` (placeholders substituted); `None`: the
    /// image's own entrypoint and command.
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// The container's environment (placeholders substituted).
    pub env: BTreeMap<String, String>,
    /// Extra labels on the pods (a Service selector the user already has may need
    /// them); never `cutover.dev/*` or `app.kubernetes.io/name`.
    pub labels: BTreeMap<String, String>,
    /// The readiness probe's HTTP path on `port`; `None`: no readiness probe (a pod
    /// counts as ready once its container runs).
    pub ready_path: Option<String>,
    /// Where Cutover reaches each slot from outside the pods (its health checks,
    /// smoke tests and, with the built-in proxy, its traffic): a per-slot Service's
    /// address, `host:port` resolved when dialled.
    pub endpoints: BTreeMap<Slot, Endpoint>,
    /// Where Cutover reaches the database compatibility proof's extra instance
    /// (`endpoints.extra`): a Service selecting `cutover.dev/slot: extra`. `None`: the
    /// proof cannot run on this runtime (`prove = false` is then required).
    pub extra_endpoint: Option<Endpoint>,
    /// `terminationGracePeriodSeconds`. Default 30s.
    pub stop_grace: Duration,
}

/// `kind = "kubernetes"` router: what Cutover changes in the cluster to move traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesRouterConfig {
    pub access: KubeAccess,
    pub target: KubeRoute,
    /// How long after the cluster's endpoints show only the new slot Cutover waits
    /// for kube-proxy or the gateway on every node to follow. Default 2s.
    pub settle: Duration,
}

impl KubernetesRouterConfig {
    pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
}

/// Which object carries the switch.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeRoute {
    /// A Service whose selector's `cutover.dev/slot` is set to the live slot
    /// (blue-green only: a selector cannot split by weight).
    Service { name: String },
    /// A Gateway API HTTPRoute whose rule names both slots' Services as backendRefs;
    /// their weights are set (blue-green and canary).
    HttpRoute {
        name: String,
        /// The Service of each slot in the route's backendRefs. Default
        /// `<service>-blue` and `<service>-green`.
        backends: BTreeMap<Slot, String>,
    },
}
