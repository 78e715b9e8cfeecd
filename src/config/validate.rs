//! Semantic rules: raw structs → the validated [`Config`], or every problem found.
//!
//! Each piece is built as an `Option`: `None` means a problem was already reported for
//! it. Every piece is built before any is combined, so a mistake in one section never
//! stops the others from being checked; rules that span services (shared listeners,
//! ports) run on whatever parts of each service were readable. This file holds the
//! top-level sections and the cross-service rules; the rules the section files share
//! are in `rules.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::model::{ApiConfig, Config, DaemonConfig, ProxyConfig};
use super::raw::{RawApi, RawConfig, RawDaemon, RawProxy};
use super::read::Problem;
use super::read::{join, read, read_opt, Problems, Read};
use super::rules::{addr, duration, int_range, is_env_name, positive};
use super::service::{self, Draft};

/// Looks up an environment variable (injected so tests need not touch the process env).
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Validates a parsed document. `base` is the directory relative paths are resolved in.
pub(super) fn validate(
    root: toml::Table,
    path: Option<&Path>,
    base: &Path,
    env: EnvLookup<'_>,
) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();
    let root = read::<RawConfig>(&toml::Value::Table(root), "", &mut p)
        .unwrap_or_else(|| Read::absent(""));

    let daemon =
        read_opt(root.raw.daemon.as_ref(), "daemon", &mut p).and_then(|r| daemon(&r, base, &mut p));
    let api = read_opt(root.raw.api.as_ref(), "api", &mut p).and_then(|r| api(&r, env, &mut p));
    let proxy = read_opt(root.raw.proxy.as_ref(), "proxy", &mut p)
        .and_then(|r| proxy(&r, env, base, &mut p));

    let environment = root.optional("environment", root.raw.environment.as_deref(), |e| {
        service::environment("environment", e, &mut p)
    });
    let notifications = super::notify::notifications(root.raw.notifications.as_ref(), &mut p);
    let retention = super::retention::retention(root.raw.retention.as_ref(), &mut p);

    let drafts: Vec<Draft> = root
        .raw
        .services
        .iter()
        .flatten()
        .map(|(name, sub)| service::service(name, sub, base, &mut p))
        .collect();
    if drafts.is_empty() && !root.rejected("services") {
        p.add(
            "services",
            "no service defined, expected at least one [services.<name>] table",
        );
    }
    cross_service_rules(&drafts, api.as_ref().map(|a| a.listen), &mut p);
    if let Some(proxy) = &proxy {
        let listens: Vec<_> = drafts.iter().filter_map(|d| d.listen).collect();
        super::tls::tls_listen_rule(&proxy.edge.tls, &listens, &mut p);
    }
    for d in &drafts {
        super::edge::preview_listen_rule(
            &d.at,
            d.preview_listen,
            proxy.as_ref().map(|c| &c.edge),
            &mut p,
        );
    }

    let problems = p.into_vec();
    if !problems.is_empty() {
        return Err(problems);
    }
    let file_env = environment.flatten();
    let services: Option<BTreeMap<_, _>> = drafts
        .into_iter()
        .map(|d| {
            d.config.map(|mut c| {
                c.environment = c.environment.or_else(|| file_env.clone());
                (d.name, c)
            })
        })
        .collect();
    match (daemon, api, proxy, services, notifications, retention) {
        (
            Some(daemon),
            Some(api),
            Some(proxy),
            Some(services),
            Some(notifications),
            Some(retention),
        ) => {
            let mut config = Config {
                path: path.map(Path::to_path_buf),
                daemon,
                api,
                proxy,
                services,
                notifications,
                retention,
            };
            super::client_tls::resolve_paths(&mut config, base);
            Ok(config)
        }
        // Every `None` above reported a problem, so this cannot happen; say so loudly
        // rather than panic if a rule ever forgets to.
        _ => Err(vec![Problem {
            key: "(internal)".into(),
            message: "configuration rejected without a reported reason (a bug in cutover)".into(),
        }]),
    }
}

fn daemon(r: &Read<RawDaemon>, base: &Path, p: &mut Problems) -> Option<DaemonConfig> {
    let default = DaemonConfig::default();
    let state_dir = r.or(
        "state_dir",
        r.raw.state_dir.as_ref().map(PathBuf::from),
        default.state_dir,
    )?;
    if state_dir.as_os_str().is_empty() {
        p.add(r.key("state_dir"), "expected a directory path, got \"\"");
        return None;
    }
    Some(DaemonConfig {
        state_dir: base.join(state_dir),
    })
}

