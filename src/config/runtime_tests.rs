//! `[services.<name>.runtime]` of kind `docker` and `compose`: every key, the defaults,
//! and the messages of their rules. (`process` is covered by `config/tests.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::*;

fn parse_at(runtime: &str) -> Result<Config, ConfigError> {
    let text =
        format!("[services.shop]\nlisten = \"127.0.0.1:8080\"\n[services.shop.runtime]\n{runtime}");
    parse(&text, Some(Path::new("/etc/cutover/cutover.toml")))
}

fn runtime_of(runtime: &str) -> RuntimeConfig {
    match parse_at(runtime) {
        Ok(c) => c.services["shop"].runtime.clone(),
        Err(e) => panic!("expected the config to parse, got:\n{e}"),
    }
}

/// (key without `services.shop.runtime.`, message) of every problem.
fn problems(runtime: &str) -> Vec<(String, String)> {
    let err = parse_at(runtime).expect_err("expected problems, the config parsed");
    err.problems
        .into_iter()
        .map(|p| {
            let key = p
                .key
                .trim_start_matches("services.shop.runtime")
                .trim_start_matches('.');
            (key.to_string(), p.message)
        })
        .collect()
}

#[test]
fn a_full_docker_runtime_is_read_with_paths_resolved_against_the_config() {
    let rt = runtime_of(
        r#"kind = "docker"
image = "registry.example.com/shop:{version}"
port = 8080
command = ["serve", "--slot", "{slot}"]
env = { DATABASE_URL = "postgres://db/shop", RELEASE = "{version}" }
env_files = ["shop.env"]
volumes = ["./uploads:/app/uploads", "shop-cache:/cache:ro"]
network = "shopnet"
ports = { blue = 9001, green = 9002 }
memory = "512m"
cpus = 1.5
restart = "on-failure:5"
stop_signal = "SIGINT"
stop_grace = "20s"
keep_releases = 2
"#,
    );
    let RuntimeConfig::Docker(d) = rt else {
        panic!("expected a docker runtime, got {rt:?}")
    };
    assert_eq!(d.image, "registry.example.com/shop:{version}");
    assert_eq!(d.port, 8080);
    assert_eq!(
        d.command,
        Some(vec!["serve".into(), "--slot".into(), "{slot}".into()])
    );
    assert_eq!(d.env["RELEASE"], "{version}");
    assert_eq!(d.env_files, vec![PathBuf::from("/etc/cutover/shop.env")]);
    assert_eq!(
        d.volumes,
        vec![
            "/etc/cutover/./uploads:/app/uploads".to_string(),
            "shop-cache:/cache:ro".into()
        ]
    );
    assert_eq!(d.network.as_deref(), Some("shopnet"));
    assert_eq!(d.reach, DockerReach::Loopback);
    assert_eq!(
        d.ports,
        Some(SlotPorts {
            blue: 9001,
            green: 9002
        })
    );
    assert_eq!(d.memory, Some(512 << 20));
    assert_eq!(d.cpus, Some(1.5));
    assert_eq!(d.restart, DockerRestart::OnFailureMax(5));
    assert_eq!(d.stop_signal, StopSignal::Int);
    assert_eq!(d.stop_grace, Duration::from_secs(20));
    assert_eq!(d.keep_releases, 2);
}

#[test]
fn a_minimal_docker_runtime_gets_the_defaults() {
    let rt = runtime_of("kind = \"docker\"\nimage = \"shop:{version}\"\nport = 80\n");
    let RuntimeConfig::Docker(d) = rt else {
        panic!("expected a docker runtime, got {rt:?}")
    };
    assert_eq!(d.restart, DockerRestart::OnFailure);
    assert_eq!(d.stop_signal, StopSignal::Term);
    assert_eq!(d.stop_grace, Duration::from_secs(10));
    assert_eq!(d.keep_releases, 3);
    assert_eq!(
        (d.memory, d.cpus, d.ports, d.command),
        (None, None, None, None)
    );
}

#[test]
fn docker_mistakes_are_all_reported_with_their_keys() {
    let found = problems(
        r#"kind = "docker"
image = "shop:{tag}"
volumes = ["data", "./x:/y:rx"]
memory = "lots"
cpus = 0
restart = "sometimes"
reach = "network"
workdir = "/srv"
"#,
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "workdir",
            "image",
            "port",
            "volumes[0]",
            "volumes[1]",
            "reach",
            "memory",
            "cpus",
            "restart"
        ],
        "{found:#?}"
    );
    assert!(
        found[0].1.starts_with("unknown key `workdir`"),
        "{}",
        found[0].1
    );
    assert_eq!(
        found[5].1,
        "reach = \"network\" needs `network`, the user-defined network Cutover connects through"
    );
    assert_eq!(
        found[8].1,
        "expected \"no\", \"on-failure\", \"on-failure:<max retries>\", \"always\" or \
         \"unless-stopped\", got \"sometimes\""
    );
}

#[test]
fn a_process_runtime_refuses_docker_keys_as_unknown() {
    let found = problems("kind = \"process\"\ncommand = [\"./web\", \"{port}\"]\nimage = \"x\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "image");
}

#[test]
fn a_compose_runtime_always_checks_its_entry_component() {
    let rt = runtime_of(
        "kind = \"compose\"\nfile = \"stack/compose.yaml\"\nentry = \"frontend\"\n\
         public = [\"api\"]\nenv = { TAG = \"{version}\" }\nstop_grace = \"3s\"\n",
    );
    let RuntimeConfig::Compose(c) = rt else {
        panic!("expected a compose runtime, got {rt:?}")
    };
    assert_eq!(c.file, PathBuf::from("/etc/cutover/stack/compose.yaml"));
    assert_eq!(c.entry, "frontend");
    assert_eq!(c.public, ["frontend", "api"]);
    assert_eq!(c.env["TAG"], "{version}");
    assert_eq!(c.stop_grace, Duration::from_secs(3));
}

#[test]
fn compose_mistakes_are_all_reported_with_their_keys() {
    let found = problems("kind = \"compose\"\npublic = [\"web app\"]\nimage = \"x\"\n");
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["image", "file", "entry", "public[0]"], "{found:#?}");
    assert_eq!(
        found[3].1,
        "expected a compose service name, got \"web app\""
    );
}

#[test]
fn fixed_docker_ports_take_part_in_the_cross_service_port_rules() {
    let text = r#"
[services.a]
listen = "127.0.0.1:8080"
runtime = { kind = "docker", image = "a:{version}", port = 80, ports = { blue = 9001, green = 9002 } }
[services.b]
listen = "127.0.0.1:8081"
runtime = { kind = "compose", file = "b.yaml", entry = "web", ports = { blue = 9002, green = 9003 } }
"#;
    let err = parse(text, None).expect_err("a port used twice");
    let keys: Vec<String> = err.problems.into_iter().map(|p| p.key).collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("services.b.runtime.ports")),
        "{keys:?}"
    );
}

#[test]
fn memory_sizes_are_powers_of_1024_and_at_least_dockers_minimum() {
    use super::docker::parse_bytes;
    assert_eq!(parse_bytes("1g"), Ok(1 << 30));
    assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
    assert_eq!(parse_bytes("64MB"), Ok(64 << 20));
    assert_eq!(parse_bytes("8388608"), Ok(8 << 20));
    assert!(parse_bytes("1m").unwrap_err().contains("at least 6m"));
}
