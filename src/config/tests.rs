//! Whole-file tests of `parse`: defaults, every rule's key and message, and that all
//! problems come out at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[services.web]
listen = "127.0.0.1:8080"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse_ok(text: &str) -> Config {
    match parse_with_env(text, None, &no_env) {
        Ok(c) => c,
        Err(e) => panic!("expected the config to parse, got:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse_with_env(text, None, &no_env) {
        Ok(_) => panic!("expected problems, the config parsed"),
        Err(e) => e.problems,
    }
}

fn keys(text: &str) -> Vec<String> {
    problems(text).into_iter().map(|p| p.key).collect()
}

/// The message of the only problem at `key`.
fn message_at(text: &str, key: &str) -> String {
    let found: Vec<Problem> = problems(text)
        .into_iter()
        .filter(|p| p.key == key)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one problem at {key}, got {found:?}"
    );
    found[0].message.clone()
}

/// MINIMAL plus `extra` appended (TOML tables may come in any order).
fn minimal_with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

#[test]
fn the_annotated_example_parses() {
    let text = include_str!("../../examples/cutover.toml");
    let config = parse_with_env(text, Some(Path::new("/srv/app/cutover.toml")), &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    let web = &config.services["web"];
    let RuntimeConfig::Process(runtime) = &web.runtime else {
        panic!("expected a process runtime")
    };
    assert_eq!(
        runtime.command,
        [
            "cutover",
            "demo-app",
            "--port",
            "{port}",
            "--version",
            "{version}"
        ]
    );
    assert_eq!(runtime.workdir, Some(PathBuf::from("/srv/app/.")));
    assert_eq!(config.daemon.state_dir, PathBuf::from("/srv/app/.cutover"));
    assert_eq!(web.hosts, ["web.example.com", "localhost"]);
    assert_eq!(web.health.checks.len(), 4);
    assert_eq!(
        web.health.checks[2].probe,
        Probe::Http(HttpProbe {
            path: "/health/deep".into(),
            expect_status: None,
            json: vec![
                JsonCondition {
                    path: "checks.database".into(),
                    expected: serde_json::json!("healthy"),
                },
                JsonCondition {
                    path: "status".into(),
                    expected: serde_json::json!("ok"),
                },
            ],
            body_contains: None,
        })
    );
    let names: Vec<&str> = web.smoke.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["home", "create", "read", "update", "delete"]);
    assert_eq!(web.smoke.steps[1].capture["item_id"], "id");
    assert_eq!(web.watch.error_rate.as_ref().map(|t| t.max), Some(0.05));
    let hooks: Vec<(&str, HookPoint, OnFailure)> = web
        .hooks
        .iter()
        .map(|h| (h.name.as_str(), h.at, h.on_failure))
        .collect();
    assert_eq!(
        hooks,
        [
            ("migrate", HookPoint::PreSwitch, OnFailure::Abort),
            ("announce", HookPoint::AfterSuccess, OnFailure::Warn)
        ]
    );
    assert_eq!(
        config.path.as_deref(),
        Some(Path::new("/srv/app/cutover.toml"))
    );
}

