//! The validated hook types (`[[services.<name>.hooks]]`), read by `hooks.rs`.
//!
//! Apart from the rules so that `model.rs` can re-export them without importing a
//! section file (config imports point one way; see `mod.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The named points of a deployment where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// Before the new release is started (not when a rollback finds it still running).
    BeforeStart,
    /// After every check (health, smoke, mirror) passed, before any traffic moves.
    PreSwitch,
    /// Right after all traffic moved to the new release (after a canary's last step).
    PostSwitch,
    /// After the deployment succeeded.
    AfterSuccess,
    /// After traffic went back to the previous release.
    OnRollback,
}

impl HookPoint {
    pub const ALL: [HookPoint; 5] = [
        HookPoint::BeforeStart,
        HookPoint::PreSwitch,
        HookPoint::PostSwitch,
        HookPoint::AfterSuccess,
        HookPoint::OnRollback,
    ];

    /// The name in the config file and in `CUTOVER_HOOK_POINT`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeStart => "before_start",
            HookPoint::PreSwitch => "pre_switch",
            HookPoint::PostSwitch => "post_switch",
            HookPoint::AfterSuccess => "after_success",
            HookPoint::OnRollback => "on_rollback",
        }
    }

    pub fn parse(text: &str) -> Option<HookPoint> {
        HookPoint::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Whether a failure here can still stop the deployment.
    pub fn can_abort(self) -> bool {
        matches!(
            self,
            HookPoint::BeforeStart | HookPoint::PreSwitch | HookPoint::PostSwitch
        )
    }

    /// `abort` where a failure can still stop the deployment, else `warn`.
    pub fn default_on_failure(self) -> OnFailure {
        if self.can_abort() {
            OnFailure::Abort
        } else {
            OnFailure::Warn
        }
    }
}

impl std::fmt::Display for HookPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed (or timed-out) hook does to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the deployment as a failed check would (before the switch: traffic never
    /// moves; after it: traffic goes back).
    Abort,
    /// Record and log the failure; the deployment carries on.
    Warn,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Abort => "abort",
            OnFailure::Warn => "warn",
        }
    }
}

/// One hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// Unique within the service; the name its results are recorded under.
    pub name: String,
    pub at: HookPoint,
    pub action: HookAction,
    /// Time the hook may take; then its process group is killed. Default 30s.
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HookAction {
    /// Run argv (no shell) in `dir`, in its own process group; exit 0 passes. The
    /// deployment is described by `CUTOVER_*` environment variables.
    Command {
        argv: Vec<String>,
        dir: PathBuf,
    },
    Http(HttpHook),
}

/// One HTTP request; it passes when the status is expected.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHook {
    /// `http://host[:port]/path` or `https://…` (the probe client, HTTP/1.1).
    pub url: http::Uri,
    /// Upper-case method. Default POST.
    pub method: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Empty = any 2xx.
    pub expect_status: Vec<u16>,
    /// How an `https://` URL's certificate is trusted (`ca_file`,
    /// `tls_insecure_skip_verify`; the system store by default).
    pub tls: crate::tls::ClientTls,
}

impl Hook {
    /// Default for [`Hook::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}
