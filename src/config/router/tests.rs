//! `[services.<name>.router]`: the default builtin proxy, each kind's defaults and keys,
//! and the messages of their rules.

use super::*;
use std::time::Duration;

use crate::config::{parse, AdminAddr};

fn service(router: &str, listen: bool) -> String {
    let listen = if listen {
        "listen = \"127.0.0.1:8080\"\n"
    } else {
        ""
    };
    format!("[services.web]\n{listen}\n[services.web.runtime]\nkind = \"process\"\ncommand = [\"./web\", \"{{port}}\"]\n\n{router}")
}

fn problems(text: &str) -> Vec<String> {
    parse(text, None)
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

#[test]
fn no_router_table_means_the_builtin_proxy_which_needs_listen() {
    let c = parse(&service("", true), None).unwrap();
    assert_eq!(c.services["web"].router, RouterConfig::Builtin);
    let p = problems(&service("", false));
    assert!(
        p[0].starts_with("services.web.listen: missing required key"),
        "{p:?}"
    );
}

#[test]
fn an_nginx_router_gets_its_defaults_and_needs_no_listen() {
    let text = service("[services.web.router]\nkind = \"nginx\"\ninclude = \"/etc/nginx/cutover/web.conf\"\nverify_listen = \"127.0.0.1:8099\"\n", false);
    let c = parse(&text, None).unwrap();
    let RouterConfig::Nginx(n) = &c.services["web"].router else {
        panic!()
    };
    assert_eq!(n.upstream, "web");
    assert_eq!(n.reload_command, ["nginx", "-s", "reload"]);
    assert_eq!((n.keepalive, n.timeout), (16, Duration::from_secs(10)));
    assert_eq!(c.services["web"].listen, None);
}

#[test]
fn each_kind_reports_keys_of_another_kind_and_proxy_keys_as_mistakes() {
    let text = service("[services.web.router]\nkind = \"haproxy\"\nadmin = \"/run/haproxy/admin.sock\"\ninclude = \"x\"\nweight = 300\n", false);
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|m| m.starts_with("services.web.router.include: unknown key `include`")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m == "services.web.router.weight: expected an integer from 1 to 256, got 300"),
        "{p:?}"
    );
    let text = service(
        "[services.web.router]\nkind = \"haproxy\"\nadmin = \"/run/haproxy/admin.sock\"\n",
        true,
    );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|m| m
                .starts_with("services.web.listen: `listen` configures Cutover's built-in proxy")),
        "{p:?}"
    );
}

#[test]
fn an_unknown_kind_and_missing_required_keys_are_reported() {
    let p = problems(&service("[services.web.router]\nkind = \"envoy\"\n", false));
    assert!(
        p.iter()
            .any(|m| m.contains("router.kind: expected one of \"builtin\", \"nginx\"")),
        "{p:?}"
    );
    let p = problems(&service(
        "[services.web.router]\nkind = \"traefik\"\n",
        false,
    ));
    assert!(
        p.iter()
            .any(|m| m.starts_with("services.web.router.file: missing required key")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("services.web.router.api: missing required key")),
        "{p:?}"
    );
}

#[test]
fn haproxy_admin_is_a_unix_socket_or_a_tcp_address() {
    let text = service("[services.web.router]\nkind = \"haproxy\"\nadmin = \"127.0.0.1:9999\"\nservers = { blue = \"b\", green = \"g\" }\n", false);
    let RouterConfig::Haproxy(h) = parse(&text, None).unwrap().services["web"].router.clone()
    else {
        panic!()
    };
    assert_eq!(h.admin, AdminAddr::Tcp("127.0.0.1:9999".parse().unwrap()));
    assert_eq!(
        (h.blue_server.as_str(), h.green_server.as_str()),
        ("b", "g")
    );
    let text = service("[services.web.router]\nkind = \"caddy\"\n", false);
    let RouterConfig::Caddy(c) = parse(&text, None).unwrap().services["web"].router.clone() else {
        panic!()
    };
    assert_eq!(
        (c.admin.to_string().as_str(), c.id.as_str()),
        ("127.0.0.1:2019", "cutover-web")
    );
}

