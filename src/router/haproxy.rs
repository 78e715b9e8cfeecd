//! HAProxy as a [`Router`](super::Router), through its runtime API (the stats socket at `level
//! admin`, unix or TCP). No reload ever happens: a switch is a few `set server`
//! commands applied in-process, so keep-alive clients are never cut.
//!
//! The backend has one server per slot (`blue`, `green` by default). A switch sets the
//! new slot's server to its address (`set server b/s addr A port P`), its weight, and
//! `state ready`, and only then the old one to `state drain` (no new requests; the ones
//! in flight finish), so at no moment is there no server to send a request to. The
//! result is read back with `show servers state` (address, admin state, and the
//! server running) before `apply` returns; if it is not what was asked, the previous
//! states are put back and the deployment fails before the switch.
//!
//! `set server … addr` takes an IP address, so a slot given by host name
//! (`web-blue.internal:8080`) is resolved when the change is applied: its first address
//! that accepts a TCP connection (the first one if none does yet), as Cutover's own
//! dial would pick. HAProxy keeps that address until the next switch; a slot whose
//! address changes behind its name needs HAProxy's own `resolvers` instead.
//!
//! Statistics come from `show stat` per server: responses by status class, connection
//! and response errors (counted as upstream failures), current sessions (in flight),
//! and the average total time of the last 1024 requests (`ttime`). HAProxy keeps no
//! latency histogram, so each sample's new requests are put in the bucket of that
//! average: the p95 trigger then judges the average, which this module says out loud
//! rather than pretend otherwise.

mod socket;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use self::state::{parse_servers_state, parse_stat, ServerState};
use super::external::{bucket_of_secs, External};
use super::RouterError;
use crate::config::HaproxyRouterConfig;
use crate::domain::endpoint::Endpoint;
use crate::domain::routing::Target;
use crate::domain::stats::{StatsSnapshot, BUCKETS};
use crate::domain::Slot;

/// A wanted server: the slot, the IP address it is set to, its weight.
type Wanted = (Slot, SocketAddr, u32);

/// The address HAProxy is given for `endpoint`: itself when it is one; for a host, the
/// first resolved address that accepts a connection within a share of `timeout`, else
/// the first resolved one (the release may not listen yet; its health check decides).
async fn dial_addr(endpoint: &Endpoint, timeout: Duration) -> std::io::Result<SocketAddr> {
    if let Some(addr) = endpoint.as_addr() {
        return Ok(addr);
    }
    let addrs = tokio::time::timeout(timeout, endpoint.resolve())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "lookup timed out"))??;
    let each = (timeout / 4).min(Duration::from_secs(1));
    for addr in &addrs {
        let open = tokio::time::timeout(each, tokio::net::TcpStream::connect(addr)).await;
        if matches!(open, Ok(Ok(_))) {
            return Ok(*addr);
        }
    }
    Ok(addrs[0])
}

pub struct HaproxyRouter {
    service: String,
    config: HaproxyRouterConfig,
    /// Per slot: the counters seen at the last sample and the histogram built so far.
    latency: Mutex<HashMap<Slot, Accumulated>>,
}

/// HAProxy has no latency histogram: each sample's new requests go to the bucket of
/// the current average total time, accumulated here.
#[derive(Debug, Default, Clone, Copy)]
struct Accumulated {
    last_requests: u64,
    buckets: [u64; BUCKETS],
    latency_sum_us: u64,
}

impl HaproxyRouter {
    pub fn new(service: &str, config: HaproxyRouterConfig) -> Self {
        HaproxyRouter {
            service: service.to_string(),
            config,
            latency: Mutex::new(HashMap::new()),
        }
    }

    fn server(&self, slot: Slot) -> &str {
        match slot {
            Slot::Blue => &self.config.blue_server,
            Slot::Green => &self.config.green_server,
        }
    }

