//! Rules for `[services.<name>.health]`: the checks that gate a new slot before it gets
//! traffic and keep watching the live one. No checks means a TCP connect (the runtime
//! decides that, so an absent section is simply the model's default).

use std::collections::BTreeMap;

use super::model::{HealthCheck, HealthConfig, HttpProbe, Probe};
use super::raw::{RawCheck, RawHealth, RawHttpProbe};
use super::read::{join, read, read_opt, Problems, Sub};
use super::rules::{
    argv_ok, conditions, duration, int_range, positive, status, unique_name, url_path,
};

pub(super) fn health(
    service_at: &str,
    sub: Option<&Sub<RawHealth>>,
    p: &mut Problems,
) -> Option<HealthConfig> {
    let r = read_opt(sub, &join(service_at, "health"), p)?;
    let d = HealthConfig::default();
    let interval = duration(&r, "interval", r.raw.interval, d.interval)
        .and_then(|v| positive(p, r.key("interval"), v));
    let timeout = duration(&r, "timeout", r.raw.timeout, d.timeout)
        .and_then(|v| positive(p, r.key("timeout"), v));
    let deadline = duration(&r, "deadline", r.raw.deadline, d.deadline)
        .and_then(|v| positive(p, r.key("deadline"), v));
    let mut threshold = |field: &str, value: Option<i64>, default: u32| {
        r.or(field, value, i64::from(default))
            .and_then(|v| int_range(p, r.key(field), v, 1, i64::from(u32::MAX)))
            .map(|v| v as u32)
    };
    let healthy = threshold(
        "healthy_threshold",
        r.raw.healthy_threshold,
        d.healthy_threshold,
    );
    let unhealthy = threshold(
        "unhealthy_threshold",
        r.raw.unhealthy_threshold,
        d.unhealthy_threshold,
    );
    let checks = r.optional("checks", r.raw.checks.as_ref(), |subs| {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let checks: Vec<Option<HealthCheck>> = subs
            .iter()
            .enumerate()
            .map(|(i, sub)| check(&format!("{}[{i}]", r.key("checks")), i, sub, &mut seen, p))
            .collect();
        checks.into_iter().collect::<Option<Vec<_>>>()
    });
    Some(HealthConfig {
        interval: interval?,
        timeout: timeout?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
        deadline: deadline?,
        checks: checks?.unwrap_or_default(),
    })
}

fn check(
    at: &str,
    i: usize,
    sub: &Sub<RawCheck>,
    seen: &mut BTreeMap<String, usize>,
    p: &mut Problems,
) -> Option<HealthCheck> {
    let r = read::<RawCheck>(sub.value(), at, p)?;
    let name = r
        .required("name", r.raw.name.as_deref(), "a name like \"live\"", p)
        .and_then(|n| unique_name(p, r.key("name"), n, i, seen, "checks").map(|_| n.to_string()));
    let mut given: Vec<&str> = Vec::new();
    if r.raw.http.is_some() || r.rejected("http") {
        given.push("http");
    }
    if r.raw.tcp == Some(true) || r.rejected("tcp") {
        given.push("tcp");
    }
    if r.raw.command.is_some() || r.rejected("command") {
        given.push("command");
    }
    const ONE_OF: &str = "expected exactly one of `http = { path = \"/health\" }`, `tcp = true` or `command = [...]`";
    let probe = match given.as_slice() {
        [] => {
            p.add(at, format!("no probe, {ONE_OF}"));
            None
        }
        ["http"] => r
            .raw
            .http
            .as_ref()
            .and_then(|sub| http_probe(&r.key("http"), sub, p))
            .map(Probe::Http),
        ["tcp"] => (!r.rejected("tcp")).then_some(Probe::Tcp),
        ["command"] => r
            .raw
            .command
            .as_ref()
            .filter(|argv| argv_ok(p, &r.key("command"), argv))
            .map(|argv| Probe::Command(argv.clone())),
        several => {
            p.add(at, format!("found {}, {ONE_OF}", several.join(" and ")));
            None
        }
    };
    Some(HealthCheck {
        name: name?,
        probe: probe?,
    })
}

fn http_probe(at: &str, sub: &Sub<RawHttpProbe>, p: &mut Problems) -> Option<HttpProbe> {
    let r = read::<RawHttpProbe>(sub.value(), at, p)?;
    let path = r
        .required("path", r.raw.path.as_deref(), "a path like \"/health\"", p)
        .and_then(|path| url_path(p, r.key("path"), path));
    let status = r.optional("status", r.raw.status, |s| status(p, r.key("status"), s));
    let json = r.optional("json", r.raw.json.as_ref(), |m| {
        conditions(p, &r.key("json"), m)
    });
    Some(HttpProbe {
        path: path?,
        expect_status: status?,
        json: json?.unwrap_or_default(),
        body_contains: r.raw.body_contains.clone(),
    })
}