fn api(r: &Read<RawApi>, env: EnvLookup<'_>, p: &mut Problems) -> Option<ApiConfig> {
    let default = ApiConfig::default();
    let listen = r
        .optional("listen", r.raw.listen.as_deref(), |s| {
            addr(p, r.key("listen"), s)
        })
        .map(|l| l.unwrap_or(default.listen));
    let token = r.optional("token", r.raw.token.clone(), |t| {
        if t.is_empty() {
            p.add(
                r.key("token"),
                "expected a non-empty token, got \"\" (remove the key to use token_env)",
            );
            return None;
        }
        Some(t)
    });
    let token_env = r.or("token_env", r.raw.token_env.clone(), default.token_env);
    let token_env = token_env.and_then(|name| {
        if is_env_name(&name) {
            Some(name)
        } else {
            p.add(
                r.key("token_env"),
                format!(
                    "expected an environment variable name like \"CUTOVER_TOKEN\", got {name:?}"
                ),
            );
            None
        }
    });
    let (listen, token, token_env) = (listen?, token?, token_env?);
    let token = token.or_else(|| env(&token_env).filter(|v| !v.is_empty()));
    let edge = super::edge::api_edge(r, Some(listen), token.as_deref(), p);
    let tls = super::client_tls::api_tls(r, p);
    Some(ApiConfig {
        listen,
        token,
        token_env,
        edge: edge?,
        tls: tls?,
    })
}

fn proxy(
    r: &Read<RawProxy>,
    env: EnvLookup<'_>,
    base: &Path,
    p: &mut Problems,
) -> Option<ProxyConfig> {
    let d = ProxyConfig::default();
    let preview_header = r
        .or(
            "preview_header",
            r.raw.preview_header.clone(),
            d.preview_header,
        )
        .and_then(|h| {
            let lower = h.to_ascii_lowercase();
            match http::HeaderName::from_bytes(lower.as_bytes()) {
                Ok(_) => Some(lower),
                Err(_) => {
                    p.add(
                        r.key("preview_header"),
                        format!("expected a header name like \"x-cutover-preview\", got {h:?}"),
                    );
                    None
                }
            }
        });
    let preview_cookie = r
        .or(
            "preview_cookie",
            r.raw.preview_cookie.clone(),
            d.preview_cookie,
        )
        .and_then(|c| {
            if is_cookie_name(&c) {
                Some(c)
            } else {
                p.add(
                    r.key("preview_cookie"),
                    format!("expected a cookie name like \"cutover-preview\", got {c:?}"),
                );
                None
            }
        });
    let header_read_timeout = duration(
        r,
        "header_read_timeout",
        r.raw.header_read_timeout,
        d.header_read_timeout,
    )
    .and_then(|v| positive(p, r.key("header_read_timeout"), v));
    let max_body_bytes = r
        .or(
            "max_body_bytes",
            r.raw.max_body_bytes,
            d.max_body_bytes as i64,
        )
        .and_then(|v| int_range(p, r.key("max_body_bytes"), v, 1, i64::MAX));
    let upstream_timeout = duration(
        r,
        "upstream_timeout",
        r.raw.upstream_timeout,
        d.upstream_timeout,
    )
    .and_then(|v| positive(p, r.key("upstream_timeout"), v));
    let drain_timeout = duration(r, "drain_timeout", r.raw.drain_timeout, d.drain_timeout);
    let tls = match r.rejected("tls") {
        true => None,
        false => super::tls::tls_listeners(r.raw.tls.as_ref(), base, p),
    };
    let edge = super::edge::proxy_edge(r, env, p)
        .and_then(|e| Some(super::edge::ProxyEdge { tls: tls?, ..e }));
    Some(ProxyConfig {
        preview_header: preview_header?,
        preview_cookie: preview_cookie?,
        header_read_timeout: header_read_timeout?,
        max_body_bytes: max_body_bytes? as u64,
        upstream_timeout: upstream_timeout?,
        drain_timeout: drain_timeout?,
        edge: edge?,
    })
}