#[test]
fn a_minimal_config_gets_every_documented_default() {
    let config = parse_ok(MINIMAL);
    let cwd = std::env::current_dir().unwrap();
    let expected = Config {
        notifications: NotificationsConfig::default(),
        retention: crate::config::RetentionConfig::default(),
        path: None,
        daemon: DaemonConfig {
            state_dir: cwd.join(".cutover"),
        },
        api: ApiConfig {
            listen: "127.0.0.1:7070".parse().unwrap(),
            token: None,
            token_env: "CUTOVER_TOKEN".into(),
            edge: Default::default(),
            tls: None,
        },
        proxy: ProxyConfig {
            preview_header: "x-cutover-preview".into(),
            preview_cookie: "cutover-preview".into(),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 10_485_760,
            upstream_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            edge: Default::default(),
        },
        services: BTreeMap::from([(
            "web".to_string(),
            ServiceConfig {
                name: "web".into(),
                listen: Some("127.0.0.1:8080".parse().unwrap()),
                hosts: vec![],
                preview_listen: None,
                runtime: RuntimeConfig::Process(ProcessRuntimeConfig {
                    command: vec!["./web".into(), "--port".into(), "{port}".into()],
                    env: BTreeMap::new(),
                    workdir: None,
                    stop_signal: StopSignal::Term,
                    stop_grace: Duration::from_secs(10),
                    ports: None,
                }),
                environment: None,
                health: HealthConfig {
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(2),
                    healthy_threshold: 2,
                    unhealthy_threshold: 3,
                    deadline: Duration::from_secs(60),
                    checks: vec![],
                },
                smoke: SmokeConfig {
                    steps: vec![],
                    timeout: Duration::from_secs(5),
                    max_avg_latency: None,
                    max_p95_latency: None,
                },
                watch: WatchConfig {
                    duration: Duration::from_secs(30),
                    interval: Duration::from_secs(1),
                    window: Duration::from_secs(10),
                    error_rate: None,
                    p95_latency: None,
                    health_failures: 3,
                },
                router: RouterConfig::Builtin,
                warm_for: Duration::from_secs(300),
                strategy: Strategy::BlueGreen,
                mirror: None,
                hooks: vec![],
                database: None,
                analysis: None,
                supervise: SuperviseConfig {
                    enabled: true,
                    failover: false,
                    max_backoff: Duration::from_secs(60),
                },
                shield: Default::default(),
                burst: None,
                upstream_tls: None,
            },
        )]),
    };
    assert_eq!(config, expected);
}

#[test]
fn mistakes_in_different_sections_are_all_reported_with_their_keys() {
    let text = r#"
[api]
listen = "nowhere"

[proxy]
max_body_bytes = 0
drain_timeout = "soon"

[services.web]
listen = "127.0.0.1:8080"
warm_for = 5

[services.web.runtime]
kind = "process"
comand = ["./web"]

[services.web.health]
interval = "0s"
timeout = "fast"
healthy_threshold = 0

[[services.web.health.checks]]
name = "live"
http = { path = "health", status = 700 }

[[services.web.health.checks]]
name = "live"
tcp = true

[[services.web.smoke.steps]]
name = "read"
method = "GE T"
path = "/items/{{id}}"

[services.web.watch]
interval = "20s"
error_rate = { max = 1.5 }
"#;
    assert_eq!(
        keys(text),
        [
            "api.listen",
            "proxy.drain_timeout",
            "proxy.max_body_bytes",
            "services.web.warm_for",
            "services.web.runtime.comand",
            "services.web.runtime.command",
            "services.web.health.timeout",
            "services.web.health.interval",
            "services.web.health.healthy_threshold",
            "services.web.health.checks[0].http.path",
            "services.web.health.checks[0].http.status",
            "services.web.health.checks[1].name",
            "services.web.smoke.steps[0].method",
            "services.web.smoke.steps[0].path",
            "services.web.watch.interval",
            "services.web.watch.error_rate.max",
        ]
    );
}

#[test]
fn the_same_problems_come_out_in_the_same_order_every_time() {
    let text = "[services.b]\nlisten = 1\n[services.a]\nhosts = [2]\n";
    assert_eq!(problems(text), problems(text));
}

#[test]
fn an_unknown_key_is_named_with_a_hint_and_the_expected_keys() {
    let text = MINIMAL.replace("command =", "comand =");
    assert_eq!(
        message_at(&text, "services.web.runtime.comand"),
        "unknown key `comand` (did you mean `command`?), expected one of: kind, command, env, \
         workdir, stop_signal, stop_grace, ports"
    );
    assert_eq!(
        message_at(&text, "services.web.runtime.command"),
        "missing required key `command`, expected an argv like [\"./web\", \"--port\", \"{port}\"]"
    );
    let text = minimal_with("[servics.api]\n");
    assert_eq!(
        message_at(&text, "servics"),
        "unknown key `servics` (did you mean `services`?), expected one of: daemon, api, proxy, \
         services, notifications, retention, environment"
    );
}

