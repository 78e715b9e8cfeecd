//! `kind = "dns"`: the zone's primary server, the zone and the name Cutover points,
//! the records' TTL, the TSIG key file (`tsig-keygen`'s output, read here so a wrong
//! file fails `validate`, not a deployment), and optionally the address each slot is
//! published at.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::config::kinds::{DnsRouterConfig, TsigKey};
use crate::config::read::{read, Problems, Read, Sub};
use crate::config::rules::{duration, endpoint, file, timeout};
use crate::config::values::RawDuration;
use crate::domain::Slot;

/// Algorithms the updates can be signed with (what `tsig-keygen -a` offers that is
/// not deprecated).
const ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[allow(dead_code)] // read first, to choose this struct
    kind: Option<String>,
    server: Option<String>,
    zone: Option<String>,
    name: Option<String>,
    ttl: Option<RawDuration>,
    key_file: Option<String>,
    addresses: Option<Sub<RawAddresses>>,
    timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddresses {
    blue: Option<Vec<String>>,
    green: Option<Vec<String>>,
}

pub(super) fn dns(
    service: &str,
    r: &Read<RawDns>,
    base: &Path,
    p: &mut Problems,
) -> Option<DnsRouterConfig> {
    let server = r
        .required(
            "server",
            r.raw.server.as_deref(),
            "the zone's primary server, like \"127.0.0.1:53\" or \"ns1.example.com:53\"",
            p,
        )
        .and_then(|s| endpoint(p, r.key("server"), s));
    let zone = r
        .required(
            "zone",
            r.raw.zone.as_deref(),
            "a zone like \"example.com\"",
            p,
        )
        .and_then(|z| domain(p, r.key("zone"), z));
    let name = match (&zone, r.raw.name.as_deref()) {
        (_, Some(n)) => domain(p, r.key("name"), n),
        (Some(z), None) => Some(format!("{service}.{z}")),
        (None, None) => None,
    };
    if let (Some(z), Some(n)) = (&zone, &name) {
        if !(n == z || n.ends_with(&format!(".{z}"))) {
            p.add(
                r.key("name"),
                format!("expected a name inside the zone {z:?}, got {n:?}"),
            );
        }
    }
    let ttl = duration(r, "ttl", r.raw.ttl, Duration::from_secs(60)).and_then(|t| {
        if (1..=86_400).contains(&t.as_secs()) && t.subsec_nanos() == 0 {
            Some(t)
        } else {
            p.add(
                r.key("ttl"),
                "expected whole seconds from 1s to 1d, like \"60s\"",
            );
            None
        }
    });
    let key = file(r, "key_file", r.raw.key_file.as_deref(), base, p)
        .and_then(|path| key_file(p, r.key("key_file"), &path));
    let addresses = r.optional("addresses", r.raw.addresses.as_ref(), |sub| {
        let at = r.key("addresses");
        let a = read::<RawAddresses>(sub.value(), &at, p)?;
        let blue = ips(p, &a, "blue", a.raw.blue.as_deref());
        let green = ips(p, &a, "green", a.raw.green.as_deref());
        let (blue, green) = (blue?, green?);
        if blue == green {
            p.add(
                a.key("green"),
                "expected addresses different from blue's: the record would not tell the slots apart",
            );
            return None;
        }
        Some(BTreeMap::from([(Slot::Blue, blue), (Slot::Green, green)]))
    });
    let timeout = timeout(r, r.raw.timeout, Duration::from_secs(5), p);
    Some(DnsRouterConfig {
        server: server?,
        name: name?,
        zone: zone?,
        ttl: ttl?,
        key: key?,
        addresses: addresses?,
        timeout: timeout?,
    })
}

/// A domain name in the file: letters, digits, `-`, `_`, dots between labels; the
/// trailing dot optional. Returned lower-case and fully qualified (`example.com.`).
fn domain(p: &mut Problems, key: String, text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Some(format!("{t}."))
    } else {
        p.add(
            key,
            format!("expected a domain name like \"www.example.com\", got {text:?}"),
        );
        None
    }
}

