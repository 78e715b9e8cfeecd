//! The rules several sections share: a duration with its default, a positive duration,
//! an integer in a range, an HTTP status, a unique name, a URL path, a socket address,
//! JSON conditions, an argv with known placeholders, environment variables, a stop
//! signal, fixed slot ports, header maps, `http://` URLs, and the file paths, names and
//! timeouts of the external routers.
//!
//! Its own file so that every section file can use them and none of them imports
//! another section: this file imports only `read.rs` (problems), `values.rs` (value
//! syntaxes), `raw.rs` (the schema) and the validated types (`model.rs`, `kinds.rs`),
//! none of which imports a rule. Each rule records what was wrong at the key it is
//! given and returns `None` (or `false`), so a caller can keep checking the rest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::kinds::{ProcessRuntimeConfig, SlotPorts, StopSignal};
use super::model::JsonCondition;
use super::raw::RawPorts;
use super::read::{join, read, Problems, Read, Sub};
use super::values::{parse_socket_addr, placeholders, toml_to_json, RawDuration};
use crate::domain::endpoint::Endpoint;

// ----- values -----

/// An address Cutover binds (a listener): `ip:port` only.
pub(super) fn addr(p: &mut Problems, key: String, text: &str) -> Option<SocketAddr> {
    parse_socket_addr(text).map_err(|m| p.add(key, m)).ok()
}

/// An address Cutover connects to (a load balancer's admin API): `ip:port`, or a
/// `host:port` resolved at each connection (`traefik.kube-system.svc:8080`).
pub(super) fn endpoint(p: &mut Problems, key: String, text: &str) -> Option<Endpoint> {
    text.trim()
        .parse::<Endpoint>()
        .map_err(|m| p.add(key, m))
        .ok()
}

/// A duration field with its default (`None` if its value was rejected).
pub(super) fn duration<T>(
    r: &Read<T>,
    field: &str,
    value: Option<RawDuration>,
    default: Duration,
) -> Option<Duration> {
    r.or(field, value.map(|d| d.0), default)
}

pub(super) fn positive(p: &mut Problems, key: String, d: Duration) -> Option<Duration> {
    if d.is_zero() {
        p.add(key, "expected a duration greater than 0, got \"0s\"");
        return None;
    }
    Some(d)
}

pub(super) fn int_range(p: &mut Problems, key: String, v: i64, min: i64, max: i64) -> Option<i64> {
    if (min..=max).contains(&v) {
        return Some(v);
    }
    let expected = if max.saturating_sub(min) <= 65_535 {
        format!("an integer from {min} to {max}")
    } else if v < min {
        format!("an integer >= {min}")
    } else {
        format!("an integer <= {max}")
    };
    p.add(key, format!("expected {expected}, got {v}"));
    None
}

pub(super) fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub(super) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['=', '\0'])
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Records `name` as used at index `i`; reports a duplicate at `key`.
pub(super) fn unique_name(
    p: &mut Problems,
    key: String,
    name: &str,
    i: usize,
    seen: &mut BTreeMap<String, usize>,
    list: &str,
) -> Option<()> {
    if name.trim().is_empty() {
        p.add(key, "expected a non-empty name, got \"\"");
        return None;
    }
    if let Some(first) = seen.get(name) {
        p.add(
            key,
            format!("duplicate name {name:?}, already used by {list}[{first}]"),
        );
        return None;
    }
    seen.insert(name.to_string(), i);
    Some(())
}

pub(super) fn url_path(p: &mut Problems, key: String, path: &str) -> Option<String> {
    if path.starts_with('/') {
        return Some(path.to_string());
    }
    p.add(
        key,
        format!("expected a path starting with \"/\", got {path:?}"),
    );
    None
}

pub(super) fn status(p: &mut Problems, key: String, status: i64) -> Option<u16> {
    int_range(p, key, status, 100, 599).map(|s| s as u16)
}

