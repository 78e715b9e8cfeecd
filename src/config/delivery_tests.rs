//! Tests of the progressive-delivery sections: `strategy`, `mirror`, `analysis`,
//! `notifications` (`strategy.rs`, `analysis.rs`, `notify.rs`).

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[services.web]
listen = "127.0.0.1:8080"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;

const ANALYSIS: &str = r#"
[services.web.analysis]
[[services.web.analysis.metrics]]
name = "error-rate"
builtin = { signal = "error_rate" }
max = 0.05
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse_ok(extra: &str) -> Config {
    let text = format!("{MINIMAL}\n{extra}");
    match parse_with_env(&text, None, &no_env) {
        Ok(c) => c,
        Err(e) => panic!("expected the config to parse, got:\n{e}"),
    }
}

fn problems(extra: &str) -> Vec<(String, String)> {
    let text = format!("{MINIMAL}\n{extra}");
    match parse_with_env(&text, None, &no_env) {
        Ok(_) => panic!("expected problems, the config parsed"),
        Err(e) => e.problems.into_iter().map(|p| (p.key, p.message)).collect(),
    }
}

/// The message of the only problem at `key` (and there is no other problem).
fn only_problem(extra: &str, key: &str) -> String {
    let found = problems(extra);
    assert_eq!(
        found.len(),
        1,
        "expected one problem at {key}, got {found:?}"
    );
    assert_eq!(found[0].0, key, "{found:?}");
    found[0].1.clone()
}

fn steps(cfg: &Config) -> Vec<(u8, Pause, bool)> {
    match &cfg.services["web"].strategy {
        Strategy::Canary(c) => c
            .steps
            .iter()
            .map(|s| (s.weight, s.pause.clone(), s.analyze))
            .collect(),
        Strategy::BlueGreen => panic!("expected a canary"),
    }
}

fn mins(m: u64) -> Pause {
    Pause::For(Duration::from_secs(60 * m))
}

#[test]
fn without_the_new_tables_a_service_is_blue_green_without_analysis_or_mirror() {
    let cfg = parse_ok("");
    let web = &cfg.services["web"];
    assert_eq!(web.strategy, Strategy::BlueGreen);
    assert_eq!(web.mirror, None);
    assert_eq!(web.analysis, None);
    assert!(cfg.notifications.webhooks.is_empty());
}

#[test]
fn canary_steps_keep_their_order_pauses_and_analysis_flags() {
    let cfg = parse_ok(&format!(
        r#"{ANALYSIS}
[services.web.strategy]
kind = "canary"
steps = [ {{ weight = 10, pause = "1m" }}, {{ weight = 50, pause = "until-promoted", analyze = false }}, {{ weight = 75 }} ]
"#
    ));
    assert_eq!(
        steps(&cfg),
        vec![
            (10, mins(1), true),
            (50, Pause::UntilPromoted, false),
            (75, Pause::None, true)
        ]
    );
    let Strategy::Canary(c) = &cfg.services["web"].strategy else {
        unreachable!()
    };
    assert!(c.sticky, "sticky defaults to true");
}

#[test]
fn steps_do_not_analyze_by_default_when_the_service_has_no_analysis() {
    let cfg = parse_ok(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [{ weight = 20 }]\nsticky = false\n",
    );
    assert_eq!(steps(&cfg), vec![(20, Pause::None, false)]);
    let Strategy::Canary(c) = &cfg.services["web"].strategy else {
        unreachable!()
    };
    assert!(!c.sticky);
}

#[test]
fn linear_is_shorthand_for_equal_steps_below_one_hundred() {
    let cfg = parse_ok("[services.web.strategy]\nkind = \"linear\"\nstep = 30\nevery = \"2m\"\n");
    assert_eq!(
        steps(&cfg),
        vec![
            (30, mins(2), false),
            (60, mins(2), false),
            (90, mins(2), false)
        ]
    );
}

#[test]
fn presets_match_aws_codedeploy_shapes() {
    let cfg = parse_ok(&format!(
        "{ANALYSIS}\n[services.web.strategy]\npreset = \"canary-10-5m\"\n"
    ));
    assert_eq!(steps(&cfg), vec![(10, mins(5), true)]);
    let cfg = parse_ok("[services.web.strategy]\npreset = \"linear-10-every-1m\"\n");
    let s = steps(&cfg);
    assert_eq!(s.len(), 9);
    assert_eq!(s[0], (10, mins(1), false));
    assert_eq!(s[8], (90, mins(1), false));
    let cfg = parse_ok("[services.web.strategy]\npreset = \"all-at-once\"\n");
    assert_eq!(cfg.services["web"].strategy, Strategy::BlueGreen);
}

