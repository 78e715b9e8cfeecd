//! Small value syntaxes of the config file: durations, fractions, addresses,
//! `{placeholder}`s and `{{variable}}`s, and TOML → JSON values.
//!
//! Each parser's error says what it got and what it expected, because that text is what
//! the person fixing the file reads.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

const DURATION_EXPECTED: &str = "a duration like \"500ms\" or \"2s\"";

/// A humantime duration string: `"500ms"`, `"2s"`, `"5m"`, `"1h 30m"`, `"0s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDuration(pub Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                parse_duration(v).map(RawDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Parses a humantime duration, with the config's own error wording.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("expected {DURATION_EXPECTED}, got {text:?}"))
}

/// A share: a number (`0.05`) or a percentage string (`"5%"`). Range is checked later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawFraction(pub f64);

const FRACTION_EXPECTED: &str = "a fraction like 0.05 or a percentage like \"5%\"";

impl<'de> Deserialize<'de> for RawFraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawFraction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(FRACTION_EXPECTED)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawFraction, E> {
                Ok(RawFraction(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawFraction, E> {
                Ok(RawFraction(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawFraction, E> {
                Ok(RawFraction(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFraction, E> {
                parse_fraction(v).map(RawFraction).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `"5%"` → 0.05, `"0.05"` → 0.05.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let parsed = match t.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    };
    parsed
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("expected {FRACTION_EXPECTED}, got {text:?}"))
}

/// `ip:port`. Host names are refused: the proxy binds exactly what is written.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        let hint = if text.contains("localhost") {
            " (use an IP address such as 127.0.0.1, not a host name)"
        } else {
            ""
        };
        format!("expected an address like \"127.0.0.1:8080\", got {text:?}{hint}")
    })
}

/// The `{name}` placeholders in a runtime command or env value. `${NAME}` (shell) and
/// `{{name}}` (smoke variables) are not placeholders; neither is `{` followed by
/// anything but a name and `}`.
pub fn placeholders(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'{') {
            i += 2;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let shell = i > 0 && bytes[i - 1] == b'$';
        if end > start && bytes.get(end) == Some(&b'}') && !shell {
            found.push(&text[start..end]);
            i = end + 1;
        } else {
            i += 1;
        }
    }
    found
}

/// The `{{name}}` variables a smoke step uses (names trimmed of spaces).
pub fn template_vars(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        found.push(after[..close].trim());
        rest = &after[close + 2..];
    }
    found
}

/// A variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A TOML value as the JSON value a response body is compared with. Datetimes become
/// their RFC 3339 text; a NaN or infinite float has no JSON form.
pub fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("expected a JSON value, got float `{f}`"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => {
            J::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_humantime_syntax_and_say_what_they_expected() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("fast").unwrap_err(),
            "expected a duration like \"500ms\" or \"2s\", got \"fast\""
        );
    }

    #[test]
    fn a_percentage_string_is_the_same_fraction_as_the_number() {
        assert_eq!(parse_fraction("5%"), Ok(0.05));
        assert_eq!(parse_fraction("0.05"), Ok(0.05));
        assert!(parse_fraction("five").unwrap_err().contains("\"five\""));
    }

    #[test]
    fn placeholders_skip_shell_variables_and_smoke_variables() {
        assert_eq!(
            placeholders("--port={port} {version}{slot} ${HOME} {{id}} { x }"),
            vec!["port", "version", "slot"]
        );
    }

    #[test]
    fn template_vars_are_trimmed() {
        assert_eq!(template_vars("/items/{{ id }}/{{b}}"), vec!["id", "b"]);
        assert!(template_vars("/items/{{id").is_empty());
    }

    #[test]
    fn host_names_are_refused_as_listen_addresses_with_a_hint() {
        assert!(parse_socket_addr("localhost:80")
            .unwrap_err()
            .contains("IP address"));
        assert_eq!(
            parse_socket_addr("[::1]:80"),
            Ok("[::1]:80".parse().unwrap())
        );
    }
}