    fn slot_of(&self, server: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|s| self.server(*s) == server)
    }

    /// Sends one command; HAProxy answers errors in words, which become `Rejected`.
    async fn command(&self, cmd: &str) -> Result<String, RouterError> {
        socket::exchange(&self.config.admin, cmd, self.config.timeout).await
    }

    async fn servers(&self) -> Result<Vec<ServerState>, RouterError> {
        let b = &self.config.backend;
        let text = self.command(&format!("show servers state {b}")).await?;
        let all = parse_servers_state(&text)
            .map_err(|m| RouterError::Rejected(format!("haproxy: show servers state {b}: {m}")))?;
        for slot in Slot::ALL {
            if !all.iter().any(|s| s.name == self.server(slot)) {
                return Err(RouterError::Rejected(format!(
                    "haproxy: backend `{b}` has no server `{}` (the {slot} slot); define `server {} 127.0.0.1:1 disabled` in it",
                    self.server(slot),
                    self.server(slot)
                )));
            }
        }
        Ok(all)
    }

    /// Runs `set server` commands, each checked: HAProxy prints nothing for a state or
    /// weight change that worked, and a sentence otherwise.
    async fn set(&self, slot: Slot, what: &str) -> Result<(), RouterError> {
        let cmd = format!(
            "set server {}/{} {what}",
            self.config.backend,
            self.server(slot)
        );
        let out = self.command(&cmd).await?;
        let ok = out.is_empty()
            || out.starts_with("IP changed")
            || out.starts_with("no need to change")
            || out.contains("port changed");
        if ok {
            Ok(())
        } else {
            Err(RouterError::Rejected(format!("haproxy: `{cmd}`: {out}")))
        }
    }

    async fn point(&self, slot: Slot, addr: SocketAddr, weight: u32) -> Result<(), RouterError> {
        let ip = addr.ip();
        let port = addr.port();
        self.set(slot, &format!("addr {ip} port {port}")).await?;
        self.set(slot, &format!("weight {weight}")).await?;
        self.set(slot, "state ready").await
    }

    /// The IP address of each wanted slot (see the module docs for host names).
    async fn resolve(&self, want: &[(Target, u32)]) -> Result<Vec<Wanted>, RouterError> {
        let mut out = Vec::with_capacity(want.len());
        for (t, w) in want {
            let addr = dial_addr(&t.endpoint, self.config.timeout)
                .await
                .map_err(|e| {
                    RouterError::Rejected(format!(
                        "haproxy: cannot resolve the {} slot's {}: {e}",
                        t.slot, t.endpoint
                    ))
                })?;
            out.push((t.slot, addr, *w));
        }
        Ok(out)
    }

    /// Puts every slot server back as it was in `before`.
    async fn restore(&self, before: &[ServerState]) {
        for s in before {
            let Some(slot) = self.slot_of(&s.name) else {
                continue;
            };
            if let Some(addr) = s.addr {
                let _ = self
                    .set(slot, &format!("addr {} port {}", addr.ip(), addr.port()))
                    .await;
            }
            let _ = self.set(slot, &format!("weight {}", s.weight)).await;
            let _ = self.set(slot, s.admin_command()).await;
        }
    }

    /// Applies `want` (slot → weight, others drained) and verifies it, or restores.
    async fn change(&self, want: &[(Target, u32)]) -> Result<(), RouterError> {
        let want = self.resolve(want).await?;
        let before = self.servers().await?;
        let already = Slot::ALL.into_iter().all(|slot| {
            let Some(s) = before.iter().find(|s| s.name == self.server(slot)) else {
                return false;
            };
            match want.iter().find(|(t, _, _)| *t == slot) {
                Some((_, addr, w)) => {
                    s.addr == Some(*addr) && s.is_ready() && s.weight == *w && s.running
                }
                None => !s.is_ready() || s.weight == 0,
            }
        });
        if already {
            return Ok(());
        }
        let result = async {
            for (slot, addr, w) in &want {
                self.point(*slot, *addr, *w).await?;
            }
            for slot in Slot::ALL {
                if !want.iter().any(|(t, _, _)| *t == slot) {
                    self.set(slot, "state drain").await?;
                }
            }
            self.verify(&want).await
        }
        .await;
        if let Err(e) = result {
            self.restore(&before).await;
            return Err(e);
        }
        Ok(())
    }

    /// `show servers state` until every wanted server has its address, is ready and
    /// running (its health check, if any, passed), and the others take no new traffic.
    async fn verify(&self, want: &[Wanted]) -> Result<(), RouterError> {
        let deadline =
            tokio::time::Instant::now() + self.config.timeout.max(Duration::from_secs(2));
        loop {
            let now = self.servers().await?;
            let mut problem = None;
            for slot in Slot::ALL {
                let s = now
                    .iter()
                    .find(|s| s.name == self.server(slot))
                    .expect("checked by servers()");
                match want.iter().find(|(t, _, _)| *t == slot) {
                    Some((_, addr, w)) => {
                        if s.addr != Some(*addr) || !s.is_ready() || s.weight != *w {
                            problem = Some(format!(
                                "server {} is {s}, expected {addr} ready with weight {w}",
                                s.name
                            ));
                        } else if !s.running {
                            problem = Some(format!(
                                "server {} at {addr} is not up (its health check has not passed)",
                                s.name
                            ));
                        }
                    }
                    None if s.is_ready() && s.weight > 0 => {
                        problem = Some(format!("server {} still takes new requests ({s})", s.name))
                    }
                    None => {}
                }
            }
            match problem {
                None => return Ok(()),
                Some(p) if tokio::time::Instant::now() >= deadline => {
                    return Err(RouterError::Rejected(format!(
                        "haproxy: after the change, {p}"
                    )))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn stat(&self, slot: Slot) -> Result<state::ServerStat, RouterError> {
        let b = &self.config.backend;
        let text = self.command(&format!("show stat {b} 4 -1")).await?;
        parse_stat(&text, b, self.server(slot))
            .map_err(|m| RouterError::Rejected(format!("haproxy: show stat: {m}")))
    }
}

#[async_trait]
impl External for HaproxyRouter {
    const KIND: &'static str = "haproxy";

    fn service(&self) -> &str {
        &self.service
    }

    fn full_weight(&self) -> u32 {
        self.config.weight
    }

    async fn install(&self, servers: &[(Target, u32)]) -> Result<(), RouterError> {
        self.change(servers).await
    }

    async fn observed(&self) -> Result<Option<Slot>, RouterError> {
        let servers = self.servers().await?;
        Ok(servers
            .iter()
            .filter(|s| s.is_ready() && s.weight > 0)
            .filter_map(|s| Some((self.slot_of(&s.name)?, s.weight)))
            .max_by_key(|(_, w)| *w)
            .map(|(slot, _)| slot))
    }

    /// `show stat`'s current sessions of the slot's server.
    async fn in_flight(&self, slot: Slot) -> Result<Option<u64>, RouterError> {
        Ok(Some(self.stat(slot).await?.current))
    }

    async fn slot_stats(&self, slot: Slot) -> Option<StatsSnapshot> {
        let s = self.stat(slot).await.ok()?;
        let mut map = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let acc = map.entry(slot).or_default();
        let requests = s.requests();
        // Counters restart from zero when HAProxy restarts.
        let new = requests.checked_sub(acc.last_requests).unwrap_or(requests);
        acc.last_requests = requests;
        acc.buckets[bucket_of_secs(s.avg_total_ms as f64 / 1000.0)] += new;
        acc.latency_sum_us += new * s.avg_total_ms * 1000;
        Some(StatsSnapshot {
            requests,
            status_class: s.status_class,
            upstream_failed: s.upstream_failed,
            client_failed: 0,
            latency_buckets: acc.buckets,
            latency_sum_us: acc.latency_sum_us,
            in_flight: s.current as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_name_becomes_the_address_that_accepts_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let by_name = Endpoint::host("localhost", addr.port()).unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(dial_addr(&by_name, t).await.unwrap(), addr);
        let literal: Endpoint = "192.0.2.1:80".parse().unwrap();
        assert_eq!(
            dial_addr(&literal, t).await.unwrap(),
            "192.0.2.1:80".parse::<SocketAddr>().unwrap(),
            "an address is used as is, without a connection"
        );
        let nowhere = Endpoint::host("no-such-host.invalid", 80).unwrap();
        assert!(dial_addr(&nowhere, t).await.is_err());
    }
}
