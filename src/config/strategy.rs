//! Rules for `[services.<name>.strategy]` and `[services.<name>.mirror]`: how a new
//! release takes traffic, and whether live traffic is copied to it first.
//!
//! Three ways to write a canary, all validated into the same list of steps so the
//! state machine knows only one shape: explicit `steps`, the `linear` shorthand
//! (`step` percent `every` duration) and AWS CodeDeploy's presets (`preset =
//! "canary-10-5m"`). Reaching 100 % is never a step: it is the switch that ends the
//! canary and starts the watch, so weights stop below 100.
//!
//! Whether a step runs the analysis defaults to whether the service has an
//! `[analysis]` table: a step cannot analyse without metrics, and "analyze by default"
//! must not make every analysis-less canary an error.

use std::time::Duration;

use super::delivery::{CanaryConfig, CanaryStep, MirrorConfig, Pause, Strategy};
use super::raw::{RawCanaryStep, RawMirror, RawStrategy};
use super::read::{join, read, read_opt, Problems, Read, Sub};
use super::rules::{int_range, positive};
use super::values::parse_duration;

const KINDS: &str = "\"blue-green\", \"canary\" or \"linear\"";
const UNTIL_PROMOTED: &str = "until-promoted";

/// `has_analysis`: the service has an `[analysis]` table (valid or not).
pub(super) fn strategy(
    service_at: &str,
    sub: Option<&Sub<RawStrategy>>,
    has_analysis: bool,
    p: &mut Problems,
) -> Option<Strategy> {
    let r = read_opt(sub, &join(service_at, "strategy"), p)?;
    let before = p.count();
    let sticky = r.or("sticky", r.raw.sticky, true);
    let strategy = if r.raw.preset.is_some() || r.rejected("preset") {
        for key in ["kind", "steps", "step", "every"] {
            if given(&r, key) {
                p.add(
                    r.key(key),
                    format!("`{key}` cannot be combined with `preset`, which defines the steps (remove one of them)"),
                );
            }
        }
        r.raw.preset.as_deref().and_then(|text| {
            preset(text, has_analysis).or_else(|| {
                p.add(r.key("preset"), format!(
                    "expected \"canary-<percent>-<duration>\" (e.g. \"canary-10-5m\"), \"linear-<percent>-every-<duration>\" (e.g. \"linear-10-every-1m\") or \"all-at-once\", got {text:?}"
                ));
                None
            })
        })
    } else {
        let kind = r.or("kind", r.raw.kind.clone(), "blue-green".to_string())?;
        match kind.as_str() {
            "blue-green" => {
                for key in ["steps", "step", "every", "sticky"] {
                    if given(&r, key) {
                        p.add(r.key(key), format!(
                            "`{key}` only applies to kind = \"canary\" or \"linear\", but kind is \"blue-green\""
                        ));
                    }
                }
                Some(Strategy::BlueGreen)
            }
            "canary" => {
                wrong_keys(&r, &["step", "every"], "linear", p);
                canary_steps(&r, has_analysis, p).map(canary)
            }
            "linear" => {
                wrong_keys(&r, &["steps"], "canary", p);
                linear(&r, has_analysis, p).map(canary)
            }
            other => {
                p.add(r.key("kind"), format!("expected {KINDS}, got {other:?}"));
                None
            }
        }
    };
    let (strategy, sticky) = (strategy?, sticky?);
    if p.count() != before {
        return None;
    }
    Some(match strategy {
        Strategy::Canary(c) => Strategy::Canary(CanaryConfig { sticky, ..c }),
        other => other,
    })
}

fn canary(steps: Vec<CanaryStep>) -> Strategy {
    Strategy::Canary(CanaryConfig {
        steps,
        sticky: true,
    })
}

fn given(r: &Read<RawStrategy>, key: &str) -> bool {
    let raw = &r.raw;
    r.rejected(key)
        || match key {
            "kind" => raw.kind.is_some(),
            "steps" => raw.steps.is_some(),
            "step" => raw.step.is_some(),
            "every" => raw.every.is_some(),
            "sticky" => raw.sticky.is_some(),
            _ => false,
        }
}

