//! Rules for one `[services.<name>]` table: its addresses. Its runtime is read by
//! `runtime.rs`; how a release of it is judged is in `health.rs`, `smoke.rs` and
//! `watch.rs`.

use std::net::SocketAddr;
use std::path::Path;

use super::kinds::{DnsRouterConfig, KubernetesRouterConfig, RouterConfig};
use super::kube_types::KubeRoute;
use super::model::{RuntimeConfig, ServiceConfig, SlotPorts};
use super::raw::RawService;
use super::read::{join, read, Problems, Read, Sub};
use super::rules::{addr, duration};
use super::runtime::runtime;
use super::Strategy;
use super::{analysis, database, health, hooks, router, smoke, strategy, supervise, watch};

/// What cross-service rules need from a service, kept even when other parts of it are
/// wrong; `config` is the validated service, `None` when any of its parts failed.
pub(super) struct Draft {
    pub name: String,
    /// Dotted key of the service table, e.g. `services.web`.
    pub at: String,
    pub listen: Option<SocketAddr>,
    /// The lower-cased hosts (empty = default service for `listen`); `None` when they
    /// were wrong, so no routing claim is made for this service.
    pub hosts: Option<Vec<String>>,
    pub preview_listen: Option<SocketAddr>,
    pub ports: Option<SlotPorts>,
    pub config: Option<ServiceConfig>,
}

pub(super) fn service(name: &str, sub: &Sub<RawService>, base: &Path, p: &mut Problems) -> Draft {
    let at = join("services", name);
    let mut draft = Draft {
        name: name.to_string(),
        at: at.clone(),
        listen: None,
        hosts: None,
        preview_listen: None,
        ports: None,
        config: None,
    };
    let name_ok = valid_service_name(name);
    if !name_ok {
        p.add(&at, format!(
            "service name {name:?} is not allowed, expected lower-case letters, digits, `_` and `-`, starting with a letter or digit"
        ));
    }
    let Some(r) = read::<RawService>(sub.value(), &at, p) else {
        return draft;
    };
    let router = router::router(name, &at, r.raw.router.as_ref(), base, p);
    // A router table that names an external kind but has its own mistakes (already
    // reported) is still not Cutover's proxy: asking for `listen` too would be a
    // second, wrong error.
    let external = router.as_ref().map_or_else(
        || names_external_router(r.raw.router.as_ref()),
        |rt| !rt.is_builtin(),
    );
    let listen = match router.as_ref().filter(|_| external) {
        None if external => None,
        // Cutover's proxy serves the service: it needs its public address.
        None => r
            .required(
                "listen",
                r.raw.listen.as_deref(),
                "an address like \"127.0.0.1:8080\"",
                p,
            )
            .and_then(|s| addr(p, r.key("listen"), s))
            .map(Some),
        Some(rt) => no_proxy_keys(&r, rt.kind(), p),
    };
    let hosts = r.optional("hosts", r.raw.hosts.as_ref(), |hosts| {
        self::hosts(&r, hosts, p)
    });
    let preview_listen = r.optional("preview_listen", r.raw.preview_listen.as_deref(), |s| {
        addr(p, r.key("preview_listen"), s)
    });
    let warm_for = duration(
        &r,
        "warm_for",
        r.raw.warm_for,
        ServiceConfig::DEFAULT_WARM_FOR,
    );
    let (runtime, ports) = runtime(name, &at, r.raw.runtime.as_ref(), base, p);
    let health = health::health(&at, r.raw.health.as_ref(), p);
    let smoke = smoke::smoke(&at, r.raw.smoke.as_ref(), p);
    let watch = watch::watch(&at, r.raw.watch.as_ref(), p);
    let supervise = supervise::supervise(&at, r.raw.supervise.as_ref(), p);
    let upstream_tls = super::client_tls::upstream_tls(&at, r.raw.upstream_tls.as_ref(), p);
    let analysis = analysis::analysis(&at, r.raw.analysis.as_ref(), p);
    let has_analysis = r.raw.analysis.is_some() || r.rejected("analysis");
    let strategy = strategy::strategy(&at, r.raw.strategy.as_ref(), has_analysis, p);
    if let (Some(RouterConfig::Dns(d)), Some(st), Some(warm)) = (&router, &strategy, warm_for) {
        dns_rules(&r, d, st, warm, p);
    }
    if let (Some(RouterConfig::Kubernetes(k)), Some(st)) = (&router, &strategy) {
        kube_rules(&r, k, runtime.as_ref(), st, p);
    }
    let mirror = strategy::mirror(
        &at,
        r.raw.mirror.as_ref(),
        router.as_ref().map(|rt| rt.kind()),
        p,
    );

    // Hook commands run where the release does, else beside the config file.
    let hook_dir = match &runtime {
        Some(RuntimeConfig::Process(pr)) => pr.workdir.clone(),
        _ => None,
    }
    .unwrap_or_else(|| base.to_path_buf());
    let hooks = match r.rejected("hooks") {
        true => None,
        false => hooks::hooks(&at, r.raw.hooks.as_ref(), hook_dir, p),
    };

    let database = database::database(&at, r.raw.database.as_ref(), base, p);
    if let (Some(RuntimeConfig::Kubernetes(k)), Some(Some(db))) = (&runtime, &database) {
        proof_rules(&at, k, db, p);
    }
    let environment = r.optional("environment", r.raw.environment.as_deref(), |e| {
        self::environment(&r.key("environment"), e, p)
    });
    let shield = super::shield::shield(&at, r.raw.shield.as_ref(), p);
    let burst = super::shield::burst(&at, r.raw.burst.as_ref(), p);

    draft.listen = listen.flatten();
    draft.hosts = hosts.clone().map(Option::unwrap_or_default);
    draft.preview_listen = preview_listen.flatten();
    draft.ports = ports;
    if !name_ok {
        return draft;
    }
    draft.config = (|| {
        Some(ServiceConfig {
            name: name.to_string(),
            listen: listen?,
            hosts: hosts?.unwrap_or_default(),
            preview_listen: preview_listen?,
            runtime: runtime?,
            health: health?,
            smoke: smoke?,
            watch: watch?,
            router: router?,
            warm_for: warm_for?,
            strategy: strategy?,
            mirror: mirror?,
            analysis: analysis?,
            hooks: hooks?,
            supervise: supervise?,
            upstream_tls: upstream_tls?,
            database: database?,
            environment: environment?,
            shield: shield?,
            burst: burst?,
        })
    })();
    draft
}