pub(super) fn conditions(
    p: &mut Problems,
    key: &str,
    map: &BTreeMap<String, toml::Value>,
) -> Option<Vec<JsonCondition>> {
    let before = p.count();
    let mut out = Vec::new();
    for (path, value) in map {
        let k = join(key, path);
        if path.trim().is_empty() {
            p.add(
                &k,
                "expected a dotted JSON path like \"checks.database\", got \"\"",
            );
            continue;
        }
        match toml_to_json(value) {
            Ok(expected) => out.push(JsonCondition {
                path: path.clone(),
                expected,
            }),
            Err(m) => p.add(&k, m),
        }
    }
    (p.count() == before).then_some(out)
}

// ----- runtimes and command probes -----

pub(super) fn env_ok<T>(
    r: &Read<T>,
    env: &BTreeMap<String, String>,
    p: &mut Problems,
) -> Option<BTreeMap<String, String>> {
    let before = p.count();
    for (name, value) in env {
        let key = join(&r.key("env"), name);
        if !is_env_name(name) {
            p.add(
                &key,
                format!("expected an environment variable name, got {name:?}"),
            );
        }
        check_placeholders(p, &key, value);
    }
    (p.count() == before).then(|| env.clone())
}

pub(super) fn stop_signal<T>(
    r: &Read<T>,
    value: Option<&str>,
    p: &mut Problems,
) -> Option<Option<StopSignal>> {
    r.optional("stop_signal", value, |s| {
        let parsed = StopSignal::parse(s);
        if parsed.is_none() {
            p.add(
                r.key("stop_signal"),
                format!("expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, got {s:?}"),
            );
        }
        parsed
    })
}

/// A command argv (runtime or probe): non-empty, a program name, known placeholders.
pub(super) fn argv_ok(p: &mut Problems, key: &str, argv: &[String]) -> bool {
    let before = p.count();
    match argv.first() {
        None => p.add(
            key,
            "expected a non-empty argv like [\"./web\", \"--port\", \"{port}\"], got []",
        ),
        Some(program) if program.trim().is_empty() => {
            p.add(format!("{key}[0]"), "expected a program name, got \"\"")
        }
        Some(_) => {}
    }
    for (i, arg) in argv.iter().enumerate() {
        check_placeholders(p, &format!("{key}[{i}]"), arg);
    }
    p.count() == before
}

pub(super) fn check_placeholders(p: &mut Problems, key: &str, text: &str) {
    for name in placeholders(text) {
        if !ProcessRuntimeConfig::PLACEHOLDERS.contains(&name) {
            p.add(key, format!(
                "unknown placeholder `{{{name}}}`, expected one of: {{version}}, {{port}}, {{slot}}, {{service}}"
            ));
        }
    }
}

/// A container runtime's `image`: required, no whitespace, known placeholders, and no
/// `{port}` (the port is not known when the image is chosen).
pub(super) fn image<T>(r: &Read<T>, value: Option<&str>, p: &mut Problems) -> Option<String> {
    let image = r.required(
        "image",
        value,
        "an image reference like \"shop:{version}\"",
        p,
    )?;
    let before = p.count();
    if image.trim().is_empty() || image.contains(char::is_whitespace) {
        p.add(
            r.key("image"),
            format!("expected an image reference like \"shop:{{version}}\", got {image:?}"),
        );
    }
    check_placeholders(p, &r.key("image"), image);
    if placeholders(image).contains(&"port") {
        p.add(
            r.key("image"),
            "`{port}` cannot be part of an image reference",
        );
    }
    (p.count() == before).then(|| image.to_string())
}

/// A container runtime's `port`: where the app listens inside its container.
pub(super) fn container_port<T>(r: &Read<T>, value: Option<i64>, p: &mut Problems) -> Option<u16> {
    r.required(
        "port",
        value,
        "the port the app listens on inside the container, from 1 to 65535",
        p,
    )
    .and_then(|v| int_range(p, r.key("port"), v, 1, 65535))
    .map(|v| v as u16)
}

