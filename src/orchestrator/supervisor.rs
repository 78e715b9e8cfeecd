//! Supervision of the live release between deployments.
//!
//! Why: a deployment watches its new release only until it succeeds. Afterwards, when
//! the live release died, the proxy answered 502 to every request (24k in 5 s in a
//! test) and nothing reacted or logged. Now one task per service runs the service's
//! health checks against the live slot at their interval whenever no deployment runs.
//!
//! On failure (`unhealthy_threshold` failed rounds in a row, or at once when the release
//! exited or is gone): an error log, a `live_unhealthy` event and notification, then
//! - with `supervise.failover = true` and a warm standby that is running and passes a
//!   health round: traffic switches to it at once (`live_failover`); the failed release
//!   is stopped;
//! - otherwise the live release is started again through its runtime (`live_restarted`),
//!   with a backoff doubling from 1 s up to `supervise.max_backoff`; a restarted release
//!   gets the health deadline to come up before it is judged again (an exit still
//!   counts at once).
//!
//! A recovery is logged and sent as `live_recovered`. The supervisor acts only under the
//! service's guard and re-checks that no deployment began: it never touches a slot a
//! deployment owns. `status` shows what it saw last ([`LiveHealth`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::controller::Controller;
use crate::checks::{self, ProbeTarget};
use crate::config::ServiceConfig;
use crate::domain::{now_ms, Slot, UnixMillis};
use crate::notify::NotifyEvent;
use crate::runtime::{SlotSpec, SlotStatus};
use crate::store::{ServiceRecord, SlotState};

/// What the supervisor last saw of a service's live release.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LiveHealth {
    pub slot: Slot,
    pub healthy: bool,
    /// `ok`, or what failed.
    pub detail: String,
    pub consecutive_failures: u32,
    /// Times the supervisor started the live release again since the daemon started.
    pub restarts: u32,
    pub checked_at: UnixMillis,
}

/// One service's supervision state.
struct Watcher {
    name: String,
    cfg: ServiceConfig,
    failures: u32,
    /// The failure was reported (log, event, notification) and not yet recovered.
    reported: bool,
    backoff: Duration,
    /// No restart before this (backoff), and no judging a restarted release before it
    /// had the health deadline to come up.
    quiet_until: Instant,
    restarts: u32,
}

impl Controller {
    /// Supervises every service's live release until the task is aborted.
    pub async fn supervise(self: Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        for (name, cfg) in &self.config().services {
            if cfg.supervise.enabled {
                let w = Watcher {
                    name: name.clone(),
                    cfg: cfg.clone(),
                    failures: 0,
                    reported: false,
                    backoff: Duration::from_secs(1),
                    quiet_until: Instant::now(),
                    restarts: 0,
                };
                tasks.spawn(self.clone().supervise_service(w));
            }
        }
        // Dropping the set (when this task is aborted) aborts every service's task.
        while tasks.join_next().await.is_some() {}
    }

    async fn supervise_service(self: Arc<Self>, mut w: Watcher) {
        loop {
            tokio::time::sleep(w.cfg.health.interval).await;
            if self.deploying(&w.name) {
                // The deployment watches its slots; start afresh after it.
                w.failures = 0;
                w.reported = false;
                continue;
            }
            let rec = match self.store().service(&w.name) {
                Ok(rec) => rec,
                Err(e) => {
                    tracing::warn!(service = %w.name, error = %e, "supervisor: cannot read the store");
                    continue;
                }
            };
            let Some(live) = rec.live else {
                continue;
            };
            let Some((healthy, gone, detail)) = self.judge(&w, &rec, live).await else {
                // Cutover is out of descriptors: nothing was learnt about the release,
                // and restarting it would turn a flood of connections into an outage.
                tracing::warn!(service = %w.name, %live, "health round not counted: cutover is out of file descriptors");
                continue;
            };
            self.set_live_health(
                &w.name,
                LiveHealth {
                    slot: live,
                    healthy,
                    detail: detail.clone(),
                    consecutive_failures: if healthy { 0 } else { w.failures + 1 },
                    restarts: w.restarts,
                    checked_at: now_ms(),
                },
            );
            if healthy {
                if w.reported {
                    let msg = format!("the live release in {live} is healthy again");
                    tracing::info!(service = %w.name, %live, "{msg}");
                    self.supervisor_event(&w.name, &rec, "live_recovered", &msg);
                }
                w.failures = 0;
                w.reported = false;
                w.backoff = Duration::from_secs(1);
                continue;
            }
            w.failures += 1;
            let judged = gone
                || (w.failures >= w.cfg.health.unhealthy_threshold
                    && Instant::now() >= w.quiet_until);
            if !judged {
                continue;
            }
            self.act(&mut w, rec, live, detail).await;
        }
    }

    /// Health of the live release now: (healthy, gone, detail); `None` when the round
    /// failed only for want of Cutover's own descriptors (inconclusive).
    async fn judge(
        &self,
        w: &Watcher,
        rec: &ServiceRecord,
        live: Slot,
    ) -> Option<(bool, bool, String)> {
        let Some(runtime) = self.runtimes_get(&w.name) else {
            return Some((false, false, "no runtime".into()));
        };
        Some(match runtime.status(&w.name, live).await {
            SlotStatus::Exited { detail } => (false, true, format!("exited: {detail}")),
            SlotStatus::NotRunning => (false, true, "not running".into()),
            SlotStatus::Running { .. } => {
                match ProbeTarget::of_slot(&rec.name, &rec.slots[live.index()]) {
                    None => (false, true, "no address".into()),
                    Some(target) => {
                        let target = target.with_tls(w.cfg.upstream_tls.clone());
                        let results = checks::health_round(&w.cfg.health, &target).await;
                        if checks::inconclusive(&results) {
                            return None;
                        }
                        let healthy = results.iter().all(|r| r.ok);
                        (healthy, false, checks::summarize(&results))
                    }
                }
            }
        })
    }

