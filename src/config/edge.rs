//! The public edge's settings (issue #12): what a client on the proxy's public listener
//! may do, and who may call the API.
//!
//! Its own file so the proxy's and API's hardening reads in one place: the `[proxy]`
//! keys for timeouts and limits on the client side (`client_body_timeout`,
//! `max_header_bytes`, `max_header_lines`), whom to believe about forwarded headers
//! (`trusted_proxies`), `allow_connect`, `slot_header`, the `[proxy.preview]` table
//! (preview routes are off unless enabled, and then need a secret), and the `[api]`
//! keys `read_requires_token` and `allowed_hosts`. `validate.rs` calls in here once
//! per section; every key has a safe default.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::raw::{RawApi, RawProxy};
use super::read::{read_opt, Problems, Read};
use super::rules::{duration, int_range, is_env_name, positive};
use super::values::RawDuration;

/// The shortest API token accepted when the API listens on a non-loopback address.
pub const MIN_PUBLIC_TOKEN_LEN: usize = 32;

/// `[proxy]` settings that protect the public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyEdge {
    /// Longest wait for the next bytes of a request body; then 408, the client's fault.
    /// Default 30s.
    pub client_body_timeout: Duration,
    /// Largest request head (request line and headers); larger gets 431. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header lines in a request head; more gets 431. Default 100.
    pub max_header_lines: usize,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed. Default none.
    pub trusted_proxies: Vec<IpNet>,
    /// Pass `CONNECT` on to the app (a tunnel once it answers 2xx) instead of 405.
    /// Default false.
    pub allow_connect: bool,
    /// Add `x-cutover-slot: blue|green` to responses. Default false.
    pub slot_header: bool,
    /// Open client connections one listener serves at once; more wait in the kernel's
    /// accept queue. Default 10000.
    pub max_connections: usize,
    pub preview: PreviewConfig,
    /// Prior-knowledge HTTP/2 (h2c) on plaintext listeners. Default false.
    pub h2c: bool,
    /// `[[proxy.tls]]`: TLS listeners (`tls.rs`). Default none.
    pub tls: Vec<super::tls::TlsListenerConfig>,
}

/// `[proxy.preview]`: reaching the preview slot by header or cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewConfig {
    /// The preview header and cookie route at all. Default false.
    pub enabled: bool,
    /// The secret the header or cookie must carry (or sign a token with): `secret`,
    /// else the variable named by `secret_env`. Required when `enabled`.
    pub secret: Option<String>,
    pub secret_env: String,
    /// Longest life of a token printed by `cutover preview-url`. Default 1h.
    pub token_ttl: Duration,
    /// A service's `preview_listen` may be a non-loopback address (its requests then
    /// need the secret too). Default false.
    pub public_listen: bool,
}

/// `[api]` settings that protect the API.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiEdge {
    /// Read endpoints (and `/metrics`) need the token too. Default false.
    pub read_requires_token: bool,
    /// Host names the API answers to besides loopback addresses and its own listen
    /// address (DNS rebinding protection). Default none.
    pub allowed_hosts: Vec<String>,
}

