//! Rules for `[retention]`: how much history the store keeps and how large slot log
//! files grow (see `store/retention.rs` and `runtime/log_files.rs`). Every key has a
//! safe default, so most configs never write this table.

use std::time::Duration;

use super::raw::RawRetention;
use super::read::{read_opt, Problems, Sub};
use super::rules::{duration, int_range, positive};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Finished deployments kept per service (with their phases, checks,
    /// measurements and events). Default 100; 1..=1000000.
    pub keep_deployments: usize,
    /// Finished deployments and events older than this are deleted. Default 90 days;
    /// at least 1h.
    pub max_age: Duration,
    /// How often the daemon prunes (it also prunes at start). Default 1h; > 0.
    pub interval: Duration,
    /// A slot's log file is rotated (`.1`, `.2`, ...) once larger than this. Default
    /// 10 MiB; 4096..=2^40.
    pub slot_log_max_bytes: u64,
    /// Rotated slot log files kept (`.1` newest). Default 5; 1..=100.
    pub slot_log_files: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_deployments: 100,
            max_age: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(3600),
            slot_log_max_bytes: 10 * 1024 * 1024,
            slot_log_files: 5,
        }
    }
}

pub(super) fn retention(
    sub: Option<&Sub<RawRetention>>,
    p: &mut Problems,
) -> Option<RetentionConfig> {
    let d = RetentionConfig::default();
    let Some(r) = read_opt(sub, "retention", p) else {
        return Some(d);
    };
    let keep = r
        .or(
            "keep_deployments",
            r.raw.keep_deployments,
            d.keep_deployments as i64,
        )
        .and_then(|v| int_range(p, r.key("keep_deployments"), v, 1, 1_000_000));
    let max_age = duration(&r, "max_age", r.raw.max_age, d.max_age).and_then(|v| {
        if v < Duration::from_secs(3600) {
            p.add(r.key("max_age"), "expected at least 1h");
            None
        } else {
            Some(v)
        }
    });
    let interval = duration(&r, "interval", r.raw.interval, d.interval)
        .and_then(|v| positive(p, r.key("interval"), v));
    let max_bytes = r
        .or(
            "slot_log_max_bytes",
            r.raw.slot_log_max_bytes,
            d.slot_log_max_bytes as i64,
        )
        .and_then(|v| int_range(p, r.key("slot_log_max_bytes"), v, 4096, 1 << 40));
    let files = r
        .or(
            "slot_log_files",
            r.raw.slot_log_files,
            i64::from(d.slot_log_files),
        )
        .and_then(|v| int_range(p, r.key("slot_log_files"), v, 1, 100));
    Some(RetentionConfig {
        keep_deployments: keep? as usize,
        max_age: max_age?,
        interval: interval?,
        slot_log_max_bytes: max_bytes? as u64,
        slot_log_files: files? as u32,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const SERVICE: &str = r#"
[services.web]
listen = "127.0.0.1:18080"
[services.web.runtime]
kind = "process"
command = ["app", "--port", "{port}"]
"#;

    #[test]
    fn without_the_table_every_default_applies_and_mistakes_name_their_key() {
        let c = parse(SERVICE, None).unwrap();
        assert_eq!(c.retention, super::RetentionConfig::default());
        let text = format!(
            "{SERVICE}\n[retention]\nkeep_deployments = 0\nmax_age = \"5m\"\nslot_log_files = 101\nkeep = 3\n"
        );
        let problems = parse(&text, None).unwrap_err().problems;
        let shown: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        for key in [
            "retention.keep_deployments",
            "retention.max_age",
            "retention.slot_log_files",
            "retention.keep",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(key)),
                "{key} not named in {shown:?}"
            );
        }
    }
}