pub(super) fn ports(at: &str, sub: &Sub<RawPorts>, p: &mut Problems) -> Option<SlotPorts> {
    let r = read::<RawPorts>(sub.value(), at, p)?;
    let mut port = |field: &str, value: Option<i64>| {
        r.required(field, value, "a port from 1 to 65535", p)
            .and_then(|v| int_range(p, r.key(field), v, 1, 65535))
            .map(|v| v as u16)
    };
    let (blue, green) = (port("blue", r.raw.blue), port("green", r.raw.green));
    let (blue, green) = (blue?, green?);
    if blue == green {
        p.add(
            r.key("green"),
            format!("expected a port different from blue's, got {green} for both"),
        );
        return None;
    }
    Some(SlotPorts { blue, green })
}

// ----- webhooks (notifications and metric providers) -----

/// Placeholders substituted in queries, commands and webhook URLs/bodies.
pub const METRIC_PLACEHOLDERS: &[&str] = &["service", "version", "slot", "stable_slot"];

/// Header names and values that HTTP accepts.
pub(super) fn headers(
    p: &mut Problems,
    key: &str,
    h: std::collections::BTreeMap<String, String>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let before = p.count();
    for (name, value) in &h {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(
                join(key, name),
                format!("expected a header name like \"authorization\", got {name:?}"),
            );
        } else if http::HeaderValue::from_str(value).is_err() {
            p.add(
                join(key, name),
                "expected a header value of visible ASCII characters",
            );
        }
    }
    (p.count() == before).then_some(h)
}

/// An `http://` or `https://` URL with a host (`https://` trusts what the place's
/// `ca_file`/`tls_insecure_skip_verify` say; see `client_tls`).
pub(super) fn http_url<'a>(p: &mut Problems, key: String, url: &'a str) -> Option<&'a str> {
    // Placeholders are substituted before sending; judge the URL's shape without them.
    let mut shape = url.to_string();
    for name in METRIC_PLACEHOLDERS {
        shape = shape.replace(&format!("{{{name}}}"), "x");
    }
    let parsed = shape.parse::<http::Uri>();
    match parsed {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Some(url)
        }
        _ => {
            p.add(
                key,
                format!("expected a URL like \"http://127.0.0.1:9090\", got {url:?}"),
            );
            None
        }
    }
}

// ----- external routers -----

pub(super) fn file<T>(
    r: &Read<T>,
    field: &str,
    value: Option<&str>,
    base: &Path,
    p: &mut Problems,
) -> Option<PathBuf> {
    let v = r.required(field, value, "a file path", p)?;
    if v.trim().is_empty() {
        p.add(r.key(field), "expected a file path, got \"\"");
        return None;
    }
    Some(base.join(v))
}

/// A name used inside the load balancer's config: non-empty, no whitespace or quotes.
pub(super) fn name<T>(
    r: &Read<T>,
    field: &str,
    value: Option<String>,
    default: &str,
    p: &mut Problems,
) -> Option<String> {
    let v = r.or(field, value, default.to_string())?;
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        p.add(
            r.key(field),
            format!("expected a name of letters, digits, `-`, `_`, `.`, got {v:?}"),
        );
        return None;
    }
    Some(v)
}

pub(super) fn timeout<T>(
    r: &Read<T>,
    value: Option<RawDuration>,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    duration(r, "timeout", value, default).and_then(|d| positive(p, r.key("timeout"), d))
}

/// An HTTP method (any case in the file), upper-cased; `example` shows one in the error.
pub(super) fn http_method(p: &mut Problems, key: String, m: &str, example: &str) -> Option<String> {
    let upper = m.trim().to_ascii_uppercase();
    match http::Method::from_bytes(upper.as_bytes()) {
        Ok(_) if !upper.is_empty() => Some(upper),
        _ => {
            p.add(
                key,
                format!("expected an HTTP method like {example}, got {m:?}"),
            );
            None
        }
    }
}