fn wrong_keys(r: &Read<RawStrategy>, keys: &[&str], belongs_to: &str, p: &mut Problems) {
    for key in keys {
        if given(r, key) {
            p.add(
                r.key(key),
                format!("`{key}` only applies to kind = \"{belongs_to}\""),
            );
        }
    }
}

fn canary_steps(
    r: &Read<RawStrategy>,
    has_analysis: bool,
    p: &mut Problems,
) -> Option<Vec<CanaryStep>> {
    let subs = r.required(
        "steps",
        r.raw.steps.as_ref(),
        "an array like [{ weight = 10, pause = \"1m\" }, { weight = 50 }]",
        p,
    )?;
    let key = r.key("steps");
    if subs.is_empty() {
        p.add(
            &key,
            "expected at least one step like { weight = 10, pause = \"1m\" }, got []",
        );
        return None;
    }
    let before = p.count();
    let mut steps = Vec::new();
    let mut last: Option<(usize, u8)> = None;
    for (i, sub) in subs.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Some(s) = read::<RawCanaryStep>(sub.value(), &at, p) else {
            continue;
        };
        let weight = s
            .required("weight", s.raw.weight, "a percentage from 1 to 99", p)
            .and_then(|w| int_range(p, s.key("weight"), w, 1, 99))
            .map(|w| w as u8);
        if let (Some(w), Some((j, prev))) = (weight, last) {
            if w <= prev {
                p.add(
                    s.key("weight"),
                    format!(
                    "weights must increase from step to step, got {w} after {prev} (steps[{j}])"
                ),
                );
            }
        }
        if let Some(w) = weight {
            last = Some((i, w));
        }
        let pause = s.optional("pause", s.raw.pause.as_deref(), |text| {
            pause(&s.key("pause"), text, p)
        });
        let analyze = s.optional("analyze", s.raw.analyze, |a| {
            if a && !has_analysis {
                p.add(s.key("analyze"), "analyze = true needs metrics, but the service has no [analysis] table (add one, or remove `analyze`)");
                return None;
            }
            Some(a)
        });
        if let (Some(weight), Some(pause), Some(analyze)) = (weight, pause, analyze) {
            steps.push(CanaryStep {
                weight,
                pause: pause.unwrap_or(Pause::None),
                analyze: analyze.unwrap_or(has_analysis),
            });
        }
    }
    (p.count() == before).then_some(steps)
}

fn pause(key: &str, text: &str, p: &mut Problems) -> Option<Pause> {
    if text.trim() == UNTIL_PROMOTED {
        return Some(Pause::UntilPromoted);
    }
    match parse_duration(text) {
        Ok(d) if d.is_zero() => {
            p.add(key, "expected a duration greater than 0 or \"until-promoted\", got \"0s\" (remove `pause` for no pause)");
            None
        }
        Ok(d) => Some(Pause::For(d)),
        Err(_) => {
            p.add(
                key,
                format!("expected a duration like \"1m\" or \"until-promoted\", got {text:?}"),
            );
            None
        }
    }
}

fn linear(r: &Read<RawStrategy>, has_analysis: bool, p: &mut Problems) -> Option<Vec<CanaryStep>> {
    let step = r
        .required(
            "step",
            r.raw.step,
            "a percentage from 1 to 99 added at every step",
            p,
        )
        .and_then(|s| int_range(p, r.key("step"), s, 1, 99));
    let every = r
        .required("every", r.raw.every, "a duration like \"1m\"", p)
        .and_then(|d| positive(p, r.key("every"), d.0));
    Some(linear_steps(step? as u8, every?, has_analysis))
}

/// `step`, `2 * step`, ... below 100, each held for `every`.
fn linear_steps(step: u8, every: Duration, analyze: bool) -> Vec<CanaryStep> {
    (1..)
        .map(|i| u32::from(step) * i)
        .take_while(|w| *w < 100)
        .map(|w| CanaryStep {
            weight: w as u8,
            pause: Pause::For(every),
            analyze,
        })
        .collect()
}

