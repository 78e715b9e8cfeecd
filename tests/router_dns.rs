//! The DNS router against a real BIND 9 (`named` on a loopback port, primary for
//! `example.test`, updates allowed for a key made by `tsig-keygen`): a deployment
//! points the name at the new slot (A and AAAA, and the TXT marker naming the slot) by
//! a signed dynamic update, a rollback points it back, a release that fails its checks
//! never reaches DNS, a wrong key fails the deployment with the server's answer and
//! changes nothing, and the config refuses what DNS cannot do. Every answer is read
//! back with `dig` from the server itself.

#[path = "support/routers.rs"]
mod routers;
mod support;

use cutover::domain::Slot;
use support::Harness;

const NAME: &str = "web.example.test";
const MARKER: &str = "_cutover.web.example.test";
const BLUE: [&str; 1] = ["192.0.2.10"];
const GREEN_V4: [&str; 1] = ["192.0.2.11"];
const GREEN_V6: [&str; 1] = ["2001:db8::11"];

async fn daemon_with_bind(builder: support::Builder) -> (Harness, routers::Bind) {
    daemon_with_router(builder, |_, dns| dns.router_toml(&dns.key_file)).await
}

/// The daemon with a BIND 9 and the router table `router` writes for it.
async fn daemon_with_router(
    builder: support::Builder,
    router: impl FnOnce(&Harness, &routers::Bind) -> String,
) -> (Harness, routers::Bind) {
    let mut h = builder.watch("1s").without_latency_trigger().build().await;
    let dns = routers::start_bind(h.dir()).await;
    routers::use_router(&h, &router(&h, &dns));
    h.start().await;
    (h, dns)
}

#[tokio::test]
async fn a_deployment_points_the_name_at_the_new_slot_and_a_rollback_points_it_back() {
    let (h, dns) = daemon_with_bind(Harness::builder()).await;
    assert!(
        dns.dig(NAME, "A").is_empty(),
        "no record before the first release"
    );
    let serial = dns.serial();

    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(
        v1.code,
        0,
        "{v1}\n{}\n{}",
        h.daemon_logs(),
        dns.server.logs()
    );
    assert_eq!(dns.dig(NAME, "A"), BLUE);
    assert!(dns.dig(NAME, "AAAA").is_empty());
    assert_eq!(dns.dig(MARKER, "TXT"), ["blue"]);
    assert!(dns.serial() > serial, "BIND applied the update to the zone");
    let status = h.status().await;
    assert_eq!(status.observed_live, Some(Slot::Blue));
    assert!(!status.drift, "{status:?}");

    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(v2.code, 0, "{v2}\n{}", h.daemon_logs());
    assert_eq!(dns.dig(NAME, "A"), GREEN_V4);
    assert_eq!(dns.dig(NAME, "AAAA"), GREEN_V6);
    assert_eq!(dns.dig(MARKER, "TXT"), ["green"]);
    assert_eq!(h.status().await.observed_live, Some(Slot::Green));

    let back = h.cli(&["rollback", "web"]).await;
    assert_eq!(back.code, 0, "{back}\n{}", h.daemon_logs());
    assert_eq!(dns.dig(NAME, "A"), BLUE);
    assert!(dns.dig(NAME, "AAAA").is_empty(), "green's AAAA is gone too");
    assert_eq!(dns.dig(MARKER, "TXT"), ["blue"]);
    let status = h.status().await;
    assert_eq!(status.observed_live, Some(Slot::Blue));
    assert_eq!(status.live_version.as_deref(), Some("v1"));
}

#[tokio::test]
async fn a_release_that_fails_its_checks_never_reaches_dns() {
    let builder = Harness::builder()
        .behaviour("[v2]\nunhealthy = true\n")
        .unhealthy_threshold(2)
        .health_deadline("3s");
    let (h, dns) = daemon_with_bind(builder).await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let serial = dns.serial();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_ne!(v2.code, 0, "an unhealthy v2 deployed:\n{v2}");
    assert_eq!(dns.dig(NAME, "A"), BLUE);
    assert_eq!(dns.dig(MARKER, "TXT"), ["blue"]);
    assert_eq!(dns.serial(), serial, "no update reached the zone");
}

