//! Rules for `[[services.<name>.hooks]]`: commands and HTTP calls run at named points
//! of a deployment, each with a timeout and a failure policy.
//!
//! Why the policy is restricted by point: `abort` means "stop this deployment and leave
//! traffic where it should be". After `after_success` the deployment has succeeded and
//! after `on_rollback` traffic is already back, so nothing is left to abort there and
//! saying `abort` is a mistake we report rather than silently ignore.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::client_tls::client_tls;
use super::hook_types::{Hook, HookAction, HookPoint, HttpHook, OnFailure};
use super::raw::{RawHook, RawHttpHook};
use super::read::{join, read, Problems, Sub};
use super::rules::{duration, http_method, positive, status, unique_name};
use super::smoke::headers;

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
                Some(u)
                    if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() =>
                {
                    Some(u)
                }
                _ => {
                    p.add(
                        r.key("url"),
                        format!(
                            "expected a URL like \"http://127.0.0.1:9000/deployed\", got {text:?}"
                        ),
                    );
                    None
                }
            }
        });
    let method = r
        .or("method", r.raw.method.as_deref(), "POST")
        .and_then(|m| http_method(p, r.key("method"), m, "\"POST\" or \"GET\""));
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
    let tls = client_tls(
        &r,
        r.raw.ca_file.as_deref(),
        r.raw.tls_insecure_skip_verify,
        p,
    );
    Some(HttpHook {
        tls: tls?,
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
