//! Traefik's Prometheus text → one slot service's cumulative [`StatsSnapshot`].
//!
//! Only the two families the watch needs are read: `traefik_service_requests_total`
//! (by `code`) and `traefik_service_request_duration_seconds` (histogram, summed over
//! codes and methods). Everything else on the page is skipped.

use std::collections::BTreeMap;

use crate::domain::stats::StatsSnapshot;
use crate::router::external::buckets_from_cumulative;

const REQUESTS: &str = "traefik_service_requests_total";
const BUCKET: &str = "traefik_service_request_duration_seconds_bucket";
const SUM: &str = "traefik_service_request_duration_seconds_sum";

pub(super) fn service_stats(text: &str, service: &str) -> StatsSnapshot {
    let mut snap = StatsSnapshot::default();
    // le (as text, to sum equal bounds exactly) → cumulative count over all series.
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        if labels.get("service").map(String::as_str) != Some(service) {
            continue;
        }
        match name {
            REQUESTS => {
                let n = value as u64;
                snap.requests += n;
                let class = labels
                    .get("code")
                    .and_then(|c| c.parse::<u16>().ok())
                    .map_or(4, |c| (c / 100).clamp(1, 5) as usize - 1);
                snap.status_class[class] += n;
            }
            BUCKET => {
                if let Some(le) = labels.get("le") {
                    *buckets.entry(le.clone()).or_default() += value as u64;
                }
            }
            SUM => snap.latency_sum_us += (value * 1e6) as u64,
            _ => {}
        }
    }
    let pairs = buckets
        .into_iter()
        .filter_map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, n))
        })
        .collect();
    snap.latency_buckets = buckets_from_cumulative(pairs);
    snap
}

/// `name{a="x",b="y"} 12.5` → (name, labels, value); comments and odd lines → `None`.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, rest) = head.split_once('{')?;
    let rest = rest.strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    for part in split_labels(rest) {
        let (k, v) = part.split_once('=')?;
        labels.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    Some((name, labels, value))
}

/// Splits `a="x",b="y,z"` on the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::external::bucket_of_secs;

    const PAGE: &str = r#"# HELP traefik_service_requests_total How many HTTP requests processed on a service.
# TYPE traefik_service_requests_total counter
traefik_service_requests_total{code="200",method="GET",protocol="http",service="web-green@file"} 90
traefik_service_requests_total{code="500",method="GET",protocol="http",service="web-green@file"} 10
traefik_service_requests_total{code="200",method="GET",protocol="http",service="web-blue@file"} 7
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="web-green@file",le="0.1"} 85
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="web-green@file",le="+Inf"} 90
traefik_service_request_duration_seconds_bucket{code="500",method="GET",protocol="http",service="web-green@file",le="0.1"} 10
traefik_service_request_duration_seconds_bucket{code="500",method="GET",protocol="http",service="web-green@file",le="+Inf"} 10
traefik_service_request_duration_seconds_sum{code="200",method="GET",protocol="http",service="web-green@file"} 1.5
"#;

    #[test]
    fn one_service_is_summed_over_codes_with_its_latency_histogram() {
        let s = service_stats(PAGE, "web-green@file");
        assert_eq!(s.requests, 100);
        assert_eq!(s.status_class, [0, 90, 0, 0, 10]);
        assert!((s.error_rate() - 0.10).abs() < 1e-9);
        assert_eq!(s.latency_buckets[bucket_of_secs(0.1)], 95);
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 100);
        assert_eq!(s.latency_sum_us, 1_500_000);
        assert_eq!(service_stats(PAGE, "web-blue@file").requests, 7);
        assert_eq!(service_stats(PAGE, "other@file"), StatsSnapshot::default());
    }
}