#[test]
fn a_bad_duration_says_what_it_got_and_what_it_expected() {
    let text = minimal_with("[services.web.health]\ninterval = \"fast\"\ntimeout = 3\n");
    assert_eq!(
        message_at(&text, "services.web.health.interval"),
        "expected a duration like \"500ms\" or \"2s\", got \"fast\""
    );
    assert_eq!(
        message_at(&text, "services.web.health.timeout"),
        "invalid type: integer `3`, expected a duration like \"500ms\" or \"2s\""
    );
}

#[test]
fn two_default_services_on_one_listen_address_are_refused() {
    let text = minimal_with(
        r#"
[services.api]
listen = "127.0.0.1:8080"
runtime = { kind = "process", command = ["./api", "{port}"] }
"#,
    );
    assert_eq!(
        message_at(&text, "services.web.listen"),
        "service `api` is already the default service (no `hosts`) on 127.0.0.1:8080; at most \
         one default per listen address, give one of them `hosts = [...]`"
    );
    // With hosts on one of them, they share the listener.
    parse_ok(&text.replace(
        "[services.api]\n",
        "[services.api]\nhosts = [\"API.example.com\"]\n",
    ));
}

#[test]
fn one_host_on_one_listen_address_belongs_to_one_service() {
    let text = r#"
[services.a]
listen = "127.0.0.1:8080"
hosts = ["x.example.com"]
runtime = { kind = "process", command = ["./a", "{port}"] }
[services.b]
listen = "127.0.0.1:8080"
hosts = ["y.example.com", "X.example.com"]
runtime = { kind = "process", command = ["./b", "{port}"] }
"#;
    assert_eq!(keys(text), ["services.b.hosts[1]"]);
}

#[test]
fn listeners_preview_listeners_api_and_fixed_ports_must_not_collide() {
    let text = r#"
[api]
listen = "127.0.0.1:7070"
[services.a]
listen = "0.0.0.0:8080"
preview_listen = "127.0.0.1:7070"
runtime = { kind = "process", command = ["./a"], ports = { blue = 9001, green = 8080 } }
[services.b]
listen = "127.0.0.1:8080"
runtime = { kind = "process", command = ["./b"], ports = { blue = 9001, green = 9002 } }
"#;
    assert_eq!(
        keys(text),
        [
            "services.a.preview_listen",
            "services.a.runtime.ports.green",
            "services.a.runtime.ports.green",
            "services.b.listen",
            "services.b.runtime.ports.blue",
        ]
    );
}

#[test]
fn a_smoke_variable_must_be_captured_by_an_earlier_step() {
    let text = minimal_with(
        r#"
[[services.web.smoke.steps]]
name = "read"
path = "/items/{{id}}"
headers = { x-item = "{{ id }}" }

[[services.web.smoke.steps]]
name = "create"
method = "post"
path = "/items"
body = '{"copy_of": "{{id}}"}'
capture = { id = "id" }

[[services.web.smoke.steps]]
name = "read-again"
path = "/items/{{id}}"
"#,
    );
    assert_eq!(
        message_at(&text, "services.web.smoke.steps[0].path"),
        "uses `{{id}}`, but no earlier step captures `id` (captured so far: none)"
    );
    assert_eq!(
        keys(&text),
        [
            "services.web.smoke.steps[0].path",
            "services.web.smoke.steps[0].headers.x-item",
            "services.web.smoke.steps[1].body",
        ]
    );
}

#[test]
fn a_smoke_step_method_is_stored_upper_case_and_defaults_to_get() {
    let config = parse_ok(&minimal_with(
        "[[services.web.smoke.steps]]\nname = \"a\"\npath = \"/\"\n\
         [[services.web.smoke.steps]]\nname = \"b\"\nmethod = \"patch\"\npath = \"/\"\n\
         headers = { Content-Type = \"text/plain\" }\n",
    ));
    let steps = &config.services["web"].smoke.steps;
    assert_eq!(
        (steps[0].method.as_str(), steps[1].method.as_str()),
        ("GET", "PATCH")
    );
    assert_eq!(steps[1].headers["content-type"], "text/plain");
}

