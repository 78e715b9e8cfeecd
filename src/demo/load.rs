//! A bounded load generator for the demo and the end-to-end tests: a fixed request rate
//! over keep-alive connections to one address, counting every outcome, including which
//! release answered (from the demo app's `hello from <version>` body).
//!
//! Bounded by construction: it stops when asked or after `max_duration`, whichever
//! comes first, and only ever targets the address it is given (loopback in practice).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::watch;

/// What the load saw so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers, by status code.
    pub bad_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer at all (connection refused/reset, timeout).
    pub transport_errors: u64,
    /// 2xx answers by the release that gave them.
    pub by_version: BTreeMap<String, u64>,
}

impl LoadStats {
    /// Requests that did not get a 2xx answer.
    pub fn failed(&self) -> u64 {
        self.bad_status.values().sum::<u64>() + self.transport_errors
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &LoadStats) -> LoadStats {
        fn sub<K: Ord + Clone>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        }
        LoadStats {
            sent: self.sent - earlier.sent,
            ok: self.ok - earlier.ok,
            bad_status: sub(&self.bad_status, &earlier.bad_status),
            transport_errors: self.transport_errors - earlier.transport_errors,
            by_version: sub(&self.by_version, &earlier.by_version),
        }
    }
}

pub struct Load {
    stats: Arc<Mutex<LoadStats>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `rate` requests per second spread over `workers` connections to
    /// `http://addr{path}`, for at most `max_duration`.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        rate: u32,
        workers: u32,
        max_duration: Duration,
    ) -> Load {
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let (stop, stop_rx) = watch::channel(false);
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let workers = workers.max(1);
        let per_worker = Duration::from_secs_f64(workers as f64 / rate.max(1) as f64);
        let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("valid URI");
        let tasks = (0..workers)
            .map(|i| {
                let (client, stats, uri, mut stop_rx) =
                    (client.clone(), stats.clone(), uri.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    let start =
                        tokio::time::Instant::now() + per_worker.mul_f64(i as f64 / workers as f64);
                    let mut tick = tokio::time::interval_at(start, per_worker);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let deadline = tokio::time::sleep(max_duration);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            _ = &mut deadline => return,
                            _ = stop_rx.changed() => return,
                            _ = tick.tick() => {}
                        }
                        let result =
                            tokio::time::timeout(Duration::from_secs(10), one(&client, &uri)).await;
                        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                        s.sent += 1;
                        match result {
                            Ok(Ok((status, body))) if (200..300).contains(&status) => {
                                s.ok += 1;
                                let version = body
                                    .trim()
                                    .strip_prefix("hello from ")
                                    .unwrap_or("?")
                                    .to_string();
                                *s.by_version.entry(version).or_default() += 1;
                            }
                            Ok(Ok((status, _))) => *s.bad_status.entry(status).or_default() += 1,
                            _ => s.transport_errors += 1,
                        }
                    }
                })
            })
            .collect();
        Load { stats, stop, tasks }
    }

    pub fn stats(&self) -> LoadStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the load and returns the final counts.
    pub async fn stop(self) -> LoadStats {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let s = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s
    }
}

async fn one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &hyper::Uri,
) -> Result<(u16, String), String> {
    let resp = client.get(uri.clone()).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
