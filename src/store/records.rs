//! Plain records read from and written to the store. Serialised as-is by the API, so
//! field names here are part of the stable `--json` output (see README "JSON output").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::endpoint::Endpoint;
use crate::domain::routing::{default_identity, Target};
use crate::domain::{Slot, UnixMillis};

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Nothing was ever deployed here, or it was cleaned up.
    Empty,
    /// A release is being started and checked.
    Starting,
    /// Started and checked, not yet receiving traffic.
    Ready,
    /// Receiving normal traffic.
    Live,
    /// The previous release, kept running for instant rollback until `standby_until`.
    Standby,
    /// Stopped; the release is remembered so rollback can restart it.
    Stopped,
    /// Failed to start or failed its checks.
    Failed,
}

impl SlotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Starting => "starting",
            SlotState::Ready => "ready",
            SlotState::Live => "live",
            SlotState::Standby => "standby",
            SlotState::Stopped => "stopped",
            SlotState::Failed => "failed",
        }
    }

    pub const ALL: [SlotState; 7] = [
        SlotState::Empty,
        SlotState::Starting,
        SlotState::Ready,
        SlotState::Live,
        SlotState::Standby,
        SlotState::Stopped,
        SlotState::Failed,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub slot: Slot,
    pub state: SlotState,
    /// Release in the slot (kept after it stops, for rollback).
    pub version: Option<String>,
    /// Where the release answers while it runs: `ip:port`, or `host:port` resolved when
    /// dialled (the text of an [`Endpoint`]).
    pub addr: Option<String>,
    /// Runtime handle (pid, container id) for adoption after a restart.
    pub handle: Option<String>,
    /// The slot's router-specific identity while it runs (`web-blue`, a container or
    /// Compose project name); see [`Target::identity`]. A row written before the
    /// column existed reads back as [`default_identity`].
    #[serde(default)]
    pub identity: Option<String>,
    /// For `standby`: when the slot gets stopped.
    pub standby_until: Option<UnixMillis>,
    pub updated_at: UnixMillis,
}

impl SlotRecord {
    pub fn empty(slot: Slot) -> Self {
        Self {
            slot,
            state: SlotState::Empty,
            version: None,
            addr: None,
            handle: None,
            identity: None,
            standby_until: None,
            updated_at: 0,
        }
    }

    /// The endpoint the release answers on, while it runs.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.addr.as_deref().and_then(|a| a.parse().ok())
    }

    /// The routing target of the slot while its release runs (the identity defaults to
    /// `<service>-<slot>` when the row has none).
    pub fn target(&self, service: &str) -> Option<Target> {
        Some(Target {
            slot: self.slot,
            endpoint: self.endpoint()?,
            identity: self
                .identity
                .clone()
                .unwrap_or_else(|| default_identity(service, self.slot)),
        })
    }

    /// Records a started (or adopted) release: where it answers, its runtime handle and
    /// its identity.
    pub fn set_running(&mut self, endpoint: &Endpoint, handle: &str, identity: &str) {
        self.addr = Some(endpoint.to_string());
        self.handle = Some(handle.to_string());
        self.identity = Some(identity.to_string());
    }

    /// Forgets where a release that no longer runs answered (the version stays, for
    /// rollback).
    pub fn clear_running(&mut self) {
        self.addr = None;
        self.handle = None;
        self.identity = None;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// The slot receiving normal traffic, if any.
    pub live: Option<Slot>,
    /// Indexed by [`Slot::index`]: blue, green.
    pub slots: [SlotRecord; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// A new release into the idle slot.
    Deploy,
    /// Traffic back to the previous release.
    Rollback,
}

impl DeploymentKind {
    pub const ALL: [DeploymentKind; 2] = [DeploymentKind::Deploy, DeploymentKind::Rollback];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentKind::Deploy => "deploy",
            DeploymentKind::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentOutcome {
    /// The new release is live and the watch passed.
    Succeeded,
    /// Failed before traffic moved; the live slot never changed.
    Failed,
    /// Traffic moved and was moved back.
    RolledBack,
    /// Stopped by `abort` before traffic moved.
    Aborted,
    /// The daemon stopped before the switch; nothing moved.
    Interrupted,
}

impl DeploymentOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentOutcome::Succeeded => "succeeded",
            DeploymentOutcome::Failed => "failed",
            DeploymentOutcome::RolledBack => "rolled_back",
            DeploymentOutcome::Aborted => "aborted",
            DeploymentOutcome::Interrupted => "interrupted",
        }
    }

    pub const ALL: [DeploymentOutcome; 5] = [
        DeploymentOutcome::Succeeded,
        DeploymentOutcome::Failed,
        DeploymentOutcome::RolledBack,
        DeploymentOutcome::Aborted,
        DeploymentOutcome::Interrupted,
    ];
}

