//! Rules the Kubernetes runtime and router share: the keys that say how `kubectl`
//! reaches the cluster, and Kubernetes' own name and label syntax, checked here so a
//! name the API server would refuse is a config error, not a failed deployment.

use std::path::{Path, PathBuf};

use super::kube_types::KubeAccess;
use super::read::{Problems, Read};
use super::rules::timeout;
use super::values::RawDuration;

/// The access keys as written, borrowed from a runtime or router table.
pub(super) struct RawAccess<'a> {
    pub kubectl: Option<&'a str>,
    pub kubeconfig: Option<&'a str>,
    pub context: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub timeout: Option<RawDuration>,
}

pub(super) fn access<T>(
    r: &Read<T>,
    raw: RawAccess<'_>,
    base: &Path,
    p: &mut Problems,
) -> Option<KubeAccess> {
    let kubectl = r.optional("kubectl", raw.kubectl, |k| {
        if k.trim().is_empty() {
            p.add(r.key("kubectl"), "expected the kubectl program, got \"\"");
            return None;
        }
        // A bare name is looked up on PATH; a path is relative to the config file.
        Some(if k.contains('/') {
            base.join(k)
        } else {
            PathBuf::from(k)
        })
    });
    let kubeconfig = r.optional("kubeconfig", raw.kubeconfig, |k| {
        if k.trim().is_empty() {
            p.add(r.key("kubeconfig"), "expected a file path, got \"\"");
            return None;
        }
        Some(base.join(k))
    });
    let context = r.optional("context", raw.context, |c| {
        if c.trim().is_empty() || c.starts_with('-') {
            p.add(
                r.key("context"),
                format!("expected a kubeconfig context name, got {c:?}"),
            );
            return None;
        }
        Some(c.to_string())
    });
    let namespace = r.optional("namespace", raw.namespace, |n| {
        dns_label(n)
            .then(|| n.to_string())
            .or_else(|| {
                p.add(
                    r.key("namespace"),
                    format!("expected a namespace name (lower-case letters, digits and `-`, at most 63), got {n:?}"),
                );
                None
            })
    });
    let timeout = timeout(r, raw.timeout, KubeAccess::DEFAULT_TIMEOUT, p);
    Some(KubeAccess {
        kubectl: kubectl?.unwrap_or_else(|| PathBuf::from("kubectl")),
        kubeconfig: kubeconfig?,
        context: context?,
        namespace: namespace?.unwrap_or_else(|| "default".to_string()),
        timeout: timeout?,
    })
}

/// An RFC 1123 label: what Kubernetes accepts as a namespace, Deployment or Service
/// name (Services also need a letter first: [`service_name`]).
pub(super) fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1035 label: a Service's name.
pub(super) fn service_name(s: &str) -> bool {
    dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// letters, digits, `-`, `_`, `.`, beginning and ending with a letter or digit.
pub(super) fn label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(dns_label));
    prefix_ok && !name.is_empty() && label_value(name)
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_`, `.`, beginning and
/// ending with a letter or digit.
pub(super) fn label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_and_labels_follow_the_api_servers_rules() {
        assert!(dns_label("web-green"));
        assert!(!dns_label("web_green"));
        assert!(!dns_label("-web"));
        assert!(!dns_label(&"a".repeat(64)));
        assert!(service_name("web"));
        assert!(!service_name("1web"));
        assert!(label_key("app"));
        assert!(label_key("example.com/tier"));
        assert!(!label_key("example.com/"));
        assert!(!label_key("Example_.com/x"));
        assert!(label_value(""));
        assert!(label_value("v1.2.3"));
        assert!(!label_value("v1+build"));
        assert!(!label_value("-x"));
    }
}