    /// The live release failed: report it, then fail over or restart, under the
    /// service's guard and only if no deployment began meanwhile.
    async fn act(&self, w: &mut Watcher, rec: ServiceRecord, live: Slot, detail: String) {
        let guard = self.guard(&w.name).unwrap_or_default();
        let _held = guard.lock().await;
        if self.deploying(&w.name) || !matches!(self.store().active_deployment(&w.name), Ok(None)) {
            return;
        }
        if !w.reported {
            w.reported = true;
            let msg = format!("the live release in {live} failed: {detail}");
            tracing::error!(service = %w.name, %live, %detail, "the live release failed");
            self.supervisor_event(&w.name, &rec, "live_unhealthy", &msg);
        }
        if w.cfg.supervise.failover && self.fail_over(w, &rec, live).await {
            w.failures = 0;
            w.reported = false;
            return;
        }
        if Instant::now() < w.quiet_until {
            return;
        }
        self.restart(w, &rec, live).await;
        w.failures = 0;
        w.quiet_until = Instant::now() + w.backoff.max(w.cfg.health.deadline);
        w.backoff = (w.backoff * 2).min(w.cfg.supervise.max_backoff);
    }

    /// Switches traffic to the warm standby if it runs and passes a health round.
    async fn fail_over(&self, w: &Watcher, rec: &ServiceRecord, live: Slot) -> bool {
        let standby = live.other();
        let s = &rec.slots[standby.index()];
        let Some(runtime) = self.runtimes_get(&w.name) else {
            return false;
        };
        if s.state != SlotState::Standby
            || !matches!(
                runtime.status(&w.name, standby).await,
                SlotStatus::Running { .. }
            )
        {
            return false;
        }
        let Some(target) = ProbeTarget::of_slot(&rec.name, s) else {
            return false;
        };
        let target = target.with_tls(w.cfg.upstream_tls.clone());
        if !checks::health_round(&w.cfg.health, &target)
            .await
            .iter()
            .all(|r| r.ok)
        {
            return false;
        }
        let Some(to) = s.target(&w.name) else {
            return false;
        };
        if let Err(e) = self.router(&w.name).apply(&w.name, Some(to), None).await {
            tracing::error!(service = %w.name, error = %e, "supervisor: cannot fail over");
            return false;
        }
        let at = now_ms();
        let mut now_live = s.clone();
        now_live.state = SlotState::Live;
        now_live.standby_until = None;
        let mut failed = rec.slots[live.index()].clone();
        failed.state = SlotState::Failed;
        let msg = format!(
            "traffic failed over to the warm standby in {standby} ({})",
            now_live.version.clone().unwrap_or_default()
        );
        let stored = self
            .store()
            .update_slot(&w.name, &now_live, Some(Some(standby)), None, at)
            .and_then(|()| self.store().update_slot(&w.name, &failed, None, None, at));
        if let Err(e) = stored {
            tracing::error!(service = %w.name, error = %e, "supervisor: cannot record the failover");
        }
        tracing::warn!(service = %w.name, from = %live, to = %standby, "{msg}");
        self.supervisor_event(&w.name, rec, "live_failover", &msg);
        let _ = runtime.stop(&w.name, live).await;
        true
    }

    /// Starts the live release again in its slot and points traffic at it.
    async fn restart(&self, w: &mut Watcher, rec: &ServiceRecord, live: Slot) {
        let Some(runtime) = self.runtimes_get(&w.name) else {
            return;
        };
        let mut s = rec.slots[live.index()].clone();
        let Some(version) = s.version.clone() else {
            return;
        };
        let spec = SlotSpec {
            service: w.name.clone(),
            slot: live,
            version: version.clone(),
            deployment: None,
            env: crate::database::release_env(Some(&w.cfg), live),
        };
        w.restarts += 1;
        match runtime.start(&spec).await {
            Ok(r) => {
                s.set_running(&r.endpoint, &r.handle, &r.identity);
                s.state = SlotState::Live;
                let msg = format!(
                    "restarted the live release {version} in {live} (restart {})",
                    w.restarts
                );
                if let Err(e) = self.store().update_slot(&w.name, &s, None, None, now_ms()) {
                    tracing::error!(service = %w.name, error = %e, "supervisor: cannot record the restart");
                }
                let mut slots = rec.slots.clone();
                slots[live.index()] = s;
                self.install_route(&w.name, &slots, Some(live)).await;
                tracing::warn!(service = %w.name, %live, %version, "{msg}");
                self.supervisor_event(&w.name, rec, "live_restarted", &msg);
            }
            Err(e) => {
                let msg = format!("cannot restart the live release {version} in {live}: {e}");
                tracing::error!(service = %w.name, %live, error = %e, "supervisor: cannot restart the live release");
                self.supervisor_event(&w.name, rec, "live_unhealthy", &msg);
            }
        }
    }

    /// An event in the log (and the live feed) and a notification.
    fn supervisor_event(&self, name: &str, rec: &ServiceRecord, kind: &str, msg: &str) {
        let at = now_ms();
        if let Err(e) = self.store().append_event(name, None, kind, msg, None, at) {
            tracing::error!(service = name, error = %e, "supervisor: cannot record an event");
        }
        let version = rec
            .live
            .and_then(|l| rec.slots[l.index()].version.clone())
            .unwrap_or_default();
        self.notifier().send(NotifyEvent {
            event: kind.to_string(),
            service: name.to_string(),
            deployment_id: 0,
            version,
            message: msg.to_string(),
            at,
        });
    }
}