/// Whether a router table names a kind other than `builtin`, read from the raw table
/// (for when the rest of it was wrong).
fn names_external_router(sub: Option<&Sub<super::raw::RawRouter>>) -> bool {
    sub.and_then(|s| s.value().get("kind"))
        .and_then(toml::Value::as_str)
        .is_some_and(|k| k != "builtin")
}

/// With an external router Cutover's proxy does not serve the service, so its proxy
/// keys would silently do nothing: reject them. `Some(None)` when none is set.
fn no_proxy_keys(r: &Read<RawService>, kind: &str, p: &mut Problems) -> Option<Option<SocketAddr>> {
    let before = p.count();
    for (key, set) in [
        ("listen", r.raw.listen.is_some()),
        ("hosts", r.raw.hosts.is_some()),
        ("preview_listen", r.raw.preview_listen.is_some()),
    ] {
        if set {
            p.add(
                r.key(key),
                format!("`{key}` configures Cutover's built-in proxy, which does not serve this service: its router is kind = \"{kind}\" (remove `{key}`, or use kind = \"builtin\")"),
            );
        }
    }
    (p.count() == before).then_some(None)
}

/// A name points at one slot at a time, and resolvers keep the previous answer for
/// the TTL: no canary steps (no split by weight), and the previous release kept
/// running at least that long after a switch, so a client that cached its address
/// still reaches a running release.
fn dns_rules(
    r: &Read<RawService>,
    d: &DnsRouterConfig,
    strategy: &Strategy,
    warm_for: std::time::Duration,
    p: &mut Problems,
) {
    if matches!(strategy, Strategy::Canary(_)) {
        p.add(
            r.key("strategy"),
            "canary steps split traffic by weight, which a DNS name cannot do: use a blue-green strategy with kind = \"dns\", or a router that splits (builtin, nginx, haproxy, traefik, caddy)",
        );
    }
    if warm_for < d.ttl {
        p.add(
            r.key("warm_for"),
            format!(
                "expected at least the DNS records' ttl ({}): resolvers keep the previous slot's address that long, so the previous release must keep running",
                super::rules::show(d.ttl)
            ),
        );
    }
}

