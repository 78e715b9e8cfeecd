//! Rules for `[[services.<name>.hooks]]`: commands and HTTP calls run at named points
//! of a deployment, each with a timeout and a failure policy.
//!
//! Why the policy is restricted by point: `abort` means "stop this deployment and leave
//! traffic where it should be". After `after_success` the deployment has succeeded and
//! after `on_rollback` traffic is already back, so nothing is left to abort there and
//! saying `abort` is a mistake we report rather than silently ignore.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::read::{join, read, Problems, Sub};
use super::smoke::headers;
use super::validate::{duration, positive, status, unique_name};
use super::values::RawDuration;

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
    /// `http://host[:port]/path` (the probe client speaks plain HTTP/1.1).
    pub url: http::Uri,
    /// Upper-case method. Default POST.
    pub method: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Empty = any 2xx.
    pub expect_status: Vec<u16>,
}

impl Hook {
    /// Default for [`Hook::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// `[[services.<name>.hooks]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub name: Option<String>,
    pub at: Option<String>,
    pub command: Option<Vec<String>>,
    pub http: Option<Sub<RawHttpHook>>,
    pub timeout: Option<RawDuration>,
    pub on_failure: Option<String>,
}

/// `http = { url = "...", ... }` of a hook.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpHook {
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub expect_status: Option<Vec<i64>>,
}

/// Reads every hook of a service. `dir` is where commands run: the process runtime's
/// `workdir`, else the config file's directory.
pub(super) fn hooks(
    service_at: &str,
    subs: Option<&Vec<Sub<RawHook>>>,
    dir: PathBuf,
    p: &mut Problems,
) -> Option<Vec<Hook>> {
    let Some(subs) = subs else {
        return Some(Vec::new());
    };
    let at = join(service_at, "hooks");
    let mut seen = BTreeMap::new();
    let hooks: Vec<Option<Hook>> = subs
        .iter()
        .enumerate()
        .map(|(i, sub)| hook(&format!("{at}[{i}]"), i, sub, &dir, &mut seen, p))
        .collect();
    hooks.into_iter().collect()
}

fn hook(
    at: &str,
    i: usize,
    sub: &Sub<RawHook>,
    dir: &std::path::Path,
    seen: &mut BTreeMap<String, usize>,
    p: &mut Problems,
) -> Option<Hook> {
    let r = read::<RawHook>(sub.value(), at, p)?;
    let name = r
        .required("name", r.raw.name.as_deref(), "a name like \"migrate\"", p)
        .and_then(|n| unique_name(p, r.key("name"), n, i, seen, "hooks").map(|_| n.to_string()));
    let names = HookPoint::ALL.map(HookPoint::as_str).join(", ");
    let point = r
        .required("at", r.raw.at.as_deref(), &format!("one of {names}"), p)
        .and_then(|text| {
            let point = HookPoint::parse(text);
            if point.is_none() {
                p.add(
                    r.key("at"),
                    format!("expected one of {names}, got {text:?}"),
                );
            }
            point
        });
    let timeout = duration(&r, "timeout", r.raw.timeout, Hook::DEFAULT_TIMEOUT)
        .and_then(|v| positive(p, r.key("timeout"), v));
    let on_failure = r
        .optional("on_failure", r.raw.on_failure.as_deref(), |text| {
            let policy = match text {
                "abort" => Some(OnFailure::Abort),
                "warn" => Some(OnFailure::Warn),
                _ => {
                    p.add(
                        r.key("on_failure"),
                        format!("expected \"abort\" or \"warn\", got {text:?}"),
                    );
                    None
                }
            }?;
            if let (OnFailure::Abort, Some(point)) = (policy, point.filter(|pt| !pt.can_abort())) {
                let why = match point {
                    HookPoint::AfterSuccess => "the deployment has already succeeded",
                    _ => "traffic is already back on the previous release",
                };
                p.add(
                    r.key("on_failure"),
                    format!("on_failure = \"abort\" is not possible at {point}: {why}, so there is nothing left to abort; expected \"warn\" (the default there)"),
                );
                return None;
            }
            Some(policy)
        });

    const ONE_OF: &str =
        "expected exactly one of `command = [...]` or `http = { url = \"http://...\" }`";
    let has_command = r.raw.command.is_some() || r.rejected("command");
    let has_http = r.raw.http.is_some() || r.rejected("http");
    let action = match (has_command, has_http) {
        (false, false) => {
            p.add(at, format!("no action, {ONE_OF}"));
            None
        }
        (true, true) => {
            p.add(at, format!("found command and http, {ONE_OF}"));
            None
        }
        (true, false) => r.raw.command.as_ref().and_then(|argv| {
            let key = r.key("command");
            match argv.first() {
                None => p.add(
                    key,
                    "expected a non-empty argv like [\"./migrate.sh\", \"up\"], got []",
                ),
                Some(prog) if prog.trim().is_empty() => {
                    p.add(format!("{key}[0]"), "expected a program name, got \"\"")
                }
                Some(_) => {
                    return Some(HookAction::Command {
                        argv: argv.clone(),
                        dir: dir.to_path_buf(),
                    })
                }
            }
            None
        }),
        (false, true) => r
            .raw
            .http
            .as_ref()
            .and_then(|sub| http_hook(&r.key("http"), sub, p))
            .map(HookAction::Http),
    };
    let point = point?;
    Some(Hook {
        name: name?,
        at: point,
        action: action?,
        timeout: timeout?,
        on_failure: on_failure?.unwrap_or(point.default_on_failure()),
    })
}

fn http_hook(at: &str, sub: &Sub<RawHttpHook>, p: &mut Problems) -> Option<HttpHook> {
    let r = read::<RawHttpHook>(sub.value(), at, p)?;
    let url = r
        .required(
            "url",
            r.raw.url.as_deref(),
            "a URL like \"http://127.0.0.1:9000/deployed\"",
            p,
        )
        .and_then(|text| {
            let uri: Option<http::Uri> = text.parse().ok();
            match uri {
                Some(u) if u.scheme_str() == Some("http") && u.host().is_some() => Some(u),
                Some(u) if u.scheme_str() == Some("https") => {
                    p.add(r.key("url"), format!("https is not supported for hook requests (they use Cutover's plain HTTP/1.1 probe client), expected an http:// URL, got {text:?}"));
                    None
                }
                _ => {
                    p.add(
                        r.key("url"),
                        format!("expected a URL like \"http://127.0.0.1:9000/deployed\", got {text:?}"),
                    );
                    None
                }
            }
        });
    let method = r
        .or("method", r.raw.method.as_deref(), "POST")
        .and_then(|m| {
            let upper = m.trim().to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(_) if !upper.is_empty() => Some(upper),
                _ => {
                    p.add(
                        r.key("method"),
                        format!("expected an HTTP method like \"POST\" or \"GET\", got {m:?}"),
                    );
                    None
                }
            }
        });
    let headers = r.optional("headers", r.raw.headers.as_ref(), |h| {
        headers(p, &r.key("headers"), h)
    });
    let expect_status = r.optional("expect_status", r.raw.expect_status.as_ref(), |list| {
        let before = p.count();
        let codes: Vec<u16> = list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| status(p, format!("{}[{i}]", r.key("expect_status")), *s))
            .collect();
        (p.count() == before).then_some(codes)
    });
    Some(HttpHook {
        url: url?,
        method: method?,
        headers: headers?.unwrap_or_default(),
        body: r.raw.body.clone(),
        expect_status: expect_status?.unwrap_or_default(),
    })
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
