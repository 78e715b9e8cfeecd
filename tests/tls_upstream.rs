//! TLS upstreams (issue 13, item 4): a service whose slots serve TLS
//! (`[services.<name>.upstream_tls]`) is proxied over TLS (the general path; the fast
//! path stays plaintext), and its health checks and smoke tests speak HTTPS, against
//! a real TLS app server with a test CA made by openssl.
//!
//! Fails (never skips) when `openssl` is missing: `.ci/run` installs it.

#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/tls_client.rs"]
mod tls;

use std::sync::Arc;

use cutover::checks::{self, ProbeTarget};
use cutover::domain::Slot;
use cutover::proxy::ProxySettings;
use cutover::tls::ClientTls;
use harness::*;
use tls::{https_server, TestCerts};

fn settings() -> ProxySettings {
    ProxySettings {
        slot_header: true,
        ..ProxySettings::default()
    }
}

#[tokio::test]
async fn a_route_to_an_https_upstream_is_forwarded_over_tls_and_refused_when_untrusted() {
    let certs = TestCerts::new();
    let (addr, seen) = https_server(&certs, 200, "hello over tls").await;

    let mut blue = upstream(Slot::Blue, addr);
    blue.tls = Some(Arc::new(certs.trusting()));
    let (proxy, routes) = TestProxy::with_live(&blue, settings()).await;
    let client = http_client();
    // A request the fast path would take (plain GET): it must go over TLS all the same.
    for i in 0..3 {
        let r = within(10, get(&client, &proxy.url(&format!("/item/{i}")))).await;
        assert_eq!(
            (r.status, r.slot.as_deref(), r.body.as_str()),
            (200, Some("blue"), "hello over tls"),
            "{r:?}"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(seen.lock().unwrap()[2].0, "GET /item/2");
    assert_eq!(settled(&blue.stats, 3).await.status_class[1], 3);

    // The same slot without its CA: the handshake fails, 502, the upstream's fault.
    let mut green = upstream(Slot::Green, addr);
    green.tls = Some(Arc::new(ClientTls::default()));
    routes.set(SERVICE, live(&green));
    let r = within(10, get(&client, &proxy.url("/"))).await;
    assert_eq!((r.status, r.slot.as_deref()), (502, Some("green")), "{r:?}");
    assert_eq!(seen.lock().unwrap().len(), 3, "nothing reached the app");
    let stats = settled(&green.stats, 1).await;
    assert_eq!(stats.upstream_failed, 1, "{stats:?}");
}

#[tokio::test]
async fn health_checks_and_smoke_tests_speak_https_to_a_slot_with_upstream_tls() {
    let certs = TestCerts::for_names("DNS:web.internal");
    let (addr, seen) = https_server(&certs, 200, r#"{"status": "ok"}"#).await;
    let text = format!(
        r#"
[services.web]
listen = "127.0.0.1:1"
[services.web.runtime]
kind = "process"
command = ["./web", "--port", "{{port}}"]
[services.web.upstream_tls]
ca_file = "{ca}"
server_name = "web.internal"
[[services.web.health.checks]]
name = "live"
http = {{ path = "/healthz", body_contains = "ok" }}
[[services.web.smoke.steps]]
name = "home"
path = "/"
expect_status = 200
"#,
        ca = certs.ca.display()
    );
    let config = cutover::config::parse(&text, None).unwrap();
    let svc = &config.services["web"];
    let target = ProbeTarget {
        endpoint: addr.into(),
        service: "web".into(),
        slot: Slot::Green,
        version: "v2".into(),
        tls: svc.upstream_tls.clone(),
    };
    let round = checks::health_round(&svc.health, &target).await;
    assert!(round.iter().all(|r| r.ok), "{round:?}");
    let smoke = checks::smoke(&svc.smoke, &target).await;
    assert!(smoke.passed, "{smoke:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Without the server name the certificate (for web.internal) does not match the IP.
    let mut plain_name = target.clone();
    plain_name.tls.as_mut().unwrap().server_name = None;
    let round = checks::health_round(&svc.health, &plain_name).await;
    assert!(!round[0].ok, "{round:?}");
    assert!(
        round[0]
            .detail
            .contains("not valid for the name \"127.0.0.1\""),
        "{round:?}"
    );
    // And plain HTTP against the TLS port fails too (the slot speaks TLS only).
    let plain = target.with_tls(None);
    let round = checks::health_round(&svc.health, &plain).await;
    assert!(!round[0].ok, "{round:?}");
}