fn ips(
    p: &mut Problems,
    r: &Read<RawAddresses>,
    slot: &str,
    list: Option<&[String]>,
) -> Option<Vec<IpAddr>> {
    let list = r.required(
        slot,
        list,
        "a list of IP addresses like [\"192.0.2.10\"]",
        p,
    )?;
    if list.is_empty() {
        p.add(r.key(slot), "expected at least one IP address");
        return None;
    }
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => {
                p.add(
                    format!("{}[{i}]", r.key(slot)),
                    format!("expected an IP address like \"192.0.2.10\", got {text:?}"),
                );
                return None;
            }
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// Reads a key file as `tsig-keygen` writes it:
/// `key "name" { algorithm hmac-sha256; secret "<base64>"; };`
fn key_file(p: &mut Problems, key: String, path: &Path) -> Option<TsigKey> {
    // Anyone who can read the key can point the name anywhere: like ssh with a private
    // key, refuse a file other users can read, or others than its owner can change.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o026 != 0 {
            p.add(
                key,
                format!(
                    "{} is readable by every user or writable by others (mode {mode:04o}): it holds the DNS update key; `chmod 600` it (or 640 to share it with the DNS server's group)",
                    path.display()
                ),
            );
            return None;
        }
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            p.add(key, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match parse_key(&text) {
        Ok(k) => Some(k),
        Err(why) => {
            p.add(
                key,
                format!(
                    "{}: {why}; expected what `tsig-keygen -a hmac-sha256 <name>` writes: \
                     key \"<name>\" {{ algorithm hmac-sha256; secret \"<base64>\"; }};",
                    path.display()
                ),
            );
            None
        }
    }
}

fn parse_key(text: &str) -> Result<TsigKey, String> {
    let clean: String = text
        .lines()
        .map(strip_comment)
        .collect::<Vec<_>>()
        .join("\n");
    let rest = clean.trim_start();
    let rest = rest
        .strip_prefix("key")
        .ok_or("no `key` clause")?
        .trim_start();
    let (name, rest) = quoted(rest).ok_or("the key's name is not quoted")?;
    let body = rest
        .trim_start()
        .strip_prefix('{')
        .and_then(|b| b.rfind('}').map(|end| &b[..end]))
        .ok_or("no `{ ... }` after the key's name")?;
    let (mut algorithm, mut secret) = (None, None);
    for stmt in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (word, value) = stmt
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("cannot read {stmt:?}"))?;
        let value = value.trim();
        match word {
            "algorithm" => algorithm = Some(value.trim_matches('"').to_ascii_lowercase()),
            "secret" => secret = Some(quoted(value).map_or(value, |(s, _)| s).to_string()),
            other => return Err(format!("unknown statement `{other}`")),
        }
    }
    let algorithm = algorithm.ok_or("no `algorithm`")?;
    if !ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(format!(
            "algorithm {algorithm:?} is not supported, expected one of {}",
            ALGORITHMS.join(", ")
        ));
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.ok_or("no `secret`")?.as_bytes())
        .map_err(|_| "the secret is not base64".to_string())?;
    if secret.len() < 16 {
        return Err("the secret is shorter than 16 bytes".into());
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!("the key's name {name:?} is not a DNS name"));
    }
    Ok(TsigKey {
        name: name.to_string(),
        algorithm,
        secret,
    })
}

/// A line without its comment (`#` or `//` to the end of the line). Only outside
/// quotes: a base64 secret may contain `//`.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'#' if !quoted => return &line[..i],
            b'/' if !quoted && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `"text" rest` → (`text`, `rest`).
fn quoted(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix('"')?;
    let end = s.find('"')?;
    Some((&s[..end], &s[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "key \"cutover\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==\";\n};\n";

    #[test]
    fn a_secret_holding_two_slashes_is_not_cut_as_a_comment() {
        // 32 bytes whose base64 has "//" in it, as about one tsig-keygen key in a
        // hundred does (a CI run met one).
        let mut bytes = vec![0xAB_u8; 32];
        bytes[..3].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(b64.contains("//"), "{b64}");
        let k = parse_key(&format!(
            "key \"cutover\" {{ // a comment\n\talgorithm hmac-sha256; # another\n\tsecret \"{b64}\";\n}};\n"
        ))
        .unwrap();
        assert_eq!(k.secret, bytes);
    }

    #[test]
    fn a_tsig_keygen_file_is_read() {
        let k = parse_key(&format!("# made by tsig-keygen\n{KEY}")).unwrap();
        assert_eq!(k.name, "cutover");
        assert_eq!(k.algorithm, "hmac-sha256");
        assert_eq!(k.secret, b"secret-secret-secret-secret!");
        assert!(!format!("{k:?}").contains("c2Vj"), "the secret is redacted");
    }

    #[test]
    fn a_wrong_key_file_says_what_is_wrong() {
        let md5 = KEY.replace("hmac-sha256", "hmac-md5");
        assert!(parse_key(&md5).unwrap_err().contains("not supported"));
        let short = KEY.replace("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==", "c2hvcnQ=");
        assert!(parse_key(&short).unwrap_err().contains("shorter"));
        assert!(parse_key("secret \"x\";").unwrap_err().contains("no `key`"));
        let bad = KEY.replace("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==", "not base64!");
        assert!(parse_key(&bad).unwrap_err().contains("base64"));
    }

    #[test]
    fn domains_are_fully_qualified_and_checked() {
        let mut p = Problems::default();
        assert_eq!(
            domain(&mut p, "k".into(), "WWW.Example.com"),
            Some("www.example.com.".into())
        );
        assert_eq!(
            domain(&mut p, "k".into(), "example.com."),
            Some("example.com.".into())
        );
        assert_eq!(p.count(), 0);
        assert_eq!(domain(&mut p, "k".into(), "bad..name"), None);
        assert_eq!(domain(&mut p, "k".into(), "-x.example.com"), None);
        assert_eq!(p.count(), 2);
    }
}