#[test]
fn a_syntax_error_is_one_problem_with_its_line_and_column() {
    let err = parse("[api]\nlisten = \"127.0.0.1:7070\"\ntoken = \n", None).unwrap_err();
    assert_eq!(err.file, PathBuf::from("(inline)"));
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].key, "(syntax)");
    assert!(
        err.problems[0]
            .message
            .starts_with("TOML syntax error at line 3, column 9: "),
        "{}",
        err.problems[0].message
    );
}

#[test]
fn an_error_rate_given_as_a_percentage_equals_the_fraction() {
    let watch = |max: &str| {
        let text = minimal_with(&format!(
            "[services.web.watch]\nerror_rate = {{ max = {max} }}\n"
        ));
        parse_ok(&text).services["web"].watch.clone()
    };
    let percent = watch("\"5%\"").error_rate.unwrap();
    assert_eq!(percent.max, 0.05);
    assert_eq!(percent, watch("0.05").error_rate.unwrap());
    assert_eq!(percent.for_, Duration::ZERO);
    assert_eq!(percent.min_requests, 20);
    let text = minimal_with("[services.web.watch]\nerror_rate = { max = \"0%\" }\n");
    assert_eq!(keys(&text), ["services.web.watch.error_rate.max"]);
}

#[test]
fn the_api_token_comes_from_the_file_then_the_env_var_then_nowhere() {
    let env = |name: &str| (name == "MY_TOKEN").then(|| "from-env".to_string());
    let token = |api: &str| {
        let text = minimal_with(&format!("[api]\n{api}\n"));
        parse_with_env(&text, None, &env).unwrap().api.token
    };
    assert_eq!(token("token_env = \"MY_TOKEN\""), Some("from-env".into()));
    assert_eq!(
        token("token = \"t\"\ntoken_env = \"MY_TOKEN\""),
        Some("t".into())
    );
    assert_eq!(token("token_env = \"OTHER\""), None);
    let empty = |_: &str| Some(String::new());
    assert_eq!(
        parse_with_env(MINIMAL, None, &empty).unwrap().api.token,
        None
    );
}

#[test]
fn parse_reads_the_token_from_the_real_environment() {
    // PATH is set in any environment tests run in; no test mutates the process env.
    let path = std::env::var("PATH").expect("PATH is set");
    let config = parse(&minimal_with("[api]\ntoken_env = \"PATH\"\n"), None).unwrap();
    assert_eq!(config.api.token, Some(path));
}

#[test]
fn an_unknown_runtime_kind_is_refused_without_other_noise() {
    let text = "[services.web]\nlisten = \"127.0.0.1:8080\"\n\
                [services.web.runtime]\nkind = \"nomad\"\nimage = \"web:1\"\n";
    assert_eq!(
        problems(text),
        [Problem {
            key: "services.web.runtime.kind".into(),
            message:
                "expected \"process\", \"docker\", \"compose\" or \"kubernetes\", got \"nomad\""
                    .into(),
        }]
    );
}

#[test]
fn the_port_must_reach_the_app_unless_slots_have_fixed_ports() {
    let no_port = MINIMAL.replace("\"--port\", \"{port}\"", "\"--verbose\"");
    assert_eq!(keys(&no_port), ["services.web.runtime.command"]);
    parse_ok(&MINIMAL.replace(
        "\"--port\", \"{port}\"",
        "\"--verbose\"]\nenv = { PORT = \"{port}\" }\n#",
    ));
    let fixed = no_port.replace(
        "kind = \"process\"",
        "kind = \"process\"\nports = { blue = 9001, green = 9002 }",
    );
    let ports = match &parse_ok(&fixed).services["web"].runtime {
        RuntimeConfig::Process(p) => p.ports,
        other => panic!("expected a process runtime, got {other:?}"),
    };
    assert_eq!(
        ports,
        Some(SlotPorts {
            blue: 9001,
            green: 9002
        })
    );
}