#[test]
fn weights_must_increase_and_stay_between_1_and_99() {
    let found = problems(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [{ weight = 50 }, { weight = 50 }, { weight = 100 }]\n",
    );
    assert_eq!(
        found,
        vec![
            (
                "services.web.strategy.steps[1].weight".into(),
                "weights must increase from step to step, got 50 after 50 (steps[0])".into()
            ),
            (
                "services.web.strategy.steps[2].weight".into(),
                "expected an integer from 1 to 99, got 100".into()
            ),
        ]
    );
}

#[test]
fn a_canary_needs_at_least_one_step() {
    let m = only_problem(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = []\n",
        "services.web.strategy.steps",
    );
    assert!(m.contains("at least one step"), "{m}");
    let m = only_problem(
        "[services.web.strategy]\nkind = \"canary\"\n",
        "services.web.strategy.steps",
    );
    assert!(m.starts_with("missing required key `steps`"), "{m}");
}

#[test]
fn analyze_true_without_an_analysis_table_is_refused() {
    let m = only_problem(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [{ weight = 10, analyze = true }]\n",
        "services.web.strategy.steps[0].analyze",
    );
    assert!(m.contains("no [analysis] table"), "{m}");
}

#[test]
fn pauses_are_durations_above_zero_or_until_promoted() {
    let found = problems(
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [{ weight = 10, pause = \"0s\" }, { weight = 20, pause = \"forever\" }]\n",
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "services.web.strategy.steps[0].pause",
            "services.web.strategy.steps[1].pause"
        ]
    );
    assert!(found[1].1.contains("\"until-promoted\""), "{found:?}");
}

#[test]
fn keys_of_another_kind_and_unknown_presets_are_named() {
    let found = problems(
        "[services.web.strategy]\nkind = \"linear\"\nstep = 10\nevery = \"1m\"\nsteps = []\n",
    );
    assert_eq!(found[0].0, "services.web.strategy.steps");
    assert!(found[0].1.contains("kind = \"canary\""), "{found:?}");
    let m = only_problem(
        "[services.web.strategy]\npreset = \"canary-ten\"\n",
        "services.web.strategy.preset",
    );
    assert!(m.contains("canary-10-5m"), "{m}");
    let m = only_problem(
        "[services.web.strategy]\nkind = \"rolling\"\n",
        "services.web.strategy.kind",
    );
    assert!(
        m.contains("\"blue-green\", \"canary\" or \"linear\""),
        "{m}"
    );
    let m = only_problem(
        "[services.web.strategy]\nsticky = true\n",
        "services.web.strategy.sticky",
    );
    assert!(m.contains("blue-green"), "{m}");
}

#[test]
fn mirror_has_safe_defaults_and_needs_the_built_in_proxy() {
    let cfg = parse_ok("[services.web.mirror]\npercent = 10\nduration = \"30s\"\n");
    assert_eq!(
        cfg.services["web"].mirror,
        Some(MirrorConfig {
            percent: 10,
            methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
            duration: Duration::from_secs(30),
            max_mismatch: 0.05,
            min_requests: 20,
        })
    );
    let cfg = parse_ok("[services.web.mirror]\npercent = 100\nduration = \"1m\"\nmethods = [\"get\", \"POST\"]\nmax_mismatch = \"1%\"\n");
    let m = cfg.services["web"].mirror.clone().unwrap();
    assert_eq!(m.methods, ["GET", "POST"]);
    assert_eq!(m.max_mismatch, 0.01);

    let found = problems(
        "[services.web.mirror]\npercent = 0\nduration = \"0s\"\nmethods = [\"GET\", \"get\"]\n",
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "services.web.mirror.percent",
            "services.web.mirror.methods[1]",
            "services.web.mirror.duration"
        ]
    );
}

