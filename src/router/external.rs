//! What the external routers (nginx, HAProxy, Traefik, Caddy) share: the [`Router`]
//! methods they all answer the same way (written once here, for every [`External`]),
//! atomic file writes, running the load balancer's own commands, small HTTP calls to
//! its admin API, and turning a Prometheus-style cumulative histogram into Cutover's
//! buckets.
//!
//! Every error carries the load balancer's own words (stderr, the admin API's body),
//! because that is what the operator needs to fix it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method};

use super::{Router, RouterError};
use crate::checks::http::{send, ProbeRequest, Response};
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::Target;
use crate::domain::stats::{StatsSnapshot, BUCKETS, LATENCY_BOUNDS_US};
use crate::domain::Slot;

/// What one external router does its own way. Each instance points one service; the
/// [`Router`] methods are implemented once below for every `External`: the service
/// check, "no live slot leaves the load balancer as it is" (the preview slot is not
/// routed through an external load balancer), the canary weights, the drain and the
/// statistics' service check.
#[async_trait]
pub trait External: Send + Sync {
    /// The router's `kind` in the config file.
    const KIND: &'static str;

    /// The one service this router points.
    fn service(&self) -> &str;

    /// Weight of a slot that takes all the traffic; a canary split gives percentages.
    fn full_weight(&self) -> u32;

    /// Points the service at `servers` (slot, weight); returns once the load balancer
    /// sends new requests there, with the previous state back on failure.
    async fn install(&self, servers: &[(Target, u32)]) -> Result<(), RouterError>;

    /// The slot the load balancer sends (most of) the service's traffic to now.
    async fn observed(&self) -> Result<Option<Slot>, RouterError>;

    /// Requests in flight on `slot`; `None` when the load balancer cannot tell, and
    /// the drain waits [`FIXED_GRACE`] instead.
    async fn in_flight(&self, slot: Slot) -> Result<Option<u64>, RouterError>;

    /// Cumulative statistics of `slot`, if the load balancer reports them.
    async fn slot_stats(&self, slot: Slot) -> Option<StatsSnapshot> {
        let _ = slot;
        None
    }
}

/// How long a drain waits when the load balancer cannot count in-flight requests.
pub const FIXED_GRACE: Duration = Duration::from_secs(2);

/// How often a drain asks for the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(50);

fn check_service<R: External>(router: &R, service: &str) -> Result<(), RouterError> {
    if service == router.service() {
        Ok(())
    } else {
        Err(RouterError::UnknownService(service.to_string()))
    }
}