#[test]
fn unknown_placeholders_are_refused_but_shell_variables_are_not() {
    let text = MINIMAL.replace(
        "\"{port}\"]",
        "\"{port}\", \"--v={verison}\", \"${HOME}\"]\nenv = { A = \"{slots}\" }",
    );
    assert_eq!(
        message_at(&text, "services.web.runtime.command[3]"),
        "unknown placeholder `{verison}`, expected one of: {version}, {port}, {slot}, {service}"
    );
    assert_eq!(
        keys(&text),
        [
            "services.web.runtime.command[3]",
            "services.web.runtime.env.A"
        ]
    );
}

#[test]
fn a_health_check_has_exactly_one_probe() {
    let text = minimal_with(
        r#"
[[services.web.health.checks]]
name = "both"
tcp = true
command = ["true"]
[[services.web.health.checks]]
name = "none"
tcp = false
[[services.web.health.checks]]
name = "cmd"
command = ["sh", "-c", "test -f /tmp/{service}-{slot}"]
"#,
    );
    assert_eq!(
        message_at(&text, "services.web.health.checks[0]"),
        "found tcp and command, expected exactly one of `http = { path = \"/health\" }`, \
         `tcp = true` or `command = [...]`"
    );
    assert_eq!(
        keys(&text),
        [
            "services.web.health.checks[0]",
            "services.web.health.checks[1]"
        ]
    );
}

#[test]
fn a_bad_field_does_not_hide_a_bad_neighbour_or_a_bad_sub_table() {
    let text = minimal_with(
        "[services.web.watch]\nduration = 1\nhealth_failures = \"x\"\nerror_rate = { max = \"lots\", for = \"2 fortnights\" }\n",
    );
    assert_eq!(
        keys(&text),
        [
            "services.web.watch.duration",
            "services.web.watch.health_failures",
            "services.web.watch.error_rate.for",
            "services.web.watch.error_rate.max",
        ]
    );
}

#[test]
fn no_service_at_all_is_a_problem() {
    assert_eq!(
        problems("[api]\n"),
        [Problem {
            key: "services".into(),
            message: "no service defined, expected at least one [services.<name>] table".into(),
        }]
    );
}

#[test]
fn service_names_are_lower_case_words() {
    let text = MINIMAL.replace("services.web", "services.\"My App\"");
    assert_eq!(keys(&text), ["services.\"My App\""]);
}

#[test]
fn relative_paths_are_resolved_against_the_config_files_directory() {
    let text = MINIMAL.replace("kind =", "workdir = \"app\"\nkind =")
        + "[daemon]\nstate_dir = \"/var/lib/cutover\"\n";
    let config =
        parse_with_env(&text, Some(Path::new("/etc/cutover/cutover.toml")), &no_env).unwrap();
    assert_eq!(config.daemon.state_dir, PathBuf::from("/var/lib/cutover"));
    let RuntimeConfig::Process(runtime) = &config.services["web"].runtime else {
        panic!("expected a process runtime")
    };
    assert_eq!(runtime.workdir, Some(PathBuf::from("/etc/cutover/app")));
    let err = parse("[api]\nlisten = 1\n", Some(Path::new("conf/cutover.toml"))).unwrap_err();
    assert_eq!(err.file, PathBuf::from("conf/cutover.toml"));
}

#[test]
fn stop_signals_are_accepted_without_sig_and_in_any_case() {
    let signal = |s: &str| {
        let config =
            parse_ok(&MINIMAL.replace("kind =", &format!("stop_signal = \"{s}\"\nkind =")));
        match &config.services["web"].runtime {
            RuntimeConfig::Process(p) => p.stop_signal,
            other => panic!("expected a process runtime, got {other:?}"),
        }
    };
    assert_eq!(signal("int"), StopSignal::Int);
    assert_eq!(signal("SIGQUIT"), StopSignal::Quit);
    let text = MINIMAL.replace("kind =", "stop_signal = \"SIGUSR1\"\nkind =");
    assert_eq!(keys(&text), ["services.web.runtime.stop_signal"]);
}