/// AWS CodeDeploy's predefined configurations, by shape: `canary-10-5m` is
/// `Canary10Percent5Minutes`, `linear-10-every-1m` is `Linear10PercentEvery1Minute`,
/// `all-at-once` is `AllAtOnce` (blue-green).
fn preset(text: &str, analyze: bool) -> Option<Strategy> {
    let text = text.trim();
    if text == "all-at-once" {
        return Some(Strategy::BlueGreen);
    }
    let percent = |s: &str| s.parse::<u8>().ok().filter(|w| (1..=99).contains(w));
    let time = |s: &str| parse_duration(s).ok().filter(|d| !d.is_zero());
    if let Some(rest) = text.strip_prefix("canary-") {
        let (w, d) = rest.split_once('-')?;
        return Some(canary(vec![CanaryStep {
            weight: percent(w)?,
            pause: Pause::For(time(d)?),
            analyze,
        }]));
    }
    let rest = text.strip_prefix("linear-")?;
    let (w, d) = rest.split_once("-every-")?;
    Some(canary(linear_steps(percent(w)?, time(d)?, analyze)))
}

/// `[services.<name>.mirror]`; only Cutover's own proxy can copy requests.
pub(super) fn mirror(
    service_at: &str,
    sub: Option<&Sub<RawMirror>>,
    router_kind: Option<&str>,
    p: &mut Problems,
) -> Option<Option<MirrorConfig>> {
    let Some(sub) = sub else { return Some(None) };
    let r = read::<RawMirror>(sub.value(), &join(service_at, "mirror"), p)?;
    if let Some(kind) = router_kind.filter(|k| *k != "builtin") {
        p.add(&r.at, format!(
            "mirroring needs Cutover's built-in proxy, but the router is kind = \"{kind}\" (remove [mirror], or use the built-in router)"
        ));
    }
    let percent = r
        .required("percent", r.raw.percent, "a percentage from 1 to 100", p)
        .and_then(|v| int_range(p, r.key("percent"), v, 1, 100))
        .map(|v| v as u8);
    let methods = r.optional("methods", r.raw.methods.as_ref(), |m| methods(&r, m, p));
    let total = r
        .required("duration", r.raw.duration, "a duration like \"30s\"", p)
        .and_then(|d| positive(p, r.key("duration"), d.0));
    let max_mismatch = r
        .or(
            "max_mismatch",
            r.raw.max_mismatch.map(|f| f.0),
            MirrorConfig::DEFAULT_MAX_MISMATCH,
        )
        .and_then(|f| {
            if (0.0..=1.0).contains(&f) {
                Some(f)
            } else {
                p.add(
                    r.key("max_mismatch"),
                    format!("expected a share from 0 to 1 (0.05 or \"5%\"), got {f}"),
                );
                None
            }
        });
    let min_requests = r
        .or(
            "min_requests",
            r.raw.min_requests,
            MirrorConfig::DEFAULT_MIN_REQUESTS as i64,
        )
        .and_then(|v| int_range(p, r.key("min_requests"), v, 0, i64::MAX))
        .map(|v| v as u64);
    if router_kind.is_some_and(|k| k != "builtin") {
        return None;
    }
    Some(Some(MirrorConfig {
        percent: percent?,
        methods: methods?.unwrap_or_else(MirrorConfig::default_methods),
        duration: total?,
        max_mismatch: max_mismatch?,
        min_requests: min_requests?,
    }))
}

fn methods(r: &Read<RawMirror>, methods: &[String], p: &mut Problems) -> Option<Vec<String>> {
    let before = p.count();
    let key = r.key("methods");
    if methods.is_empty() {
        p.add(
            &key,
            "expected at least one method like [\"GET\", \"HEAD\"], got []",
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let upper = m.trim().to_ascii_uppercase();
        if upper.is_empty() || http::Method::from_bytes(upper.as_bytes()).is_err() {
            p.add(
                format!("{key}[{i}]"),
                format!("expected an HTTP method like \"GET\", got {m:?}"),
            );
        } else if out.contains(&upper) {
            p.add(format!("{key}[{i}]"), format!("duplicate method {m:?}"));
        } else {
            out.push(upper);
        }
    }
    (p.count() == before).then_some(out)
}
