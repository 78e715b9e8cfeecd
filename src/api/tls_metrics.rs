//! `/metrics` for TLS: each served certificate's expiry and whether its file last
//! failed to reload, so an alert can fire well before a certificate runs out.
//!
//! - `cutover_tls_certificate_expiry_seconds{listener, name, source}`: `notAfter`
//!   as Unix time (alert on `... - time() < 14 * 86400`).
//! - `cutover_tls_certificate_reload_error{listener, name, source}`: 1 while the
//!   file's newest contents could not be used (the previous certificate is served).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::proxy::tls::TlsEdge;

#[derive(Debug)]
struct TlsCollector {
    edge: Arc<TlsEdge>,
}

/// Adds the TLS gauges to `registry` (nothing is exported when no listener has TLS).
pub fn register(registry: &mut Registry, edge: Arc<TlsEdge>) {
    registry.register_collector(Box::new(TlsCollector { edge }));
}

impl Collector for TlsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.edge.is_empty() {
            return Ok(());
        }
        let status = self.edge.status();
        let mut e = enc.encode_descriptor(
            "cutover_tls_certificate_expiry_seconds",
            "When a served TLS certificate expires (notAfter), as Unix time.",
            None,
            MetricType::Gauge,
        )?;
        for (listener, certs) in &status {
            let listener = listener.to_string();
            for c in certs {
                let labels = [
                    ("listener", listener.as_str()),
                    ("name", c.name.as_str()),
                    ("source", c.source.as_str()),
                ];
                ConstGauge::new(c.not_after).encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = enc.encode_descriptor(
            "cutover_tls_certificate_reload_error",
            "1 while a certificate file's newest contents could not be loaded (the previous certificate is served).",
            None,
            MetricType::Gauge,
        )?;
        for (listener, certs) in &status {
            let listener = listener.to_string();
            for c in certs {
                let labels = [
                    ("listener", listener.as_str()),
                    ("name", c.name.as_str()),
                    ("source", c.source.as_str()),
                ];
                ConstGauge::new(i64::from(c.error.is_some())).encode(e.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