/// An RFC 6265 cookie name (a token): visible ASCII without separators.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Rules across services: listeners, hosts, preview listeners and fixed ports must not
/// collide with each other or with the API. Port 0 ("any free port") never collides.
fn cross_service_rules(drafts: &[Draft], api_listen: Option<SocketAddr>, p: &mut Problems) {
    // (listen, host or None for default) → the service that claimed it first.
    let mut claimed: BTreeMap<(SocketAddr, Option<&str>), &str> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        let Some(listen) = d.listen else { continue };
        let listen_key = join(&d.at, "listen");
        if listen.port() != 0 {
            if let Some(api) = api_listen.filter(|a| overlap(*a, listen)) {
                p.add(
                    &listen_key,
                    format!(
                        "{listen} collides with api.listen ({api}), expected a different address"
                    ),
                );
            }
            for other in &drafts[..i] {
                if let Some(o) = other.listen.filter(|o| *o != listen && overlap(*o, listen)) {
                    p.add(&listen_key, format!(
                        "{listen} overlaps {o}, the listen address of service `{}` (same port); use the same address to share a listener, or another port",
                        other.name
                    ));
                }
            }
            let hosts = d.hosts.as_deref().unwrap_or_default();
            if d.hosts.as_ref().is_some_and(Vec::is_empty) {
                if let Some(first) = claim(&mut claimed, (listen, None), &d.name) {
                    p.add(&listen_key, format!(
                        "service `{first}` is already the default service (no `hosts`) on {listen}; at most one default per listen address, give one of them `hosts = [...]`"
                    ));
                }
            }
            for (j, host) in hosts.iter().enumerate() {
                if let Some(first) = claim(&mut claimed, (listen, Some(host)), &d.name) {
                    p.add(format!("{}.hosts[{j}]", d.at), format!(
                        "host {host:?} on {listen} is already routed to service `{first}`, expected each (listen, host) pair to be used once"
                    ));
                }
            }
        }
        if let Some(preview) = d.preview_listen.filter(|a| a.port() != 0) {
            let key = join(&d.at, "preview_listen");
            let mut taken: Vec<(String, SocketAddr)> = drafts
                .iter()
                .filter_map(|o| o.listen.map(|l| (format!("{}.listen", o.at), l)))
                .collect();
            taken.extend(api_listen.map(|a| ("api.listen".to_string(), a)));
            taken.extend(drafts[..i].iter().filter_map(|o| {
                o.preview_listen
                    .map(|l| (format!("{}.preview_listen", o.at), l))
            }));
            for (what, addr) in taken {
                if overlap(addr, preview) {
                    p.add(&key, format!("{preview} collides with {what} ({addr}), expected an address of its own"));
                }
            }
        }
        if let Some(ports) = d.ports {
            let key = format!("{}.runtime.ports", d.at);
            let mut taken: Vec<(String, u16)> = Vec::new();
            for o in drafts {
                taken.extend(o.listen.map(|l| (format!("{}.listen", o.at), l.port())));
                taken.extend(
                    o.preview_listen
                        .map(|l| (format!("{}.preview_listen", o.at), l.port())),
                );
            }
            taken.extend(api_listen.map(|a| ("api.listen".to_string(), a.port())));
            for o in &drafts[..i] {
                if let Some(op) = o.ports {
                    taken.push((format!("{}.runtime.ports.blue", o.at), op.blue));
                    taken.push((format!("{}.runtime.ports.green", o.at), op.green));
                }
            }
            for (slot, port) in [("blue", ports.blue), ("green", ports.green)] {
                for (what, used) in &taken {
                    if *used == port {
                        p.add(
                            format!("{key}.{slot}"),
                            format!(
                                "port {port} is already used by {what}, expected a port of its own"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Claims `slot` for `service`; returns the service that already holds it, if any.
fn claim<'a>(
    claimed: &mut BTreeMap<(SocketAddr, Option<&'a str>), &'a str>,
    slot: (SocketAddr, Option<&'a str>),
    service: &'a str,
) -> Option<&'a str> {
    match claimed.get(&slot) {
        Some(first) => Some(*first),
        None => {
            claimed.insert(slot, service);
            None
        }
    }
}

/// Whether binding both addresses would conflict: same port and same or wildcard IP.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