#[test]
fn admin_apis_may_be_given_by_host_name_and_a_malformed_one_names_its_key() {
    let text = service(
        "[services.web.router]\nkind = \"haproxy\"\nadmin = \"haproxy.lb.svc:9999\"\n",
        false,
    );
    let RouterConfig::Haproxy(h) = parse(&text, None).unwrap().services["web"].router.clone()
    else {
        panic!()
    };
    assert_eq!(
        h.admin,
        AdminAddr::Tcp("haproxy.lb.svc:9999".parse().unwrap())
    );
    let text = service(
        "[services.web.router]\nkind = \"caddy\"\nadmin = \"caddy.internal:2019\"\n",
        false,
    );
    let RouterConfig::Caddy(c) = parse(&text, None).unwrap().services["web"].router.clone() else {
        panic!()
    };
    assert_eq!(c.admin.to_string(), "caddy.internal:2019");
    let text = service(
        "[services.web.router]\nkind = \"traefik\"\nfile = \"dyn.yml\"\napi = \"traefik:8080\"\n",
        false,
    );
    let RouterConfig::Traefik(t) = parse(&text, None).unwrap().services["web"].router.clone()
    else {
        panic!()
    };
    assert_eq!(
        (t.api.to_string(), t.metrics.to_string()),
        ("traefik:8080".into(), "traefik:8080".into())
    );

    let p = problems(&service(
        "[services.web.router]\nkind = \"traefik\"\nfile = \"dyn.yml\"\napi = \"http://traefik:8080\"\nmetrics = \"traefik\"\n",
        false,
    ));
    assert!(
        p.iter()
            .any(|m| m.starts_with("services.web.router.api: ") && m.contains("no scheme")),
        "{p:?}"
    );
    assert!(
        p.iter().any(
            |m| m.starts_with("services.web.router.metrics: ") && m.contains("port is missing")
        ),
        "{p:?}"
    );
}

fn dns_key_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        "key \"cutover\" {\n\talgorithm hmac-sha512;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==\";\n};\n",
    )
    .unwrap();
    f
}

#[test]
fn a_dns_router_gets_its_defaults_and_reads_its_key_file() {
    let key = dns_key_file();
    let text = service(
        &format!("[services.web.router]\nkind = \"dns\"\nserver = \"ns1.example.com:53\"\nzone = \"Example.com.\"\nkey_file = \"{}\"\n", key.path().display()),
        false,
    );
    let c = parse(&text, None).unwrap();
    let RouterConfig::Dns(d) = &c.services["web"].router else {
        panic!()
    };
    assert_eq!(
        (d.zone.as_str(), d.name.as_str()),
        ("example.com.", "web.example.com.")
    );
    assert_eq!(d.ttl, Duration::from_secs(60));
    assert_eq!(
        (d.key.name.as_str(), d.key.algorithm.as_str()),
        ("cutover", "hmac-sha512")
    );
    assert_eq!(d.addresses, None);
    assert_eq!(c.services["web"].listen, None);
}

#[test]
fn a_dns_router_names_each_wrong_key() {
    let key = dns_key_file();
    let p = problems(&service(
        &format!("[services.web.router]\nkind = \"dns\"\nzone = \"example.com\"\nname = \"www.other.org\"\nttl = \"500ms\"\nkey_file = \"{}\"\n\n[services.web.router.addresses]\nblue = [\"192.0.2.1\"]\ngreen = [\"not-an-ip\"]\n", key.path().display()),
        false,
    ));
    let joined = p.join("\n");
    for expected in [
        "services.web.router.server: missing required key",
        "services.web.router.name: expected a name inside the zone",
        "services.web.router.ttl: expected whole seconds",
        "services.web.router.addresses.green[0]: expected an IP address",
    ] {
        assert!(joined.contains(expected), "{expected:?} not in:\n{joined}");
    }
    let p = problems(&service(
        "[services.web.router]\nkind = \"dns\"\nserver = \"127.0.0.1:53\"\nzone = \"example.com\"\nkey_file = \"/nonexistent/key\"\n",
        false,
    ));
    assert!(
        p[0].starts_with("services.web.router.key_file: cannot read"),
        "{p:?}"
    );
}

#[test]
fn a_dns_key_file_other_users_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let key = dns_key_file();
    std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = service(
        &format!("[services.web.router]\nkind = \"dns\"\nserver = \"127.0.0.1:53\"\nzone = \"example.com\"\nkey_file = \"{}\"\n", key.path().display()),
        false,
    );
    let p = problems(&text);
    assert!(
        p[0].starts_with("services.web.router.key_file:") && p[0].contains("chmod 600"),
        "{p:?}"
    );
    // Group-readable is allowed (shared with the DNS server's group).
    std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(parse(&text, None).is_ok());
}