#[test]
fn metrics_are_read_for_every_provider() {
    let cfg = parse_ok(
        r#"
[services.web.analysis]
interval = "5s"
count = 2
failure_limit = 1
[[services.web.analysis.metrics]]
name = "error-rate"
builtin = { signal = "error_rate", min_requests = 50 }
max = "5%"
max_increase_over_stable = 0.01
[[services.web.analysis.metrics]]
name = "p95"
prometheus = { address = "http://127.0.0.1:9090/", query = "q{slot=\"{slot}\"}" }
max = 0.5
inconclusive = { max = 0.8 }
[[services.web.analysis.metrics]]
name = "gate"
webhook = { url = "http://127.0.0.1:9/approve?v={version}", method = "post" }
[[services.web.analysis.metrics]]
name = "script"
command = ["./check.sh", "{version}"]
"#,
    );
    let a = cfg.services["web"].analysis.clone().unwrap();
    assert_eq!(
        (a.interval, a.count, a.failure_limit),
        (Duration::from_secs(5), 2, 1)
    );
    assert_eq!((a.consecutive_error_limit, a.inconclusive_limit), (4, 1));
    assert_eq!(
        a.metrics[0].provider,
        MetricProvider::Builtin {
            signal: BuiltinSignal::ErrorRate,
            min_requests: 50
        }
    );
    assert_eq!(
        a.metrics[0].pass,
        Range {
            min: None,
            max: Some(0.05)
        }
    );
    assert_eq!(a.metrics[0].max_increase_over_stable, Some(0.01));
    assert_eq!(
        a.metrics[1].provider,
        MetricProvider::Prometheus {
            address: "http://127.0.0.1:9090".into(),
            query: "q{slot=\"{slot}\"}".into(),
            tls: Default::default(),
        }
    );
    assert_eq!(
        a.metrics[1].inconclusive,
        Some(Range {
            min: None,
            max: Some(0.8)
        })
    );
    assert!(
        matches!(&a.metrics[2].provider, MetricProvider::Webhook { method, json_value: None, .. } if method == "POST")
    );
    assert_eq!(
        a.metrics[3].provider,
        MetricProvider::Command {
            argv: vec!["./check.sh".into(), "{version}".into()],
            numeric: false
        }
    );
}

#[test]
fn a_metric_needs_exactly_one_provider() {
    let two = "[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"x\"\nbuiltin = { signal = \"error_rate\" }\ncommand = [\"true\"]\nmax = 1\n";
    let m = only_problem(two, "services.web.analysis.metrics[0]");
    assert!(m.contains("`builtin`, `command`"), "{m}");
    let none =
        "[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"x\"\nmax = 1\n";
    let m = only_problem(none, "services.web.analysis.metrics[0]");
    assert!(m.contains("got none"), "{m}");
}

#[test]
fn range_keys_need_a_numeric_metric_and_numeric_metrics_need_a_bound() {
    let m = only_problem(
        "[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"gate\"\nwebhook = { url = \"http://127.0.0.1:9/\" }\nmax = 1\n",
        "services.web.analysis.metrics[0].max",
    );
    assert!(m.contains("json_value"), "{m}");
    let m = only_problem(
        "[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"x\"\ncommand = [\"./n.sh\"]\nnumeric = true\n",
        "services.web.analysis.metrics[0]",
    );
    assert!(m.contains("every value would pass"), "{m}");
    let m = only_problem(
        "[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"x\"\nprometheus = { address = \"http://127.0.0.1:9090\", query = \"up\" }\nmax_increase_over_stable = 0.1\n",
        "services.web.analysis.metrics[0].max_increase_over_stable",
    );
    assert!(m.contains("{slot}"), "{m}");
}

#[test]
fn analysis_problems_carry_the_full_key() {
    let found = problems(
        r#"
[services.web.analysis]
interval = "0s"
count = 0
[[services.web.analysis.metrics]]
name = "a"
builtin = { signal = "latency" }
max = 1
[[services.web.analysis.metrics]]
name = "a"
prometheus = { address = "ftp://prom.example", query = "up" }
max = 1
[[services.web.analysis.metrics]]
name = "c"
command = ["./c.sh", "{port}"]
"#,
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "services.web.analysis.interval",
            "services.web.analysis.count",
            "services.web.analysis.metrics[0].builtin.signal",
            "services.web.analysis.metrics[1].prometheus.address",
            "services.web.analysis.metrics[2].command[1]",
        ],
        "{found:?}"
    );
    assert!(found[3].1.contains("expected a URL like"), "{found:?}");
}

#[test]
fn duplicate_metric_names_are_refused() {
    let found = problems(
        "[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"x\"\ncommand = [\"true\"]\n[[services.web.analysis.metrics]]\nname = \"x\"\ncommand = [\"true\"]\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "services.web.analysis.metrics[1].name");
}

#[test]
fn notification_webhooks_default_to_json_and_all_events() {
    let cfg = parse_ok(
        "[notifications]\nwebhooks = [ { url = \"http://127.0.0.1:9000/hook\" }, { url = \"http://127.0.0.1:9001/\", format = \"slack\", events = [\"rolled_back\", \"failed\"], attempts = 3, timeout = \"1s\" } ]\n",
    );
    let w = &cfg.notifications.webhooks;
    assert_eq!(w[0].format, WebhookFormat::Json);
    assert!(w[0].events.is_empty() && w[0].wants("started"));
    assert_eq!((w[0].attempts, w[0].timeout), (5, Duration::from_secs(5)));
    assert_eq!(w[1].format, WebhookFormat::Slack);
    assert!(w[1].wants("failed") && !w[1].wants("started"));
    assert_eq!((w[1].attempts, w[1].timeout), (3, Duration::from_secs(1)));
}

#[test]
fn notification_mistakes_name_the_webhook_and_the_key() {
    let found = problems(
        "[notifications]\nwebhooks = [ { url = \"ftp://x\", format = \"teams\", events = [\"rollback\"], attempts = 0 } ]\n",
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "notifications.webhooks[0].url",
            "notifications.webhooks[0].format",
            "notifications.webhooks[0].events[0]",
            "notifications.webhooks[0].attempts",
        ]
    );
    assert!(found[2].1.contains("rolled_back"), "{found:?}");
}

