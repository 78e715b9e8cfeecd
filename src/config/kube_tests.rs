//! `kind = "kubernetes"` runtime and router: every key, the defaults, and the messages
//! of their rules, alone and together (the router needs the runtime's Deployments).

use std::path::Path;
use std::time::Duration;

use crate::config::*;
use crate::domain::Slot;

const RUNTIME: &str = r#"[services.web.runtime]
kind = "kubernetes"
image = "registry.example.com/web:{version}"
port = 8080
endpoints = { blue = "web-blue.shop.svc:80", green = "web-green.shop.svc:80" }
"#;

fn parse_text(text: &str) -> Result<Config, ConfigError> {
    parse(text, Some(Path::new("/etc/cutover/cutover.toml")))
}

fn problems(text: &str) -> String {
    let err = parse_text(text).expect_err("expected problems, the config parsed");
    err.problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_kubernetes_runtime_gets_its_defaults() {
    let text = format!("[services.web]\nlisten = \"127.0.0.1:8080\"\n{RUNTIME}");
    let c = parse_text(&text).unwrap();
    let RuntimeConfig::Kubernetes(k) = &c.services["web"].runtime else {
        panic!("{:?}", c.services["web"].runtime)
    };
    assert_eq!(k.access.kubectl, Path::new("kubectl"));
    assert_eq!(k.access.kubeconfig, None);
    assert_eq!(k.access.namespace, "default");
    assert_eq!(k.access.timeout, Duration::from_secs(30));
    assert_eq!((k.port, k.replicas), (8080, 1));
    assert_eq!(
        k.endpoints[&Slot::Green].to_string(),
        "web-green.shop.svc:80"
    );
    assert_eq!(k.stop_grace, Duration::from_secs(30));
    assert_eq!(k.ready_path, None);
    assert_eq!(k.extra_endpoint, None);
}

/// [`RUNTIME`] with `endpoints.extra` at `addr`.
fn runtime_with_extra(addr: &str) -> String {
    let green = "green = \"web-green.shop.svc:80\"";
    RUNTIME.replace(
        &format!("{green} }}"),
        &format!("{green}, extra = \"{addr}\" }}"),
    )
}

#[test]
fn the_database_proof_on_kubernetes_needs_the_extra_endpoint() {
    let db =
        "[services.web.database]\nurl = \"postgres://app@db:5432/shop\"\nmigrations = \"db\"\n";
    let text = format!("[services.web]\nlisten = \"127.0.0.1:8080\"\n{RUNTIME}{db}");
    let p = problems(&text);
    assert!(
        p.starts_with("services.web.database.prove: the compatibility proof runs the live release as a Deployment `<service>-extra`")
            && p.contains("runtime.endpoints.extra")
            && p.contains("prove = false"),
        "{p}"
    );
    // Either answer is accepted.
    parse_text(&format!("{text}prove = false\n")).unwrap();
    let with_extra = runtime_with_extra("web-extra.shop.svc:80");
    let c = parse_text(&format!(
        "[services.web]\nlisten = \"127.0.0.1:8080\"\n{with_extra}{db}"
    ))
    .unwrap();
    let RuntimeConfig::Kubernetes(k) = &c.services["web"].runtime else {
        panic!()
    };
    assert_eq!(
        k.extra_endpoint
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("web-extra.shop.svc:80")
    );
    // `separate` gives each slot its own clone and runs no proof.
    parse_text(&format!("{text}strategy = \"separate\"\n")).unwrap();
    // The extra instance's address must not be a slot's.
    let same = runtime_with_extra("web-blue.shop.svc:80");
    let p = problems(&format!(
        "[services.web]\nlisten = \"127.0.0.1:8080\"\n{same}"
    ));
    assert!(
        p.contains(
            "services.web.runtime.endpoints.extra: expected an address different from blue's"
        ),
        "{p}"
    );
}

#[test]
fn a_kubernetes_runtime_names_each_wrong_key() {
    let text = r#"[services.web]
listen = "127.0.0.1:8080"
[services.web.runtime]
kind = "kubernetes"
namespace = "Shop_Prod"
kubeconfig = "kube/config"
image = "web {version}"
port = 0
replicas = 0
labels = { "cutover.dev/slot" = "x", "bad key!" = "v", tier = "-api" }
ready_path = "ready"
endpoints = { blue = "web:80", purple = "x:1" }
volumes = []
"#;
    let p = problems(text);
    for expected in [
        "services.web.runtime.namespace: expected a namespace name",
        "services.web.runtime.image: expected an image reference",
        "services.web.runtime.port: expected",
        "services.web.runtime.replicas: expected",
        "Cutover sets `app.kubernetes.io/name` and `cutover.dev/slot` itself",
        "expected a label key",
        "expected a label value",
        "services.web.runtime.ready_path: expected a path starting with \"/\"",
        "services.web.runtime.endpoints.purple: expected the slots `blue` and `green`",
        "services.web.runtime.endpoints.green: missing",
        "services.web.runtime.volumes",
    ] {
        assert!(p.contains(expected), "{expected:?} not in:\n{p}");
    }
    // A service name Kubernetes cannot take.
    let p = problems(&format!(
        "[services.my_web]\nlisten = \"127.0.0.1:8080\"\n{}",
        RUNTIME.replace("services.web", "services.my_web")
    ));
    assert!(p.contains("cannot name a Kubernetes Deployment"), "{p}");
}

#[test]
fn a_kubernetes_router_switches_a_service_by_default_or_an_httproute() {
    let text = format!("[services.web]\n{RUNTIME}\n[services.web.router]\nkind = \"kubernetes\"\nnamespace = \"shop\"\nkubeconfig = \"kube/config\"\ncontext = \"prod\"\n");
    let c = parse_text(&text).unwrap();
    let RouterConfig::Kubernetes(k) = &c.services["web"].router else {
        panic!()
    };
    assert_eq!(k.target, KubeRoute::Service { name: "web".into() });
    assert_eq!(
        k.access.kubeconfig.as_deref(),
        Some(Path::new("/etc/cutover/kube/config"))
    );
    assert_eq!(k.access.context.as_deref(), Some("prod"));
    assert_eq!(k.settle, Duration::from_secs(2));
    assert_eq!(
        c.services["web"].listen, None,
        "Cutover's proxy does not serve it"
    );

    let text = format!("[services.web]\n{RUNTIME}\n[services.web.router]\nkind = \"kubernetes\"\nhttproute = \"web\"\nsettle = \"0s\"\n\n[services.web.strategy]\nkind = \"canary\"\nsteps = [ {{ weight = 20 }} ]\n");
    let c = parse_text(&text).unwrap();
    let RouterConfig::Kubernetes(k) = &c.services["web"].router else {
        panic!()
    };
    let KubeRoute::HttpRoute { name, backends } = &k.target else {
        panic!("{:?}", k.target)
    };
    assert_eq!(name, "web");
    assert_eq!(backends[&Slot::Blue], "web-blue");
    assert_eq!(backends[&Slot::Green], "web-green");
    assert_eq!(k.settle, Duration::ZERO);
}

#[test]
fn a_kubernetes_router_refuses_what_it_cannot_do() {
    // A selector cannot split; the router needs the runtime's labelled Deployments.
    let text = "[services.web]\n[services.web.runtime]\nkind = \"process\"\ncommand = [\"./web\", \"{port}\"]\n\n[services.web.router]\nkind = \"kubernetes\"\n\n[services.web.strategy]\nkind = \"canary\"\nsteps = [ { weight = 20 } ]\n";
    let p = problems(text);
    assert!(
        p.contains("services.web.router: the kubernetes router switches between the Deployments"),
        "{p}"
    );
    assert!(p.contains("services.web.strategy: canary steps split traffic by weight, which a Service selector cannot do"), "{p}");
    let text = format!("[services.web]\n{RUNTIME}\n[services.web.router]\nkind = \"kubernetes\"\nservice = \"web\"\nhttproute = \"web\"\nbackends = {{ blue = \"same\", green = \"same\" }}\nsettle = \"2m\"\n");
    let p = problems(&text);
    assert!(p.contains("set either `service`"), "{p}");
    assert!(
        p.contains("services.web.router.settle: expected at most 60s"),
        "{p}"
    );
    let text = format!("[services.web]\n{RUNTIME}\n[services.web.router]\nkind = \"kubernetes\"\nhttproute = \"web\"\nbackends = {{ blue = \"same\", green = \"same\" }}\n");
    let p = problems(&text);
    assert!(
        p.contains("services.web.router.backends.green: expected a Service different from blue's"),
        "{p}"
    );
    let text = format!("[services.web]\n{RUNTIME}\n[services.web.router]\nkind = \"kubernetes\"\nservice = \"Web\"\n");
    assert!(problems(&text).contains("services.web.router.service: expected a Service name"));
}