#[tokio::test]
async fn a_wrong_key_fails_the_deployment_with_the_servers_answer_and_changes_nothing() {
    let (h, dns) = daemon_with_router(Harness::builder(), |h, dns| {
        // The right name and algorithm, another secret.
        let wrong = h.write(
            "wrong.key",
            "key \"cutover\" {\n\talgorithm hmac-sha256;\n\tsecret \"d3JvbmctZ3Vlc3Mtd3JvbmctZ3Vlc3Mtd3Jvbmch\";\n};\n",
        );
        routers::private(&wrong);
        dns.router_toml(&wrong)
    })
    .await;
    let serial = dns.serial();
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_ne!(v1.code, 0, "deployed with a wrong key:\n{v1}");
    let said = format!("{v1}");
    assert!(
        said.contains("refused the update") && said.contains("NOTAUTH") && said.contains("BadSig"),
        "the deployment does not give the server's answer:\n{said}\n{}",
        h.daemon_logs()
    );
    assert!(dns.dig(NAME, "A").is_empty());
    assert_eq!(dns.serial(), serial, "nothing changed in the zone");
    assert!(
        dns.server.logs().contains("tsig"),
        "BIND logged no TSIG failure:\n{}",
        dns.server.logs()
    );
}

#[tokio::test]
async fn the_config_refuses_what_a_dns_name_cannot_do() {
    let h = Harness::builder().build().await;
    let dir = h.dir().to_path_buf();
    let key = dir.join("k.key");
    std::fs::write(
        &key,
        "key \"cutover\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==\"; };\n",
    )
    .unwrap();
    routers::private(&key);
    let router = format!(
        "[services.web.router]\nkind = \"dns\"\nserver = \"127.0.0.1:53\"\nzone = \"example.test\"\n\
         ttl = \"120s\"\nkey_file = \"{}\"\n\n",
        key.display()
    );
    routers::use_router(&h, &router);
    h.edit_config(
        "[services.web.watch]",
        "[services.web.strategy]\nkind = \"canary\"\nsteps = [ { weight = 20 } ]\n\n[services.web.watch]",
    );
    let out = h.cli(&["validate"]).await;
    assert_eq!(out.code, 2, "{out}");
    let said = format!("{out}");
    assert!(
        said.contains("services.web.strategy") && said.contains("DNS name cannot"),
        "{said}"
    );
    assert!(
        said.contains("services.web.warm_for") && said.contains("ttl (2m)"),
        "{said}"
    );

    // A key file every user can read is refused before it is read.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = h.cli(&["validate"]).await;
    assert_eq!(out.code, 2, "{out}");
    let said = format!("{out}");
    assert!(
        said.contains("mode 0644") && said.contains("chmod 600"),
        "{said}"
    );
    routers::private(&key);

    std::fs::write(
        &key,
        "key \"cutover\" { algorithm hmac-md5; secret \"c2VjcmV0\"; };\n",
    )
    .unwrap();
    let out = h.cli(&["validate"]).await;
    assert_eq!(out.code, 2, "{out}");
    let said = format!("{out}");
    assert!(said.contains("services.web.router.key_file"), "{said}");
    // The router's own mistake is the only one named: a DNS-routed service has no
    // `listen`, and a broken router table must not make it look like one that needs it.
    assert!(!said.contains("services.web.listen"), "{said}");
}

#[tokio::test]
async fn two_slots_that_would_publish_one_address_are_refused_not_switched_silently() {
    let (h, dns) = daemon_with_router(Harness::builder(), |_, dns| {
        // No [addresses]: the slots' own endpoints, both on 127.0.0.1.
        let toml = dns.router_toml(&dns.key_file);
        toml[..toml.find("[services.web.router.addresses]").unwrap()].to_string()
    })
    .await;
    let v1 = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(v1.code, 0, "{v1}\n{}", h.daemon_logs());
    assert_eq!(dns.dig(NAME, "A"), ["127.0.0.1"]);
    let serial = dns.serial();
    let v2 = h.cli(&["deploy", "web", "v2"]).await;
    assert_ne!(v2.code, 0, "{v2}");
    assert!(format!("{v2}").contains("router.addresses"), "{v2}");
    assert_eq!(dns.dig(MARKER, "TXT"), ["blue"]);
    assert_eq!(dns.serial(), serial);
    assert_eq!(h.status().await.live_version.as_deref(), Some("v1"));
}