#[test]
fn the_range_explains_a_value_against_its_bounds() {
    let r = Range {
        min: None,
        max: Some(0.5),
    };
    assert!(!r.contains(0.72));
    assert_eq!(r.explain(0.72), "0.72 > max 0.5");
    assert_eq!(
        Range {
            min: Some(0.1),
            max: Some(0.5)
        }
        .explain(0.3),
        "0.3 within [0.1, 0.5]"
    );
    assert_eq!(
        Range {
            min: Some(1.0),
            max: None
        }
        .explain(0.0),
        "0 < min 1"
    );
}

#[test]
fn the_annotated_example_shows_a_canary_with_analysis_mirror_and_notifications() {
    let text = include_str!("../../examples/cutover.toml");
    let cfg = parse_with_env(
        text,
        Some(std::path::Path::new("/srv/app/cutover.toml")),
        &no_env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        steps(&cfg),
        vec![
            (10, mins(1), true),
            (50, Pause::UntilPromoted, true),
            (75, Pause::None, true)
        ]
    );
    let web = &cfg.services["web"];
    assert_eq!(web.mirror.as_ref().map(|m| m.percent), Some(10));
    let names: Vec<&str> = web
        .analysis
        .as_ref()
        .unwrap()
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["error-rate", "p95"]);
    assert_eq!(cfg.notifications.webhooks.len(), 2);
    assert_eq!(cfg.notifications.webhooks[1].format, WebhookFormat::Slack);
}

#[test]
fn https_urls_take_a_ca_file_resolved_against_the_config_directory() {
    let text = format!(
        "{MINIMAL}\n[[notifications.webhooks]]\nurl = \"https://hooks.example/x\"\nca_file = \"certs/ca.pem\"\n\n[services.web.analysis]\n[[services.web.analysis.metrics]]\nname = \"p\"\nprometheus = {{ address = \"https://prom.internal:9090\", query = \"up\", tls_insecure_skip_verify = true }}\nmax = 1\n"
    );
    let c = parse_with_env(&text, Some(Path::new("/etc/cutover/cutover.toml")), &no_env).unwrap();
    let hook = &c.notifications.webhooks[0];
    assert_eq!(
        hook.tls.ca_file.as_deref(),
        Some(Path::new("/etc/cutover/certs/ca.pem"))
    );
    assert!(!hook.tls.insecure_skip_verify);
    let metric = &c.services["web"].analysis.as_ref().unwrap().metrics[0];
    match &metric.provider {
        MetricProvider::Prometheus { tls, .. } => {
            assert!(tls.insecure_skip_verify);
            assert_eq!(tls.ca_file, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_ca_file_together_with_insecure_skip_verify_is_refused() {
    let m = only_problem(
        "[[notifications.webhooks]]\nurl = \"https://hooks.example/x\"\nca_file = \"ca.pem\"\ntls_insecure_skip_verify = true\n",
        "notifications.webhooks[0].tls_insecure_skip_verify",
    );
    assert!(m.contains("set one or the other"), "{m}");
}

#[test]
fn upstream_tls_reads_its_server_name_and_rejects_a_bad_one() {
    let c = parse_ok(
        "[services.web.upstream_tls]\nca_file = \"/srv/ca.pem\"\nserver_name = \"web.internal\"\n",
    );
    let tls = c.services["web"].upstream_tls.clone().unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("web.internal"));
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/srv/ca.pem")));
    assert_eq!(parse_ok("").services["web"].upstream_tls, None);
    let m = only_problem(
        "[services.web.upstream_tls]\nserver_name = \"not a name\"\n",
        "services.web.upstream_tls.server_name",
    );
    assert!(m.contains("expected a DNS name"), "{m}");
}

#[test]
fn every_insecure_place_is_listed_for_the_startup_warning() {
    let c = parse_ok(
        "[[notifications.webhooks]]\nurl = \"https://hooks.example/x\"\ntls_insecure_skip_verify = true\n\n[services.web.upstream_tls]\ntls_insecure_skip_verify = true\n",
    );
    assert_eq!(
        c.insecure_tls_places(),
        ["notifications.webhooks[0]", "services.web.upstream_tls"]
    );
    assert!(parse_ok("").insecure_tls_places().is_empty());
}