/// The Kubernetes router switches between the pods of Cutover's own Deployments, by
/// the slot label only the Kubernetes runtime puts on them; a Service selector points
/// at one slot at a time, so canary steps need an HTTPRoute.
fn kube_rules(
    r: &Read<RawService>,
    k: &KubernetesRouterConfig,
    runtime: Option<&RuntimeConfig>,
    strategy: &Strategy,
    p: &mut Problems,
) {
    if runtime.is_some_and(|rt| !matches!(rt, RuntimeConfig::Kubernetes(_))) {
        p.add(
            r.key("router"),
            "the kubernetes router switches between the Deployments the kubernetes runtime creates (by their `cutover.dev/slot` label): set [runtime] kind = \"kubernetes\"",
        );
    }
    if matches!(strategy, Strategy::Canary(_)) && matches!(k.target, KubeRoute::Service { .. }) {
        p.add(
            r.key("strategy"),
            "canary steps split traffic by weight, which a Service selector cannot do: set `httproute` in [router] (Gateway API weights), or use a blue-green strategy",
        );
    }
}

/// The database compatibility proof starts the live release once more, outside both
/// slots: on Kubernetes that instance is reached only through `endpoints.extra`.
fn proof_rules(
    at: &str,
    k: &crate::config::KubernetesRuntimeConfig,
    db: &crate::config::DatabaseConfig,
    p: &mut Problems,
) {
    let proves = db.prove && db.strategy == crate::config::DbStrategy::Shared;
    if proves && k.extra_endpoint.is_none() {
        p.add(
            format!("{at}.database.prove"),
            "the compatibility proof runs the live release as a Deployment `<service>-extra` (pods labelled `cutover.dev/slot: extra`) that Cutover reaches at `runtime.endpoints.extra`: set it, like extra = \"web-extra.prod.svc:80\" (a Service selecting those pods), or set prove = false",
        );
    }
}

/// `environment`: a short lower-case name (`production`, `staging`, ...).
pub(super) fn environment(key: &str, value: &str, p: &mut Problems) -> Option<String> {
    let mut chars = value.chars();
    let ok = value.len() <= 64
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Some(value.to_string())
    } else {
        p.add(
            key,
            format!("environment {value:?} is not allowed, expected a lower-case name of at most 64 letters, digits, `_` and `-` such as \"production\" or \"staging\""),
        );
        None
    }
}

/// `[a-z0-9][a-z0-9_-]*`: safe in paths, process names, metric labels and URLs.
fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn hosts(r: &Read<RawService>, hosts: &[String], p: &mut Problems) -> Option<Vec<String>> {
    let before = p.count();
    let mut out: Vec<String> = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let key = format!("{}[{i}]", r.key("hosts"));
        let lower = host.trim().to_ascii_lowercase();
        let valid = !lower.is_empty()
            && !lower.starts_with(['.', '-'])
            && !lower.ends_with('.')
            && lower
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            p.add(
                key,
                format!("expected a host name like \"web.example.com\", got {host:?}"),
            );
        } else if let Some(j) = out.iter().position(|h| *h == lower) {
            p.add(
                key,
                format!("duplicate host {host:?}, already listed as hosts[{j}]"),
            );
        } else {
            out.push(lower);
        }
    }
    (p.count() == before).then_some(out)
}