impl Default for ProxyEdge {
    fn default() -> Self {
        ProxyEdge {
            client_body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_header_lines: 100,
            trusted_proxies: Vec::new(),
            allow_connect: false,
            slot_header: false,
            max_connections: 10_000,
            preview: PreviewConfig::default(),
            h2c: false,
            tls: Vec::new(),
        }
    }
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig {
            enabled: false,
            secret: None,
            secret_env: "CUTOVER_PREVIEW_SECRET".to_string(),
            token_ttl: Duration::from_secs(3600),
            public_listen: false,
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let expected = || format!("expected an address or CIDR like \"10.0.0.0/8\", got {text:?}");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| expected())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(expected)?,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `[proxy.preview]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreview {
    pub enabled: Option<bool>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub token_ttl: Option<RawDuration>,
    pub public_listen: Option<bool>,
}

/// Reads the edge keys of `[proxy]` (and its `[proxy.preview]` table).
pub(super) fn proxy_edge(
    r: &Read<RawProxy>,
    env: super::validate::EnvLookup<'_>,
    p: &mut Problems,
) -> Option<ProxyEdge> {
    let d = ProxyEdge::default();
    let body = duration(
        r,
        "client_body_timeout",
        r.raw.client_body_timeout,
        d.client_body_timeout,
    )
    .and_then(|v| positive(p, r.key("client_body_timeout"), v));
    let bytes = r
        .or(
            "max_header_bytes",
            r.raw.max_header_bytes,
            d.max_header_bytes as i64,
        )
        .and_then(|v| int_range(p, r.key("max_header_bytes"), v, 8192, 1024 * 1024));
    let lines = r
        .or(
            "max_header_lines",
            r.raw.max_header_lines,
            d.max_header_lines as i64,
        )
        .and_then(|v| int_range(p, r.key("max_header_lines"), v, 1, 1000));
    let trusted = r
        .or("trusted_proxies", r.raw.trusted_proxies.clone(), Vec::new())
        .and_then(|list| {
            let before = p.count();
            let nets: Vec<IpNet> = list
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    IpNet::parse(t)
                        .map_err(|m| p.add(format!("{}[{i}]", r.key("trusted_proxies")), m))
                        .ok()
                })
                .collect();
            (p.count() == before).then_some(nets)
        });
    let allow_connect = r.or("allow_connect", r.raw.allow_connect, d.allow_connect);
    let slot_header = r.or("slot_header", r.raw.slot_header, d.slot_header);
    let max_connections = r
        .or(
            "max_connections",
            r.raw.max_connections,
            d.max_connections as i64,
        )
        .and_then(|v| int_range(p, r.key("max_connections"), v, 1, 1_000_000));
    let h2c = r.or("h2c", r.raw.h2c, d.h2c);
    let preview =
        read_opt(r.raw.preview.as_ref(), &r.key("preview"), p).and_then(|pr| preview(&pr, env, p));
    Some(ProxyEdge {
        client_body_timeout: body?,
        max_header_bytes: bytes? as usize,
        max_header_lines: lines? as usize,
        trusted_proxies: trusted?,
        allow_connect: allow_connect?,
        slot_header: slot_header?,
        max_connections: max_connections? as usize,
        preview: preview?,
        h2c: h2c?,
        tls: Vec::new(),
    })
}

fn preview(
    r: &Read<RawPreview>,
    env: super::validate::EnvLookup<'_>,
    p: &mut Problems,
) -> Option<PreviewConfig> {
    let d = PreviewConfig::default();
    let enabled = r.or("enabled", r.raw.enabled, d.enabled);
    let public_listen = r.or("public_listen", r.raw.public_listen, d.public_listen);
    let secret = r.optional("secret", r.raw.secret.clone(), |s| {
        if s.len() < 16 {
            p.add(
                r.key("secret"),
                "expected a secret of at least 16 characters (prefer secret_env)",
            );
            return None;
        }
        Some(s)
    });
    let secret_env = r
        .or("secret_env", r.raw.secret_env.clone(), d.secret_env)
        .and_then(|name| {
            if is_env_name(&name) {
                Some(name)
            } else {
                p.add(
                    r.key("secret_env"),
                    format!("expected an environment variable name, got {name:?}"),
                );
                None
            }
        });
    let token_ttl = duration(r, "token_ttl", r.raw.token_ttl, d.token_ttl)
        .and_then(|v| positive(p, r.key("token_ttl"), v));
    let (enabled, public_listen, secret, secret_env) =
        (enabled?, public_listen?, secret?, secret_env?);
    let secret = secret.or_else(|| env(&secret_env).filter(|v| v.len() >= 16));
    if (enabled || public_listen) && secret.is_none() {
        p.add(
            r.key("secret"),
            format!(
                "preview by header, cookie or a public preview_listen needs a secret of at \
                 least 16 characters: set `secret` or the variable {secret_env}"
            ),
        );
        return None;
    }
    Some(PreviewConfig {
        enabled,
        secret,
        secret_env,
        token_ttl: token_ttl?,
        public_listen,
    })
}

/// Reads the edge keys of `[api]`. `listen` and `token` are the section's own values:
/// a non-loopback API needs a long token.
pub(super) fn api_edge(
    r: &Read<RawApi>,
    listen: Option<SocketAddr>,
    token: Option<&str>,
    p: &mut Problems,
) -> Option<ApiEdge> {
    if let (Some(listen), Some(token)) = (listen, token) {
        if !listen.ip().is_loopback() && token.len() < MIN_PUBLIC_TOKEN_LEN {
            p.add(
                r.key("token"),
                format!(
                    "expected a token of at least {MIN_PUBLIC_TOKEN_LEN} characters when the \
                     API listens on a non-loopback address ({listen}), got {} characters",
                    token.len()
                ),
            );
        }
    }
    let read_requires_token = r.or("read_requires_token", r.raw.read_requires_token, false);
    let allowed_hosts = r
        .or("allowed_hosts", r.raw.allowed_hosts.clone(), Vec::new())
        .and_then(|hosts| {
            let bad: Vec<&String> = hosts
                .iter()
                .filter(|h| {
                    h.is_empty()
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                })
                .collect();
            if let Some(h) = bad.first() {
                p.add(
                    r.key("allowed_hosts"),
                    format!("expected host names like \"cutover.internal\" (no port), got {h:?}"),
                );
                return None;
            }
            Some(hosts.iter().map(|h| h.to_ascii_lowercase()).collect())
        });
    Some(ApiEdge {
        read_requires_token: read_requires_token?,
        allowed_hosts: allowed_hosts?,
    })
}

/// A service's `preview_listen` on a non-loopback address needs
/// `[proxy.preview] public_listen = true`.
pub(super) fn preview_listen_rule(
    at: &str,
    preview_listen: Option<SocketAddr>,
    edge: Option<&ProxyEdge>,
    p: &mut Problems,
) {
    let (Some(addr), Some(edge)) = (preview_listen, edge) else {
        return;
    };
    if !addr.ip().is_loopback() && !edge.preview.public_listen {
        p.add(
            super::read::join(at, "preview_listen"),
            format!(
                "expected a loopback address like \"127.0.0.1:{}\": the preview listener \
                 reaches releases that have not passed their checks (set \
                 [proxy.preview] public_listen = true and a secret to expose it), got {addr}",
                addr.port()
            ),
        );
    }
}

/// The dotted key whose value is at byte `offset` of a TOML `text` (`[table]` headers
/// and `key = value` lines; enough to name the key of a value TOML refused), or `None`
/// when the offset is not in a value.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        } else if (start..end).contains(&offset) {
            let (key, _) = line.split_once('=')?;
            if start + key.len() > offset {
                return None;
            }
            let key = key.trim().trim_matches('"');
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = r#"
[services.web]
listen = "127.0.0.1:8080"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;

    fn parse(extra: &str, env: &[(&str, &str)]) -> Result<super::super::Config, Vec<String>> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        super::super::parse_with_env(&format!("{SERVICE}\n{extra}"), None, &lookup).map_err(|e| {
            e.problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()
        })
    }

    #[test]
    fn every_edge_key_has_a_safe_default() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.proxy.edge, ProxyEdge::default());
        let e = &c.proxy.edge;
        assert_eq!(e.client_body_timeout, Duration::from_secs(30));
        assert_eq!((e.max_header_bytes, e.max_header_lines), (65536, 100));
        assert!(e.trusted_proxies.is_empty() && !e.allow_connect && !e.slot_header);
        assert!(!e.preview.enabled && !e.preview.public_listen && e.preview.secret.is_none());
        assert_eq!(c.api.edge, ApiEdge::default());
    }

    #[test]
    fn edge_keys_are_read_and_the_preview_secret_may_come_from_the_environment() {
        let c = parse(
            r#"
[api]
read_requires_token = true
allowed_hosts = ["Cutover.Internal"]
[proxy]
client_body_timeout = "5s"
max_header_bytes = 16384
max_header_lines = 50
trusted_proxies = ["10.0.0.0/8", "::1"]
allow_connect = true
slot_header = true
[proxy.preview]
enabled = true
token_ttl = "10m"
"#,
            &[("CUTOVER_PREVIEW_SECRET", "0123456789abcdef0123")],
        )
        .unwrap();
        let e = &c.proxy.edge;
        assert_eq!(e.client_body_timeout, Duration::from_secs(5));
        assert_eq!((e.max_header_bytes, e.max_header_lines), (16384, 50));
        assert!(e.trusted_proxies[0].contains("10.9.9.9".parse().unwrap()));
        assert!(e.trusted_proxies[1].contains("::1".parse().unwrap()));
        assert!(e.allow_connect && e.slot_header && e.preview.enabled);
        assert_eq!(e.preview.secret.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(e.preview.token_ttl, Duration::from_secs(600));
        assert!(c.api.edge.read_requires_token);
        assert_eq!(c.api.edge.allowed_hosts, ["cutover.internal"]);
    }

    #[test]
    fn unsafe_edge_settings_are_refused_with_their_key() {
        let problems = parse(
            r#"
[api]
listen = "0.0.0.0:7070"
token = "short"
allowed_hosts = ["host:80"]
[proxy]
client_body_timeout = "0s"
max_header_bytes = 100
max_header_lines = 0
trusted_proxies = ["10.0.0.0/8", "nope"]
[proxy.preview]
enabled = true
"#,
            &[],
        )
        .unwrap_err();
        for key in [
            "api.token: expected a token of at least 32 characters",
            "api.allowed_hosts:",
            "proxy.client_body_timeout:",
            "proxy.max_header_bytes: expected an integer >= 8192, got 100",
            "proxy.max_header_lines:",
            "proxy.trusted_proxies[1]:",
            "proxy.preview.secret:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} not in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }

    #[test]
    fn a_preview_listener_off_loopback_needs_public_listen_and_a_secret() {
        let open = "[services.web]\npreview_listen = \"0.0.0.0:8081\"\n";
        let with = |extra: &str| {
            let text = SERVICE.replace("[services.web]\n", open) + extra;
            super::super::parse_with_env(&text, None, &|_| None)
                .map_err(|e| e.problems.iter().map(|p| p.key.clone()).collect::<Vec<_>>())
        };
        assert_eq!(with("").unwrap_err(), ["services.web.preview_listen"]);
        assert_eq!(
            with("[proxy.preview]\npublic_listen = true\n").unwrap_err(),
            ["proxy.preview.secret"]
        );
        let ok = with("[proxy.preview]\npublic_listen = true\nsecret = \"0123456789abcdef\"\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_number_too_large_for_its_key_names_the_key() {
        let problems =
            parse("[proxy]\nmax_body_bytes = 99999999999999999999999\n", &[]).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("proxy.max_body_bytes: TOML syntax error at line"),
            "{problems:?}"
        );
        assert_eq!(key_at("a = 1\n[x.y]\nb = 2\n", 16), Some("x.y.b".into()));
        assert_eq!(key_at("a = 1\n", 0), None, "on the key, not the value");
    }

    #[test]
    fn networks_contain_their_addresses_and_nothing_else() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one = IpNet::parse("192.168.1.5").unwrap();
        assert!(one.contains("192.168.1.5".parse().unwrap()));
        assert!(!one.contains("192.168.1.6".parse().unwrap()));
        let all = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/", "::/129"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }
}
