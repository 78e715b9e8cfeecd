//! Tests of `[[services.<name>.hooks]]` (`hooks.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::{parse, Config};
use super::*;
use crate::tls::ClientTls;

const MINIMAL: &str = r#"
[services.web]
listen = "127.0.0.1:8080"

[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{port}"]
workdir = "/srv/web"
"#;

fn parse_ok(extra: &str) -> Config {
    let text = format!("{MINIMAL}\n{extra}");
    parse(&text, Some(Path::new("/etc/cutover/cutover.toml")))
        .unwrap_or_else(|e| panic!("expected the config to parse, got:\n{e}"))
}

/// Every (key, message) found.
fn problems(extra: &str) -> Vec<(String, String)> {
    let text = format!("{MINIMAL}\n{extra}");
    match parse(&text, Some(Path::new("/etc/cutover/cutover.toml"))) {
        Ok(_) => panic!("expected problems, the config parsed"),
        Err(e) => e.problems.into_iter().map(|p| (p.key, p.message)).collect(),
    }
}

/// The message of the only problem, which must be at `key`.
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

#[test]
fn valid_hooks_parse_in_file_order_with_their_defaults() {
    let cfg = parse_ok(
        r#"
[[services.web.hooks]]
name = "migrate"
at = "pre_switch"
command = ["./migrate.sh", "up"]

[[services.web.hooks]]
name = "announce"
at = "post_switch"
http = { url = "http://127.0.0.1:9000/deployed", headers = { X-Token = "t" }, body = "{}", expect_status = [200, 204] }
timeout = "5s"
on_failure = "warn"

[[services.web.hooks]]
name = "tell"
at = "after_success"
http = { url = "http://hooks.internal/ok", method = "put" }

[[services.web.hooks]]
name = "warm"
at = "pre_switch"
http = { url = "https://web.internal:8443/warm", ca_file = "certs/ca.pem" }
"#,
    );
    let hooks = &cfg.services["web"].hooks;
    assert_eq!(hooks.len(), 4);
    assert_eq!(
        hooks[0],
        Hook {
            name: "migrate".into(),
            at: HookPoint::PreSwitch,
            action: HookAction::Command {
                argv: vec!["./migrate.sh".into(), "up".into()],
                dir: PathBuf::from("/srv/web"),
            },
            timeout: Duration::from_secs(30),
            on_failure: OnFailure::Abort,
        }
    );
    assert_eq!(hooks[1].at, HookPoint::PostSwitch);
    assert_eq!(hooks[1].timeout, Duration::from_secs(5));
    assert_eq!(hooks[1].on_failure, OnFailure::Warn);
    let HookAction::Http(h) = &hooks[1].action else {
        panic!("expected an HTTP hook: {:?}", hooks[1]);
    };
    assert_eq!(h.method, "POST", "POST is the default method");
    assert_eq!(h.url.to_string(), "http://127.0.0.1:9000/deployed");
    assert_eq!(h.headers["x-token"], "t");
    assert_eq!(h.body.as_deref(), Some("{}"));
    assert_eq!(h.expect_status, vec![200, 204]);
    assert_eq!(
        hooks[2].on_failure,
        OnFailure::Warn,
        "warn by default there"
    );
    let HookAction::Http(h) = &hooks[2].action else {
        panic!("expected an HTTP hook");
    };
    assert_eq!(h.method, "PUT");
    assert!(h.expect_status.is_empty(), "any 2xx by default");
    assert_eq!(h.tls, ClientTls::default(), "the system store by default");
    let HookAction::Http(h) = &hooks[3].action else {
        panic!("expected an HTTP hook");
    };
    assert_eq!(h.url.to_string(), "https://web.internal:8443/warm");
    assert_eq!(
        h.tls.ca_file,
        Some(PathBuf::from("/etc/cutover/certs/ca.pem")),
        "relative to the config file"
    );
    assert!(!h.tls.insecure_skip_verify);
}

#[test]
fn without_a_process_workdir_commands_run_beside_the_config_file() {
    let text = MINIMAL.replace("workdir = \"/srv/web\"\n", "")
        + "[[services.web.hooks]]\nname = \"m\"\nat = \"before_start\"\ncommand = [\"./m\"]\n";
    let cfg = parse(&text, Some(Path::new("/etc/cutover/cutover.toml"))).unwrap();
    match &cfg.services["web"].hooks[0].action {
        HookAction::Command { dir, .. } => assert_eq!(dir, Path::new("/etc/cutover")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_hooks_is_an_empty_list() {
    assert!(parse_ok("").services["web"].hooks.is_empty());
}

#[test]
fn each_mistake_names_its_key_and_what_was_expected() {
    struct Case {
        what: &'static str,
        hook: &'static str,
        key: &'static str,
        says: &'static str,
    }
    let cases = [
        Case {
            what: "both command and http",
            hook: "name = \"m\"\nat = \"pre_switch\"\ncommand = [\"./m\"]\nhttp = { url = \"http://127.0.0.1:1/\" }",
            key: "services.web.hooks[0]",
            says: "found command and http, expected exactly one of `command = [...]` or `http",
        },
        Case {
            what: "neither command nor http",
            hook: "name = \"m\"\nat = \"pre_switch\"",
            key: "services.web.hooks[0]",
            says: "no action, expected exactly one of",
        },
        Case {
            what: "an unknown point",
            hook: "name = \"m\"\nat = \"pre_deploy\"\ncommand = [\"./m\"]",
            key: "services.web.hooks[0].at",
            says: "expected one of before_start, pre_switch, post_switch, after_success, on_rollback, got \"pre_deploy\"",
        },
        Case {
            what: "abort at after_success",
            hook: "name = \"m\"\nat = \"after_success\"\ncommand = [\"./m\"]\non_failure = \"abort\"",
            key: "services.web.hooks[0].on_failure",
            says: "not possible at after_success: the deployment has already succeeded, so there is nothing left to abort",
        },
        Case {
            what: "abort at on_rollback",
            hook: "name = \"m\"\nat = \"on_rollback\"\ncommand = [\"./m\"]\non_failure = \"abort\"",
            key: "services.web.hooks[0].on_failure",
            says: "traffic is already back on the previous release, so there is nothing left to abort",
        },
        Case {
            what: "an unknown policy",
            hook: "name = \"m\"\nat = \"pre_switch\"\ncommand = [\"./m\"]\non_failure = \"ignore\"",
            key: "services.web.hooks[0].on_failure",
            says: "expected \"abort\" or \"warn\", got \"ignore\"",
        },
        Case {
            what: "a timeout that is not a duration",
            hook: "name = \"m\"\nat = \"pre_switch\"\ncommand = [\"./m\"]\ntimeout = \"soon\"",
            key: "services.web.hooks[0].timeout",
            says: "soon",
        },
        Case {
            what: "a zero timeout",
            hook: "name = \"m\"\nat = \"pre_switch\"\ncommand = [\"./m\"]\ntimeout = \"0s\"",
            key: "services.web.hooks[0].timeout",
            says: "greater than 0",
        },
        Case {
            what: "an empty command",
            hook: "name = \"m\"\nat = \"pre_switch\"\ncommand = []",
            key: "services.web.hooks[0].command",
            says: "expected a non-empty argv",
        },
        Case {
            what: "a missing name",
            hook: "at = \"pre_switch\"\ncommand = [\"./m\"]",
            key: "services.web.hooks[0].name",
            says: "missing required key `name`",
        },
        Case {
            what: "an https URL with both a CA file and no verification",
            hook: "name = \"m\"\nat = \"post_switch\"\nhttp = { url = \"https://example.com/\", ca_file = \"ca.pem\", tls_insecure_skip_verify = true }",
            key: "services.web.hooks[0].http.tls_insecure_skip_verify",
            says: "set one or the other",
        },
        Case {
            what: "a status out of range",
            hook: "name = \"m\"\nat = \"post_switch\"\nhttp = { url = \"http://127.0.0.1:1/\", expect_status = [200, 700] }",
            key: "services.web.hooks[0].http.expect_status[1]",
            says: "expected an integer from 100 to 599, got 700",
        },
        Case {
            what: "an unknown key",
            hook: "name = \"m\"\nat = \"pre_switch\"\ncommand = [\"./m\"]\ntimout = \"5s\"",
            key: "services.web.hooks[0].timout",
            says: "did you mean `timeout`?",
        },
    ];
    for case in cases {
        let extra = format!("[[services.web.hooks]]\n{}\n", case.hook);
        let found = problems(&extra);
        assert_eq!(found.len(), 1, "{}: {found:?}", case.what);
        assert_eq!(found[0].0, case.key, "{}: {found:?}", case.what);
        assert!(
            found[0].1.contains(case.says),
            "{}: message was {:?}",
            case.what,
            found[0].1
        );
    }
}

#[test]
fn two_hooks_with_one_name_are_reported_at_the_second() {
    let msg = only_problem(
        "[[services.web.hooks]]\nname = \"m\"\nat = \"pre_switch\"\ncommand = [\"./a\"]\n\
         [[services.web.hooks]]\nname = \"m\"\nat = \"post_switch\"\ncommand = [\"./b\"]\n",
        "services.web.hooks[1].name",
    );
    assert!(msg.contains("already used by hooks[0]"), "{msg}");
}

#[test]
fn a_mistake_in_a_hook_names_the_file_in_the_error() {
    let text = format!(
        "{MINIMAL}\n[[services.web.hooks]]\nname = \"m\"\nat = \"later\"\ncommand = [\"./m\"]\n"
    );
    let err = parse(&text, Some(Path::new("/etc/cutover/cutover.toml"))).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("/etc/cutover/cutover.toml: services.web.hooks[0].at: expected one of"),
        "{shown}"
    );
}
