//! Rules for `[services.<name>.supervise]`: how the live release is watched between
//! deployments (see `orchestrator/supervisor.rs`).

use std::time::Duration;

use super::model::SuperviseConfig;
use super::raw::RawSupervise;
use super::read::{join, read_opt, Problems, Sub};
use super::rules::{duration, positive};

pub(super) fn supervise(
    service_at: &str,
    sub: Option<&Sub<RawSupervise>>,
    p: &mut Problems,
) -> Option<SuperviseConfig> {
    let d = SuperviseConfig::default();
    let Some(r) = read_opt(sub, &join(service_at, "supervise"), p) else {
        return Some(d);
    };
    let enabled = r.or("enabled", r.raw.enabled, d.enabled);
    let failover = r.or("failover", r.raw.failover, d.failover);
    let max_backoff = duration(&r, "max_backoff", r.raw.max_backoff, d.max_backoff)
        .and_then(|v| positive(p, r.key("max_backoff"), v))
        .and_then(|v| {
            if v < Duration::from_secs(1) {
                p.add(r.key("max_backoff"), "expected at least 1s");
                None
            } else {
                Some(v)
            }
        });
    Some(SuperviseConfig {
        enabled: enabled?,
        failover: failover?,
        max_backoff: max_backoff?,
    })
}