/// `Display` and `FromStr` as the snake_case names stored in the database and shown
/// to people; parsing an unknown name is an error naming what was expected.
macro_rules! text_enum {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let names: Vec<&str> = <$ty>::ALL.iter().map(|v| v.as_str()).collect();
                        format!(
                            "unknown {} `{s}` (expected one of: {})",
                            $what,
                            names.join(", ")
                        )
                    })
            }
        }
    };
}

text_enum!(SlotState, "slot state");
text_enum!(DeploymentKind, "deployment kind");
text_enum!(DeploymentOutcome, "deployment outcome");

/// What `begin_deployment` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub service: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub target_slot: Slot,
    pub from_slot: Option<Slot>,
    pub from_version: Option<String>,
    pub triggered_by: String,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: String,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    /// How the phase ended (`ok`, or why not).
    pub result: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Phase the check ran in (`wait_healthy`, `smoke`, `watch`, `check`).
    pub phase: String,
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub duration_ms: u64,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: i64,
    pub service: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub target_slot: Slot,
    pub from_slot: Option<Slot>,
    pub from_version: Option<String>,
    /// Current (or last) phase name.
    pub phase: String,
    /// `None` while the deployment runs.
    pub outcome: Option<DeploymentOutcome>,
    pub reason: Option<String>,
    pub triggered_by: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// When traffic moved to the target slot, if it did.
    pub switched_at: Option<UnixMillis>,
    pub phases: Vec<PhaseRecord>,
    pub checks: Vec<CheckRecord>,
    /// Analysis measurements (canary steps, watch), in order.
    #[serde(default)]
    pub measurements: Vec<MeasurementRecord>,
}

/// One line of the event log, and one message of the live feed (`GET /api/v1/events`).
///
/// `kind` says what happened: `deploy_started`/`rollback_started`, `phase` (a phase was
/// entered; `data.phase`), `check` (`data` is a [`CheckRecord`]), `measurement` (`data`
/// is a [`MeasurementRecord`]), `watch` (a watch sample: `data.requests`,
/// `data.error_rate`, `data.p95_ms`, `data.left_ms`), `deployment` (a step's log line),
/// `deployment_<outcome>` (the last event of a deployment), and slot events outside
/// deployments (`boot`, `standby_stopped`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub at: UnixMillis,
    pub service: String,
    pub deployment_id: Option<i64>,
    pub kind: String,
    pub message: String,
    /// The structured payload, for kinds that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl EventRecord {
    /// The event that ends a deployment (`deployment_succeeded`, `deployment_failed`, ...).
    pub fn is_final(&self) -> bool {
        self.kind.starts_with("deployment_") && self.deployment_id.is_some()
    }
}

/// Everything one state-machine step changes, written in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    pub deployment_id: i64,
    pub at: UnixMillis,
    /// Enter this phase: the open phase is closed with `phase_result` and a new one opened.
    pub enter_phase: Option<String>,
    /// Result recorded on the phase being closed (default `ok`).
    pub phase_result: Option<String>,
    /// Slot rows to write (upsert) for the deployment's service.
    pub slots: Vec<SlotRecord>,
    /// `Some(x)`: set the service's live slot to `x`.
    pub live: Option<Option<Slot>>,
    /// Set when traffic moved to the target slot.
    pub switched_at: Option<UnixMillis>,
    /// Finishes the deployment (closes the open phase too).
    pub finish: Option<(DeploymentOutcome, String)>,
    /// Appended to the event log: (kind, message).
    pub event: Option<(String, String)>,
}

/// Deployments per (service, outcome), for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeCount {
    pub service: String,
    pub outcome: DeploymentOutcome,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_name_parses_back_to_itself_and_serde_agrees() {
        for v in SlotState::ALL {
            assert_eq!(v.as_str().parse::<SlotState>().unwrap(), v);
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for v in DeploymentKind::ALL {
            assert_eq!(v.as_str().parse::<DeploymentKind>().unwrap(), v);
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for v in DeploymentOutcome::ALL {
            assert_eq!(v.as_str().parse::<DeploymentOutcome>().unwrap(), v);
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_that_lists_the_expected_ones() {
        let err = "rolledback".parse::<DeploymentOutcome>().unwrap_err();
        assert!(
            err.contains("`rolledback`") && err.contains("rolled_back"),
            "{err}"
        );
        assert!("".parse::<SlotState>().is_err());
        assert!("Deploy".parse::<DeploymentKind>().is_err());
    }
}

/// One measurement of one analysis metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasurementRecord {
    /// Where it was taken: `step 2 (25%)`, `watch`.
    pub phase: String,
    pub metric: String,
    /// The measured value, when the metric has one.
    pub value: Option<f64>,
    /// `pass`, `fail`, `inconclusive` or `error`.
    pub verdict: String,
    pub detail: String,
    pub at: UnixMillis,
}
