//! Header rewriting on the way through: hop-by-hop headers out, `X-Forwarded-*` in.
//!
//! Hop-by-hop headers describe one TCP hop (RFC 9110 §7.6.1), so a proxy must not pass
//! them on: `Connection` and every header it names, plus the fixed list below. An
//! upgrade (WebSocket) is the one exception: `Upgrade` and `Connection: upgrade` must
//! reach the upstream, and its 101 must reach the client, or the handshake fails.
//!
//! Everything here works in place on the `HeaderMap` hyper parsed. Removing a header
//! named by `Connection` looks it up by `&str`, which `http` lower-cases on the stack,
//! so the common case allocates nothing; only a client that already sent
//! `X-Forwarded-For` costs one allocation (the joined value).

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, COOKIE, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Added to every proxied response: the slot (`blue`/`green`) that answered.
pub const X_CUTOVER_SLOT: HeaderName = HeaderName::from_static("x-cutover-slot");

/// Hop-by-hop headers that are always removed (`Upgrade` is handled separately).
const HOP_BY_HOP: [HeaderName; 7] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

/// Whether `Connection` lists `token` (case-insensitive, comma-separated, any number of
/// `Connection` lines).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// A request asking to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

/// Removes hop-by-hop headers. With `keep_upgrade`, `Upgrade` stays and `Connection` is
/// reduced to `upgrade` (so the next hop sees the handshake and nothing else).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the few names a message has, then a `remove` only for those
    // present: most messages carry none of these (every HTTP/2 request) or only
    // `Connection`, and a `remove` per listed name costs a hash and a probe each
    // (3,000 instructions per request in the HTTP/2 profile, BENCHMARKS.md).
    let (mut connection, mut upgrade, mut present) = (false, false, 0u8);
    for k in headers.keys() {
        if k == CONNECTION {
            connection = true;
        } else if k == UPGRADE {
            upgrade = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if connection {
        remove_connection_named(headers, keep_upgrade);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(UPGRADE);
    }
}

/// Removes `Connection` and every header it names.
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Nearly always a single `Connection` line: handle it without collecting.
    let mut values = headers.get_all(CONNECTION).iter();
    let first = values.next().cloned();
    let rest: Vec<HeaderValue> = values.cloned().collect();
    headers.remove(CONNECTION);
    for value in first.iter().chain(rest.iter()) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case(b"upgrade")) {
                continue;
            }
            if let Ok(name) = std::str::from_utf8(token) {
                headers.remove(name);
            }
        }
    }
}

pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Sets the `X-Forwarded-*` headers of a request about to be forwarded. From a
/// `trusted` peer (in `proxy.trusted_proxies`) the client's address is appended to
/// `X-Forwarded-For`, `-Proto` and `-Host` are set only when absent and `Forwarded` is
/// kept; from anyone else (the default) all of them are replaced by what this proxy
/// saw, so an app never believes a hop a client made up. `client_ip` is computed once
/// per connection.
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue, trusted: bool, https: bool) {
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    if !trusted {
        headers.remove(FORWARDED);
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
        headers.insert(X_FORWARDED_PROTO, proto.clone());
        match headers.get(HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
        return;
    }
    match headers.entry(X_FORWARDED_FOR) {
        http::header::Entry::Vacant(e) => {
            e.insert(client_ip.clone());
        }
        http::header::Entry::Occupied(mut e) => {
            let mut joined: Vec<u8> = Vec::with_capacity(64);
            for v in e.iter() {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(v.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
                e.insert(v);
            }
        }
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        if let Some(host) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// Removes every `x-cutover-*` header: the proxy's own (`x-cutover-mirror`, the slot,
/// the preview header's default name) are never taken from a client.
pub fn strip_cutover(headers: &mut HeaderMap) {
    let ours = |k: &HeaderName| k.as_str().starts_with("x-cutover-");
    if !headers.keys().any(ours) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| ours(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// RFC 9113 §8.2.3: an HTTP/2 client may send its cookies as several `cookie` fields
/// (browsers do, for HPACK's sake); they must be joined with `"; "` before the request
/// goes on as HTTP/1.1, where an app reads one `Cookie` header. One field: untouched.
pub fn join_cookie_fields(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(COOKIE, v);
    }
}

/// Whether a `Host` value (or an absolute-form target's authority) is a valid
/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name or IPv4
/// address of unreserved, sub-delims and percent characters, or a bracketed IPv6
/// literal; not empty, no userinfo, a port of digits.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &value[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
        {
            return false;
        }
        value.split_at(end + 1)
    } else {
        let at = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let host = &value[..at];
        let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
        if host.is_empty() || !host.iter().all(reg_name) {
            return false;
        }
        value.split_at(at)
    };
    let _ = host;
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// The host part of a `Host` header or URI authority: port removed, IPv6 brackets
/// kept (`[::1]:80` → `[::1]`). Not lower-cased.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, _port)) => name,
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_connection_and_the_headers_it_names_and_the_fixed_list() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom"),
            ("connection", "x-other"),
            ("x-custom", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn each_listed_header_alone_is_stripped_and_a_clean_message_is_untouched() {
        for name in HOP_BY_HOP.iter().chain([&UPGRADE, &CONNECTION]) {
            let mut h = map(&[(name.as_str(), "x"), ("accept", "*/*"), ("x-a", "1")]);
            strip_hop_by_hop(&mut h, false);
            // `remove` may reorder what is left.
            let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            assert_eq!(left, ["accept", "x-a"], "{name}");
        }
        let mut h = map(&[("accept", "*/*"), ("host", "a"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&[("accept", "*/*"), ("host", "a"), ("x-a", "1")]));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_only_the_upgrade_connection_token() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], "k");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_and_host_are_set_only_when_absent() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let mut h = map(&[("host", "shop.example:8080")]);
        add_forwarded(&mut h, &ip, true, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "outer.example"),
            ("host", "inner.example"),
        ]);
        let mut untrusted = h.clone();
        untrusted.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        add_forwarded(&mut h, &ip, true, false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "outer.example");
        // Not from a trusted proxy: what the client claimed is replaced.
        add_forwarded(&mut untrusted, &ip, false, false);
        assert_eq!(untrusted.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(untrusted["x-forwarded-for"], "10.0.0.9");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        assert_eq!(untrusted["x-forwarded-host"], "inner.example");
        assert!(!untrusted.contains_key("forwarded"));
    }

    #[test]
    fn on_a_tls_listener_proto_is_https_and_a_client_claim_of_http_is_overwritten() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let mut h = map(&[("host", "a"), ("x-forwarded-proto", "http")]);
        add_forwarded(&mut h, &ip, false, true);
        assert_eq!(h["x-forwarded-proto"], "https");
        // A trusted proxy's own claim stands.
        let mut h = map(&[("host", "a"), ("x-forwarded-proto", "http")]);
        add_forwarded(&mut h, &ip, true, true);
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = map(&[("host", "a")]);
        add_forwarded(&mut h, &ip, true, true);
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn hosts_are_names_addresses_or_bracketed_ipv6_with_an_optional_port() {
        for good in [
            "shop.example",
            "a:80",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:80",
            "x_y",
            "h:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "", ":80", "a b", "user@h", "h/p", "h:8a", "[::1", "[]", "h:123456", "h\\x", "a,b c",
            "[::1]x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_proxys_own_headers_are_stripped_from_client_requests() {
        let mut h = map(&[
            ("x-cutover-slot", "green"),
            ("X-Cutover-Mirror", "1"),
            ("x-cutoverish", "kept"),
            ("accept", "*/*"),
        ]);
        strip_cutover(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-cutoverish"]);
    }

    #[test]
    fn host_without_port_handles_names_ipv4_and_ipv6() {
        assert_eq!(host_without_port("Shop.Example:8080"), "Shop.Example");
        assert_eq!(host_without_port("shop.example"), "shop.example");
        assert_eq!(host_without_port("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn cookie_fields_are_joined_and_a_single_one_is_left_alone() {
        let mut h = map(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2; c=3")]);
        join_cookie_fields(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookie_fields(&mut one);
        assert_eq!(one.get_all(COOKIE).iter().count(), 1);
        let mut none = map(&[("x", "y")]);
        join_cookie_fields(&mut none);
        assert!(none.get(COOKIE).is_none());
    }
}
