use std::time::Duration;

use bollard::models::{
    ContainerConfig, ContainerState, Health, HealthcheckResult, NetworkSettings,
};

use super::*;
use crate::config::StopSignal;

fn cfg() -> DockerRuntimeConfig {
    DockerRuntimeConfig {
        image: "shop:{version}".into(),
        port: 8080,
        command: Some(vec!["serve".into(), "--slot={slot}".into()]),
        env: [(
            "GREETING".to_string(),
            "hi from {service} {version}".to_string(),
        )]
        .into(),
        env_files: vec![],
        volumes: vec!["/srv/data:/data:ro".into()],
        network: None,
        reach: DockerReach::Loopback,
        ports: None,
        memory: Some(256 << 20),
        cpus: Some(0.5),
        restart: DockerRestart::OnFailureMax(3),
        stop_signal: StopSignal::Int,
        stop_grace: Duration::from_secs(7),
        keep_releases: 2,
    }
}

fn spec() -> SlotSpec {
    SlotSpec {
        service: "shop".into(),
        slot: Slot::Green,
        version: "v2".into(),
        deployment: Some(42),
        env: Vec::new(),
    }
}

fn inspected(status: ContainerStateStatusEnum, restarts: i64) -> ContainerInspectResponse {
    ContainerInspectResponse {
        restart_count: Some(restarts),
        state: Some(ContainerState {
            status: Some(status),
            exit_code: Some(3),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_create_request_carries_name_labels_limits_and_the_loopback_binding() {
    let env = environment(&cfg(), &spec(), vec![]);
    let body = create_body(&cfg(), &spec(), 41234, env);
    assert_eq!(container_name("shop", Slot::Green), "cutover-shop-green");
    assert_eq!(body.image.as_deref(), Some("shop:v2"));
    assert_eq!(body.cmd, Some(vec!["serve".into(), "--slot=green".into()]));
    let labels = body.labels.unwrap();
    assert_eq!(labels[LABEL_SERVICE], "shop");
    assert_eq!(labels[LABEL_SLOT], "green");
    assert_eq!(labels[LABEL_VERSION], "v2");
    assert_eq!(labels[LABEL_DEPLOYMENT], "42");
    assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(body.stop_timeout, Some(7));
    let host = body.host_config.unwrap();
    let binding = &host.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(binding.host_port.as_deref(), Some("41234"));
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.binds, Some(vec!["/srv/data:/data:ro".to_string()]));
    let restart = host.restart_policy.unwrap();
    assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
    assert_eq!(restart.maximum_retry_count, Some(3));
}

#[test]
fn env_files_come_first_then_env_then_cutovers_own_variables() {
    let files =
        parse_env_file("# db\nexport DB_URL=\"postgres://db\"\nGREETING=old\n\nPORT=1\n").unwrap();
    let env = environment(&cfg(), &spec(), files);
    assert_eq!(
        env,
        [
            "DB_URL=postgres://db",
            "GREETING=hi from shop v2",
            "PORT=8080",
            "CUTOVER_VERSION=v2",
            "CUTOVER_SLOT=green",
            "CUTOVER_SERVICE=shop",
        ]
    );
    assert_eq!(
        parse_env_file("OK=1\nnot a pair\n").unwrap_err(),
        "line 2: expected KEY=VALUE, got \"not a pair\""
    );
}

#[test]
fn a_restarting_container_counts_as_running_with_its_restart_count() {
    assert_eq!(
        status_of(&inspected(ContainerStateStatusEnum::RESTARTING, 2)),
        SlotStatus::Running { restarts: 2 }
    );
    assert_eq!(
        status_of(&inspected(ContainerStateStatusEnum::EXITED, 0)),
        SlotStatus::Exited {
            detail: "container exited with code 3".into()
        }
    );
}

#[test]
fn a_container_running_again_after_a_restart_does_not_claim_exit_code_0() {
    let mut c = inspected(ContainerStateStatusEnum::RUNNING, 1);
    // Docker resets the exit code when it restarts the container.
    c.state.as_mut().unwrap().exit_code = Some(0);
    assert!(running_again(&c));
    assert_eq!(
        exit_detail(&c),
        "container exited and was restarted (running again, so its exit code is unknown), after 1 restart(s)"
    );
    let waiting = inspected(ContainerStateStatusEnum::RESTARTING, 1);
    assert!(!running_again(&waiting));
    assert_eq!(
        exit_detail(&waiting),
        "container exited with code 3, after 1 restart(s)"
    );
    assert!(!running_again(&inspected(
        ContainerStateStatusEnum::RUNNING,
        0
    )));
}

#[test]
fn dockers_healthcheck_state_becomes_a_verdict_and_restarts_make_it_unhealthy() {
    let mut c = inspected(ContainerStateStatusEnum::RUNNING, 0);
    assert_eq!(health_of(&c, 0), None, "no HEALTHCHECK, no restarts");
    let state = c.state.as_mut().unwrap();
    state.health = Some(Health {
        status: Some(HealthStatusEnum::UNHEALTHY),
        failing_streak: Some(3),
        log: Some(vec![HealthcheckResult {
            output: Some("HTTP 404\n".into()),
            ..Default::default()
        }]),
    });
    assert_eq!(
        health_of(&c, 0),
        Some(RuntimeHealth::Unhealthy(
            "HEALTHCHECK unhealthy (3 failure(s) in a row): HTTP 404".into()
        ))
    );
    c.state.as_mut().unwrap().health.as_mut().unwrap().status = Some(HealthStatusEnum::STARTING);
    assert!(matches!(health_of(&c, 0), Some(RuntimeHealth::Starting(_))));
    c.restart_count = Some(1);
    assert_eq!(
        health_of(&c, 0),
        Some(RuntimeHealth::Unhealthy(
            "the container restarted 1 time(s) since it was started (running again, its last exit code unknown)".into()
        )),
        "a running container's exit code was reset by its restart: not reported as 0"
    );
    let state = c.state.as_mut().unwrap();
    state.status = Some(ContainerStateStatusEnum::RESTARTING);
    state.exit_code = Some(3);
    assert_eq!(
        health_of(&c, 0),
        Some(RuntimeHealth::Unhealthy(
            "the container restarted 1 time(s) since it was started (last exit code 3)".into()
        ))
    );
    c.state.as_mut().unwrap().status = Some(ContainerStateStatusEnum::RUNNING);
    assert!(matches!(health_of(&c, 1), Some(RuntimeHealth::Starting(_))));
}

#[test]
fn the_address_is_the_published_loopback_port_or_the_network_address() {
    let mut c = inspected(ContainerStateStatusEnum::RUNNING, 0);
    c.network_settings = Some(NetworkSettings {
        ports: Some(HashMap::from([(
            "8080/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some("41234".into()),
            }]),
        )])),
        networks: Some(HashMap::from([(
            "shopnet".to_string(),
            bollard::models::EndpointSettings {
                ip_address: Some("172.30.0.5".into()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    });
    assert_eq!(
        address_of(&cfg(), &c).unwrap(),
        "127.0.0.1:41234".parse().unwrap()
    );
    let mut net = cfg();
    net.reach = DockerReach::Network;
    net.network = Some("shopnet".into());
    assert_eq!(
        address_of(&net, &c).unwrap(),
        "172.30.0.5:8080".parse().unwrap()
    );
    c.config = Some(ContainerConfig {
        labels: Some(HashMap::from([
            (LABEL_SERVICE.to_string(), "shop".to_string()),
            (LABEL_SLOT.to_string(), "green".to_string()),
        ])),
        ..Default::default()
    });
    assert!(belongs_to(&c, "shop", Slot::Green));
    assert!(!belongs_to(&c, "shop", Slot::Blue));
}

#[test]
fn the_extra_instance_has_no_slot_label_never_restarts_and_gets_the_proof_env() {
    let mut s = spec();
    s.env = vec![(
        "DATABASE_URL".into(),
        "postgres://h/app_cutover_scratch".into(),
    )];
    let env = environment(&cfg(), &s, Vec::new());
    assert!(env.contains(&"DATABASE_URL=postgres://h/app_cutover_scratch".to_string()));
    let body = extra_body(create_body(&cfg(), &s, 41000, env));
    let labels = body.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key(LABEL_SLOT), "{labels:?}");
    assert_eq!(labels.get(LABEL_ROLE).map(String::as_str), Some("extra"));
    assert_eq!(labels.get(LABEL_SERVICE).map(String::as_str), Some("shop"));
    let host = body.host_config.expect("host config");
    assert_eq!(
        host.restart_policy.and_then(|r| r.name),
        Some(RestartPolicyNameEnum::NO)
    );
    assert_eq!(extra_name("shop"), "cutover-shop-extra");
}
