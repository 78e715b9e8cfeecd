//! The trust keys of every place Cutover calls a URL (`ca_file`,
//! `tls_insecure_skip_verify`) and of a service whose slots serve TLS
//! (`[services.<name>.upstream_tls]`), read into one [`ClientTls`] each.
//!
//! Per place rather than one global table: a notification webhook to Slack trusts the
//! system store while a Prometheus inside the network trusts a private CA, and each
//! setting sits next to the URL it is about. Relative `ca_file` paths are resolved
//! against the config file's directory afterwards ([`resolve_paths`]), as every other
//! path in the file is.

use std::path::Path;

use super::model::{ApiTls, Config};
use super::raw::RawApi;
use super::raw::RawUpstreamTls;
use super::read::{join, read, Problems, Read, Sub};
use crate::config::{HookAction, MetricProvider};
use crate::tls::ClientTls;

/// `ca_file` and `tls_insecure_skip_verify` of one table (`server_name` is only for
/// slots). `None` when a key was rejected (reported).
pub(super) fn client_tls<T>(
    r: &Read<T>,
    ca_file: Option<&str>,
    insecure: Option<bool>,
    p: &mut Problems,
) -> Option<ClientTls> {
    let ca_file = r.optional("ca_file", ca_file, |f| {
        if f.trim().is_empty() {
            p.add(
                r.key("ca_file"),
                "expected a path to a PEM CA file, got \"\"",
            );
            return None;
        }
        Some(f.into())
    })?;
    let insecure_skip_verify = r.or("tls_insecure_skip_verify", insecure, false)?;
    if insecure_skip_verify && ca_file.is_some() {
        p.add(
            r.key("tls_insecure_skip_verify"),
            "tls_insecure_skip_verify = true accepts any certificate, so ca_file would be ignored; set one or the other",
        );
        return None;
    }
    Some(ClientTls {
        ca_file,
        server_name: None,
        insecure_skip_verify,
    })
}

/// Joins every relative `ca_file` onto `base` (the config file's directory).
pub(super) fn resolve_paths(config: &mut Config, base: &Path) {
    if let Some(tls) = &mut config.api.tls {
        tls.cert_file = base.join(&tls.cert_file);
        tls.key_file = base.join(&tls.key_file);
        tls.ca_file = tls.ca_file.as_ref().map(|f| base.join(f));
    }
    let fix = |tls: &mut ClientTls| {
        if let Some(f) = &tls.ca_file {
            tls.ca_file = Some(base.join(f));
        }
    };
    for w in &mut config.notifications.webhooks {
        fix(&mut w.tls);
    }
    for service in config.services.values_mut() {
        if let Some(tls) = &mut service.upstream_tls {
            fix(tls);
        }
        for hook in &mut service.hooks {
            if let HookAction::Http(h) = &mut hook.action {
                fix(&mut h.tls);
            }
        }
        for metric in service
            .analysis
            .iter_mut()
            .flat_map(|a| a.metrics.iter_mut())
        {
            match &mut metric.provider {
                MetricProvider::Prometheus { tls, .. } | MetricProvider::Webhook { tls, .. } => {
                    fix(tls)
                }
                _ => {}
            }
        }
    }
}

/// `[services.<name>.upstream_tls]`: `Some(None)` when absent (plain HTTP to the slots),
/// `None` when wrong (reported).
pub(super) fn upstream_tls(
    at: &str,
    sub: Option<&Sub<RawUpstreamTls>>,
    p: &mut Problems,
) -> Option<Option<ClientTls>> {
    let Some(sub) = sub else {
        return Some(None);
    };
    let r = read::<RawUpstreamTls>(sub.value(), &join(at, "upstream_tls"), p)?;
    let mut tls = client_tls(
        &r,
        r.raw.ca_file.as_deref(),
        r.raw.tls_insecure_skip_verify,
        p,
    );
    let server_name = r.optional("server_name", r.raw.server_name.clone(), |name| {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() || name.is_empty() {
            p.add(
                r.key("server_name"),
                format!("expected a DNS name like \"web.internal\" (the name the slots' certificate carries), got {name:?}"),
            );
            return None;
        }
        Some(name)
    });
    if let (Some(tls), Some(name)) = (tls.as_mut(), server_name.clone()) {
        tls.server_name = name;
    }
    Some(Some(tls?)).filter(|_| server_name.is_some())
}

/// `[api] tls_cert_file`/`tls_key_file` (both or neither) and `tls_ca_file`.
pub(super) fn api_tls(r: &Read<RawApi>, p: &mut Problems) -> Option<Option<ApiTls>> {
    let before = p.count();
    let path = |field: &str, value: &Option<String>, p: &mut Problems| match value {
        Some(v) if v.trim().is_empty() => {
            p.add(r.key(field), "expected a path to a PEM file, got \"\"");
            None
        }
        other => other.as_ref().map(std::path::PathBuf::from),
    };
    let cert = path("tls_cert_file", &r.raw.tls_cert_file, p);
    let key = path("tls_key_file", &r.raw.tls_key_file, p);
    let ca = path("tls_ca_file", &r.raw.tls_ca_file, p);
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ApiTls {
            cert_file,
            key_file,
            ca_file: ca,
        }),
        (None, None) => {
            if ca.is_some() {
                p.add(
                    r.key("tls_ca_file"),
                    "tls_ca_file is what the CLI trusts the API's HTTPS by, but the API serves plain HTTP (set tls_cert_file and tls_key_file)",
                );
            }
            None
        }
        (Some(_), None) => {
            p.add(r.key("tls_key_file"), "missing: tls_cert_file is set, so the API serves HTTPS and needs its private key (a PEM file)");
            None
        }
        (None, Some(_)) => {
            p.add(r.key("tls_cert_file"), "missing: tls_key_file is set, so the API serves HTTPS and needs its certificate chain (a PEM file)");
            None
        }
    };
    (p.count() == before).then_some(tls)
}

impl Config {
    /// The keys where `tls_insecure_skip_verify = true` is set, for the warning the
    /// daemon logs at every start.
    pub fn insecure_tls_places(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, w) in self.notifications.webhooks.iter().enumerate() {
            if w.tls.insecure_skip_verify {
                out.push(format!("notifications.webhooks[{i}]"));
            }
        }
        for (name, service) in &self.services {
            if service
                .upstream_tls
                .as_ref()
                .is_some_and(|t| t.insecure_skip_verify)
            {
                out.push(format!("services.{name}.upstream_tls"));
            }
            for (i, hook) in service.hooks.iter().enumerate() {
                if matches!(&hook.action, HookAction::Http(h) if h.tls.insecure_skip_verify) {
                    out.push(format!("services.{name}.hooks[{i}].http"));
                }
            }
            for (i, metric) in service
                .analysis
                .iter()
                .flat_map(|a| a.metrics.iter())
                .enumerate()
            {
                if let MetricProvider::Prometheus { tls, .. }
                | MetricProvider::Webhook { tls, .. } = &metric.provider
                {
                    if tls.insecure_skip_verify {
                        out.push(format!("services.{name}.analysis.metrics[{i}]"));
                    }
                }
            }
        }
        out
    }
}
