//! The fast path and the general path give the same answer for the same input
//! (issue #12, item 6c): for each exchange, the client's response (status, header
//! names as written, values, body; the `Date` value aside, but not its presence) and
//! what a raw-socket backend received (request line, header names as written,
//! values, body) are compared between a proxy with the fast path on and one with it
//! off. Header lines are compared in name order (the order of differently named
//! fields carries no meaning, RFC 9110 §5.3; lines of one name keep theirs).

#[path = "support/proxy_harness.rs"]
mod harness;
#[path = "support/raw_backend.rs"]
mod raw_backend;

use cutover::domain::Slot;
use cutover::proxy::ProxySettings;
use harness::{upstream, within, TestProxy};
use raw_backend::RawBackend;

/// A message reduced to what must agree: the first line, header lines by name
/// (`Date`'s value masked), and the body.
fn normalize(raw: &str) -> String {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return format!("(no complete head) {raw:?}");
    };
    let mut lines: Vec<String> = head
        .split("\r\n")
        .map(|l| match l.split_once(':') {
            Some((n, _)) if n.eq_ignore_ascii_case("date") => format!("{n}: <date>"),
            _ => l.to_string(),
        })
        .collect();
    let name = |l: &String| l.split(':').next().unwrap_or_default().to_ascii_lowercase();
    lines[1..].sort_by_key(name);
    format!("{}\r\n\r\n{body}", lines.join("\r\n"))
}

/// `affine`: the general path with a connection-affine upstream connection (the
/// benchmark's third build, `CUTOVER_PROXY_AFFINE=1`).
async fn run(
    fast: bool,
    affine: bool,
    request: &[u8],
    answer: &'static [u8],
) -> (String, Vec<String>) {
    let backend = RawBackend::start_with(answer).await;
    let up = upstream(Slot::Blue, backend.addr);
    let settings = ProxySettings {
        fast_path: fast,
        affine_upstream: affine,
        ..ProxySettings::default()
    };
    let (proxy, _routes) = TestProxy::with_live(&up, settings).await;
    let out = within(10, harness::raw_exchange(proxy.addr, request)).await;
    let received = backend
        .received()
        .iter()
        .map(|r| {
            let head = normalize(&r.head);
            format!("{head}{}", String::from_utf8_lossy(&r.body))
        })
        .collect();
    (normalize(&out), received)
}

async fn agree(what: &str, request: &[u8], answer: &'static [u8]) -> (String, Vec<String>) {
    let fast = run(true, false, request, answer).await;
    let general = run(false, false, request, answer).await;
    let affine = run(false, true, request, answer).await;
    assert_eq!(
        fast.0, general.0,
        "{what}: the client's response differs (fast, general)"
    );
    assert_eq!(
        fast.1, general.1,
        "{what}: what the app received differs (fast, general)"
    );
    assert_eq!(
        general, affine,
        "{what}: the general path differs with a connection-affine upstream"
    );
    fast
}

const CLOSE_GET: &[u8] = b"GET /p?q=1 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn header_names_are_written_the_same_way_both_ways() {
    let request = b"GET /p HTTP/1.1\r\nHost: app.test\r\nX-MiXeD-Case: v\r\nACCEPT: */*\r\nConnection: close\r\n\r\n";
    let answer =
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App-Header: Kept\r\nSERVER: app\r\n\r\nok";
    let (resp, got) = agree("header case", request, answer).await;
    assert!(resp.contains("\r\nx-app-header: Kept\r\n"), "{resp}");
    assert!(got[0].contains("\r\nx-mixed-case: v\r\n"), "{}", got[0]);
}

#[tokio::test]
async fn a_response_without_date_gets_one_on_both_paths() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (resp, _) = agree("no Date", CLOSE_GET, answer).await;
    assert!(resp.contains("\r\ndate: <date>\r\n"), "{resp}");
    let dated =
        b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok";
    let fast = run(true, false, CLOSE_GET, dated).await;
    let general = run(false, false, CLOSE_GET, dated).await;
    assert_eq!(fast.0, general.0, "an app's own Date");
    assert_eq!(fast.0.matches("<date>").count(), 1, "one Date: {}", fast.0);
}

#[tokio::test]
async fn a_repeated_equal_content_length_is_read_the_same_way() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\nsevenby";
    let (resp, _) = agree("response Content-Length: 7, 7", CLOSE_GET, answer).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("sevenby"), "{resp}");
    let request = b"POST /u HTTP/1.1\r\nHost: app.test\r\nContent-Length: 7, 7\r\nConnection: close\r\n\r\nsevenby";
    // A request's list is refused (hyper's choice, which RFC 9110 §8.6 allows) by
    // both paths, and never forwarded.
    let (resp, got) = agree("request Content-Length: 7, 7", request, raw_backend::ANSWER).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn ordinary_exchanges_agree() {
    let cases: [(&str, &[u8], &'static [u8]); 5] = [
        ("a GET", CLOSE_GET, raw_backend::ANSWER),
        (
            "a POST with a body",
            b"POST /u HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            raw_backend::ANSWER,
        ),
        (
            "a chunked response",
            CLOSE_GET,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "a 404 with hop-by-hop headers",
            CLOSE_GET,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n",
        ),
        (
            "forwarded headers from an untrusted client",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=x\r\nConnection: close\r\n\r\n",
            raw_backend::ANSWER,
        ),
    ];
    for (what, request, answer) in cases {
        agree(what, request, answer).await;
    }
}