#[async_trait]
impl<R: External> Router for R {
    fn kind(&self) -> &'static str {
        R::KIND
    }

    /// `live: None` leaves the load balancer as it is (an nginx upstream block cannot
    /// be empty); the preview slot is not routed through it.
    async fn apply(
        &self,
        service: &str,
        live: Option<Target>,
        _preview: Option<Target>,
    ) -> Result<(), RouterError> {
        check_service(self, service)?;
        let Some(live) = live else { return Ok(()) };
        self.install(&[(live, self.full_weight())]).await
    }

    fn supports_weights(&self) -> bool {
        true
    }

    async fn apply_weighted(
        &self,
        service: &str,
        stable: Target,
        canary: Target,
        canary_percent: u8,
    ) -> Result<(), RouterError> {
        check_service(self, service)?;
        let servers = split_weights(stable, canary, canary_percent, self.full_weight());
        self.install(&servers).await
    }

    async fn observed_live(&self, service: &str) -> Result<Option<Slot>, RouterError> {
        check_service(self, service)?;
        self.observed().await
    }

    /// Polls the load balancer's in-flight count until it is 0 or `timeout` passed;
    /// without a count, waits a fixed grace.
    async fn drain(
        &self,
        service: &str,
        slot: Slot,
        timeout: Duration,
    ) -> Result<u64, RouterError> {
        check_service(self, service)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(n) = self.in_flight(slot).await? else {
                return Ok(fixed_grace(FIXED_GRACE, timeout).await);
            };
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    async fn stats(&self, service: &str, slot: Slot) -> Option<StatsSnapshot> {
        if service != self.service() {
            return None;
        }
        self.slot_stats(slot).await
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`, so a reader (nginx, Traefik's file watcher) never sees half
/// a file.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), RouterError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cutover-")
        .tempfile_in(dir)
        .map_err(|e| io_error("create a temporary file in", dir, e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| io_error("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| io_error("replace", path, e.error))?;
    Ok(())
}

/// The file's text; `""` when it does not exist.
pub(crate) fn read_or_empty(path: &Path) -> Result<String, RouterError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_error("read", path, e)),
    }
}

pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> RouterError {
    RouterError::Rejected(format!("cannot {what} {}: {e}", path.display()))
}

/// `path` with `suffix` appended to its file name (`web.conf` → `web.conf.prev`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Runs `argv` to completion within `timeout`; `Err` holds what it printed when it
/// failed, could not start, or ran out of time.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<String, RouterError> {
    let shown = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(RouterError::Rejected("empty command".into()));
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => {
            return Err(RouterError::Unreachable(format!(
                "`{shown}` did not finish within {timeout:?}"
            )))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RouterError::Unreachable(format!(
                "`{shown}`: {program} is not installed or not on PATH"
            )))
        }
        Ok(Err(e)) => return Err(RouterError::Unreachable(format!("`{shown}`: {e}"))),
        Ok(Ok(out)) => out,
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
    .trim()
    .to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(RouterError::Rejected(format!(
            "`{shown}` failed ({}): {text}",
            out.status
        )))
    }
}

/// One HTTP call to an admin API (`ip:port`, or `host:port` resolved now); a connection
/// failure is `Unreachable`.
pub(crate) async fn call(
    addr: &Endpoint,
    method: Method,
    path: &str,
    json: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, RouterError> {
    let mut req = ProbeRequest::get(path);
    req.method = method.clone();
    if let Some(body) = json {
        req.body = Bytes::from(body.to_string());
        req.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    send(addr.clone(), req, timeout)
        .await
        .map_err(|e| RouterError::Unreachable(format!("{method} http://{addr}{path}: {e}")))
}

/// [`call`], then the body as JSON; a non-2xx answer is `Rejected` with its body.
pub(crate) async fn call_json(
    addr: &Endpoint,
    method: Method,
    path: &str,
    json: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, RouterError> {
    let resp = call(addr, method.clone(), path, json, timeout).await?;
    let body = String::from_utf8_lossy(&resp.body).trim().to_string();
    if !resp.status.is_success() {
        return Err(RouterError::Rejected(format!(
            "{method} http://{addr}{path}: {}: {body}",
            resp.status_line()
        )));
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&body).map_err(|e| {
        RouterError::Rejected(format!(
            "{method} http://{addr}{path}: not JSON ({e}): {body}"
        ))
    })
}

/// Cumulative `(upper bound in seconds, count)` pairs of a histogram (Prometheus `le`,
/// `+Inf` as `f64::INFINITY`) → Cutover's buckets. Each source bucket is put in the
/// first Cutover bucket whose bound is at least its own, so quantiles stay an upper
/// bound (coarser source buckets give coarser, never optimistic, figures).
pub(crate) fn buckets_from_cumulative(mut pairs: Vec<(f64, u64)>) -> [u64; BUCKETS] {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = [0u64; BUCKETS];
    let mut previous = 0u64;
    for (le, cumulative) in pairs {
        let n = cumulative.saturating_sub(previous);
        previous = previous.max(cumulative);
        out[bucket_of_secs(le)] += n;
    }
    out
}

/// The Cutover bucket holding a latency of `secs` seconds.
pub(crate) fn bucket_of_secs(secs: f64) -> usize {
    if !secs.is_finite() {
        return BUCKETS - 1;
    }
    let us = (secs * 1e6).round().max(0.0) as u64;
    LATENCY_BOUNDS_US.partition_point(|&b| b < us)
}

/// Waits `grace` (bounded by `timeout`) for load balancers that cannot report in-flight
/// requests per upstream, so a request that just started on the old slot can finish.
async fn fixed_grace(grace: Duration, timeout: Duration) -> u64 {
    tokio::time::sleep(grace.min(timeout)).await;
    0
}

/// The servers and weights of a canary split: `percent` % to `canary`, the rest to
/// `stable`; at 0 or 100 only one server, with `full` as its weight.
fn split_weights(stable: Target, canary: Target, percent: u8, full: u32) -> Vec<(Target, u32)> {
    let p = u32::from(percent.min(100));
    match p {
        0 => vec![(stable, full)],
        100 => vec![(canary, full)],
        _ => vec![(stable, 100 - p), (canary, p)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prometheus_histogram_lands_in_buckets_that_never_understate_latency() {
        // 0.1s: 90 requests, 0.3s: 8 more, 1.2s: 1 more, +Inf: 1 more.
        let b =
            buckets_from_cumulative(vec![(0.3, 98), (0.1, 90), (f64::INFINITY, 100), (1.2, 99)]);
        assert_eq!(b.iter().sum::<u64>(), 100);
        assert_eq!(b[bucket_of_secs(0.1)], 90);
        assert_eq!(b[bucket_of_secs(0.5)], 8, "0.3s goes to the 500ms bucket");
        assert_eq!(b[bucket_of_secs(2.5)], 1, "1.2s goes to the 2.5s bucket");
        assert_eq!(b[BUCKETS - 1], 1);
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.conf");
        write_atomic(&path, "one").unwrap();
        write_atomic(&path, "two").unwrap();
        assert_eq!(read_or_empty(&path).unwrap(), "two");
        assert_eq!(read_or_empty(&dir.path().join("nope")).unwrap(), "");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use crate::domain::Slot;

    #[test]
    fn a_split_gives_each_slot_its_share_and_the_ends_one_server_at_full_weight() {
        let blue = Target::new(
            "web",
            Slot::Blue,
            "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
        );
        let green = Target {
            slot: Slot::Green,
            endpoint: "web-green.internal:80".parse().unwrap(),
            identity: "web-green".into(),
        };
        let split = |p| split_weights(blue.clone(), green.clone(), p, 7);
        assert_eq!(split(0), vec![(blue.clone(), 7)]);
        assert_eq!(split(100), vec![(green.clone(), 7)]);
        assert_eq!(split(25), vec![(blue.clone(), 75), (green.clone(), 25)]);
        assert_eq!(split(200), vec![(green, 7)], "clamped to 100");
    }
}
