//! The live event feed (`GET /api/v1/events`) against the real binary: a follower
//! that disconnects mid-deployment and resumes with `Last-Event-ID` misses nothing and
//! sees nothing twice, and `cutover deploy` prints what happened in the order it
//! happened.

mod support;

use cutover::api::client::ApiClient;
use cutover::store::EventRecord;
use support::{within, Harness};

/// Reads events until the deployment's final event (inclusive).
async fn read_to_end(c: &ApiClient, id: i64, after: Option<i64>) -> Vec<EventRecord> {
    let mut stream = c
        .events(&format!("/api/v1/events?deployment={id}"), after)
        .await
        .expect("open the event feed");
    let mut out = Vec::new();
    loop {
        let e = stream
            .next()
            .await
            .expect("read the event feed")
            .expect("the feed ended before the deployment did");
        let last = e.is_final();
        out.push(e);
        if last {
            return out;
        }
    }
}

fn ids(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_reconnects_with_last_event_id_gets_every_later_event_once_in_order() {
    let mut h = Harness::builder().watch("4s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);

    let id = h.deploy_no_wait("v2").await;
    let c = h.client();
    // The reference: one follower that never lets go.
    let reference = tokio::spawn({
        let c = c.clone();
        async move { read_to_end(&c, id, None).await }
    });

    // The interrupted follower: reads a few events, hangs up while the deployment goes
    // on (health rounds, smoke tests, the switch), then resumes after the last it saw.
    let mut first = Vec::new();
    {
        let mut stream = c
            .events(&format!("/api/v1/events?deployment={id}"), None)
            .await
            .expect("open the event feed");
        while first.len() < 3 {
            let e = within(30, "the first events", stream.next())
                .await
                .expect("read")
                .expect("event");
            first.push(e);
        }
    } // dropped: the connection closes
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let last_seen = first.last().map(|e| e.id);
    let rest = within(60, "the resumed feed", read_to_end(&c, id, last_seen)).await;
    assert!(
        !rest.is_empty() && rest[0].id > last_seen.unwrap(),
        "the resumed feed starts after the last event seen"
    );
    let mut resumed = first.clone();
    resumed.extend(rest.clone());

    let reference = within(60, "the reference follower", reference)
        .await
        .unwrap();
    assert_eq!(
        ids(&resumed),
        ids(&reference),
        "the interrupted follower saw exactly the reference's events, in order"
    );
    assert_eq!(resumed, reference, "and the same events, field for field");
    let mut sorted = ids(&reference);
    sorted.dedup();
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]) && sorted.len() == reference.len(),
        "ids strictly increase, none repeated: {:?}",
        ids(&reference)
    );
    assert!(
        !rest.iter().any(|e| first.iter().any(|f| f.id == e.id)),
        "nothing before Last-Event-ID came again"
    );

    // Every kind of step is on the feed, and the feed is the event log's copy.
    let kinds: Vec<&str> = reference.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "deploy_started",
        "phase",
        "check",
        "watch",
        "deployment_succeeded",
    ] {
        assert!(kinds.contains(&kind), "no `{kind}` event in {kinds:?}");
    }
    let stored: Vec<EventRecord> = c
        .get("/api/v1/services/web/events?limit=1000")
        .await
        .expect("stored events");
    for e in &reference {
        assert!(
            stored.iter().any(|s| s == e),
            "event #{} is in the event log as sent",
            e.id
        );
    }
    // The watch samples carry the proxy's real counts.
    let watch = reference.iter().find(|e| e.kind == "watch").unwrap();
    let data = watch.data.as_ref().expect("watch data");
    assert!(
        data["requests"].is_u64() && data["left_ms"].is_i64(),
        "{data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_follower_from_now_sees_only_new_events_of_that_service() {
    let mut h = Harness::builder().watch("0s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let c = h.client();
    let mut stream = c
        .events("/api/v1/events?service=web", None)
        .await
        .expect("open the feed");
    let id = h.deploy_no_wait("v2").await;
    let first = within(30, "the first new event", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.deployment_id, Some(id), "{first:?}");
    assert_eq!(first.kind, "deploy_started");

    // An unknown service and a malformed Last-Event-ID are JSON 4xx.
    let err = c
        .events("/api/v1/events?service=nosuch", None)
        .await
        .err()
        .expect("unknown service refused");
    assert!(
        matches!(
            &err,
            cutover::api::client::ClientError::Api { status: 404, .. }
        ),
        "{err:?}"
    );
    let err = c
        .events("/api/v1/events?after=abc", None)
        .await
        .err()
        .expect("bad after refused");
    assert!(
        matches!(
            &err,
            cutover::api::client::ClientError::Api { status: 400, .. }
        ),
        "{err:?}"
    );
    h.wait_finished(id, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_deploy_prints_steps_in_the_order_they_happened_and_the_watch_counts() {
    let mut h = Harness::builder().watch("6s").build().await;
    h.start().await;
    assert_eq!(h.cli(&["deploy", "web", "v1"]).await.code, 0);
    let out = h.cli(&["deploy", "web", "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let pos = |pred: &dyn Fn(&str) -> bool, what: &str| {
        lines
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("no {what} line in:\n{out}"))
    };
    let smoke_phase = pos(&|l| l == "→ smoke", "`→ smoke`");
    let switch_phase = pos(&|l| l == "→ switch", "`→ switch`");
    let last_smoke_result = lines
        .iter()
        .rposition(|l| l.starts_with("  ✓ smoke ") || l.starts_with("  ✗ smoke "))
        .unwrap_or_else(|| panic!("no smoke result line in:\n{out}"));
    assert!(
        smoke_phase < last_smoke_result && last_smoke_result < switch_phase,
        "smoke results print between `→ smoke` and `→ switch`:\n{out}"
    );
    let watching = pos(&|l| l.starts_with("  watching: "), "watch");
    assert!(watching > switch_phase, "{out}");
    assert!(
        lines[watching].contains(" requests · "),
        "the watch line shows the request count: {}",
        lines[watching]
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with("watched for 6s with no trigger"),
        "the last line is the outcome:\n{out}"
    );
}