#[test]
fn the_preview_header_must_be_a_header_name_and_is_stored_lower_case() {
    let config = parse_ok(&minimal_with("[proxy]\npreview_header = \"X-Preview\"\n"));
    assert_eq!(config.proxy.preview_header, "x-preview");
    let text = minimal_with("[proxy]\npreview_header = \"x preview\"\n");
    assert_eq!(keys(&text), ["proxy.preview_header"]);
}

#[test]
fn the_preview_cookie_must_be_a_cookie_name() {
    let config = parse_ok(&minimal_with("[proxy]\npreview_cookie = \"Beta_1\"\n"));
    assert_eq!(config.proxy.preview_cookie, "Beta_1");
    for bad in ["", "beta preview", "beta=1", "beta;"] {
        let text = minimal_with(&format!("[proxy]\npreview_cookie = {bad:?}\n"));
        assert_eq!(keys(&text), ["proxy.preview_cookie"], "{bad:?}");
    }
}

#[test]
fn unknown_keys_are_checked_against_renamed_fields() {
    let names = read::field_names::<raw::RawErrorRate>();
    assert_eq!(names, ["max", "for", "min_requests"]);
}

#[test]
fn a_syntax_error_message_is_a_single_line() {
    let err = parse("[services.web]\n[services.web]\n", None).unwrap_err();
    assert_eq!(
        err.problems[0].message,
        "TOML syntax error at line 2, column 1: invalid table header: duplicate key `web` in \
         table `services`"
    );
}

#[test]
fn shape_errors_use_toml_words() {
    let text = minimal_with("[services.web.health]\nchecks = 4\nhealthy_threshold = 1.5\n");
    assert_eq!(
        message_at(&text, "services.web.health.checks"),
        "invalid type: integer `4`, expected an array"
    );
    assert_eq!(
        message_at(&text, "services.web.health.healthy_threshold"),
        "invalid type: float `1.5`, expected an integer"
    );
}

#[test]
fn a_wrong_host_list_does_not_also_make_the_service_a_second_default() {
    let text = minimal_with(
        "[services.api]\nlisten = \"127.0.0.1:8080\"\nhosts = [\"bad host\"]\n\
         runtime = { kind = \"process\", command = [\"./api\", \"{port}\"] }\n",
    );
    assert_eq!(keys(&text), ["services.api.hosts[0]"]);
}

#[test]
fn a_third_default_service_is_reported_against_the_first() {
    let service = |name: &str| {
        format!(
            "[services.{name}]\nlisten = \"127.0.0.1:8080\"\n\
             runtime = {{ kind = \"process\", command = [\"./{name}\", \"{{port}}\"] }}\n"
        )
    };
    let text = service("a") + &service("b") + &service("c");
    let found = problems(&text);
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].key, "services.c.listen");
    assert!(
        found[1].message.starts_with("service `a` is already"),
        "{:?}",
        found[1]
    );
}

#[test]
fn environment_is_taken_from_the_service_else_the_file_and_checked() {
    assert_eq!(parse_ok(MINIMAL).services["web"].environment, None);
    let file_wide = format!("environment = \"production\"\n{MINIMAL}");
    let cfg = parse_ok(&file_wide);
    assert!(cfg.services["web"].is_production());
    let own = file_wide.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nenvironment = \"staging\"",
    );
    let cfg = parse_ok(&own);
    assert_eq!(cfg.services["web"].environment.as_deref(), Some("staging"));
    assert!(!cfg.services["web"].is_production());
    let bad = MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nenvironment = \"Prod!\"",
    );
    assert!(message_at(&bad, "services.web.environment").contains("lower-case name"));
    let bad_top = format!("environment = \"\"\n{MINIMAL}");
    assert!(message_at(&bad_top, "environment").contains("\"production\""));
}
