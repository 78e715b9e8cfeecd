//! Property tests of the fast path's hand-written HTTP/1.1 parsers, in every
//! `cargo test` (the coverage-guided fuzzing of the same properties is `fuzz/`):
//! generated request and response heads (well-formed ones, then mutated byte by
//! byte) and chunked bodies, each checked with `cutover::proxy::fuzzing`'s checks
//! (differential against httparse and RFC 9112's framing), and request heads the fast
//! path forwards are given to hyper's server parser, which must read the same request.
//! Seeded: a failure prints the input and reproduces.

use cutover::proxy::fuzzing::{
    check_chunked_split, check_config, check_request_head, check_response_head, request_head,
    RequestVerdict,
};
use fastrand::Rng;

const NAMES: [&str; 16] = [
    "Host",
    "host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "Upgrade",
    "Expect",
    "Cookie",
    "X-Forwarded-For",
    "Forwarded",
    "X-Cutover-Preview",
    "x-cutover-slot",
    "Accept",
    "TE",
    "Date",
];
const VALUES: [&str; 16] = [
    "a.example",
    "a.example:8080",
    "[::1]:80",
    "3",
    "7, 7",
    "chunked",
    "gzip, chunked",
    "close",
    "keep-alive, x-a",
    "100-continue",
    "websocket",
    "a=1; cutover-preview=x",
    "1.2.3.4",
    "",
    " spaced ",
    "a b",
];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

/// A request head from the pieces above, sometimes with a body.
fn request(rng: &mut Rng) -> Vec<u8> {
    let method = pick(
        rng,
        &["GET", "POST", "HEAD", "OPTIONS", "PUT", "CONNECT", "G@T"],
    );
    let target = pick(
        rng,
        &["/", "/a?b=1", "*", "http://h.example/x", "noslash", "/%7e"],
    );
    let version = pick(rng, &["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]);
    let mut out = format!("{method} {target} {version}\r\n");
    if rng.u8(..10) > 0 {
        out.push_str("Host: a.example\r\n");
    }
    for _ in 0..rng.usize(..6) {
        out.push_str(&format!(
            "{}: {}\r\n",
            pick(rng, &NAMES),
            pick(rng, &VALUES)
        ));
    }
    out.push_str("\r\n");
    if rng.bool() {
        out.push_str("abc");
    }
    out.into_bytes()
}

fn response(rng: &mut Rng) -> Vec<u8> {
    let status = pick(
        rng,
        &[
            "200 OK",
            "204 No Content",
            "304 Not Modified",
            "103 Early Hints",
            "101 Switching",
            "404 ",
            "500 Oops",
        ],
    );
    let version = pick(rng, &["HTTP/1.1", "HTTP/1.0"]);
    let mut out = format!("{version} {status}\r\n");
    for _ in 0..rng.usize(..6) {
        out.push_str(&format!(
            "{}: {}\r\n",
            pick(rng, &NAMES),
            pick(rng, &VALUES)
        ));
    }
    out.push_str("\r\nbody");
    out.into_bytes()
}

/// One random change: a byte replaced, inserted or removed, or the input cut short.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\r\n :\t\0,;\"/@[]\x7f\xff";
    for _ in 0..rng.usize(1..4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.usize(..bytes.len());
        let byte = if rng.bool() {
            SPECIAL[rng.usize(..SPECIAL.len())]
        } else {
            rng.u8(..)
        };
        match rng.u8(..4) {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// A well-formed chunked body, sometimes with extensions and trailers, then garbage.
fn chunked(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.usize(..4) {
        let n = rng.usize(1..40);
        out.extend_from_slice(format!("{n:x}").as_bytes());
        if rng.bool() {
            out.extend_from_slice(b";ext=1");
        }
        out.extend_from_slice(b"\r\n");
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if rng.bool() {
        out.extend_from_slice(b"X-Trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\nGET /next");
    out
}

#[test]
fn request_heads_agree_with_httparse_and_are_forwarded_clean() {
    let mut rng = Rng::with_seed(12);
    for _ in 0..20_000 {
        let base = request(&mut rng);
        check_request_head(&base);
        check_request_head(&mutate(&mut rng, base));
    }
}

#[test]
fn response_heads_agree_with_httparse_and_rfc_9112_framing() {
    let mut rng = Rng::with_seed(13);
    for _ in 0..20_000 {
        let base = response(&mut rng);
        let head = rng.bool();
        check_response_head(&base, head);
        check_response_head(&mutate(&mut rng, base), head);
    }
}

#[test]
fn the_chunked_scanner_ends_where_the_body_ends_however_it_is_read() {
    let mut rng = Rng::with_seed(14);
    for _ in 0..20_000 {
        let body = chunked(&mut rng);
        let cuts: Vec<usize> = (0..rng.usize(..4)).map(|_| rng.usize(..1000)).collect();
        let end = body.len() - b"GET /next".len();
        assert_eq!(
            cutover::proxy::fuzzing::chunked_end([&body[..]]),
            Ok(Some(end)),
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        check_chunked_split(&body, &cuts);
        check_chunked_split(&mutate(&mut rng, body), &cuts);
    }
}

#[test]
fn config_text_never_panics_and_problems_name_their_key() {
    let example = include_str!("../examples/cutover.toml");
    let mut rng = Rng::with_seed(15);
    for _ in 0..300 {
        let text = mutate(&mut rng, example.as_bytes().to_vec());
        check_config(&String::from_utf8_lossy(&text));
    }
}

/// What hyper's server reads from `head`: method, target and Host, or `None` when it
/// refuses it.
async fn hyper_reads(head: Vec<u8>) -> Option<(String, String, String)> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let (tx, rx) = std::sync::mpsc::channel();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let host = req
            .headers()
            .get("host")
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        let _ = tx.send((req.method().to_string(), req.uri().to_string(), host));
        async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }
    });
    let serve = tokio::spawn(
        http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(server), service),
    );
    client.write_all(&head).await.ok()?;
    client.shutdown().await.ok()?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_to_end(&mut sink),
    )
    .await;
    serve.abort();
    rx.try_recv().ok()
}

#[tokio::test]
async fn whatever_the_fast_path_forwards_hyper_reads_the_same_way() {
    let mut rng = Rng::with_seed(16);
    let mut compared = 0;
    for _ in 0..5_000 {
        let head = request(&mut rng);
        let head = if rng.bool() {
            mutate(&mut rng, head)
        } else {
            head
        };
        let RequestVerdict::Fast {
            len,
            method,
            path,
            host,
            body_len,
            ..
        } = request_head(&head)
        else {
            continue;
        };
        let mut whole = head[..len].to_vec();
        whole.extend(std::iter::repeat_n(
            b'x',
            usize::try_from(body_len).unwrap(),
        ));
        let read = hyper_reads(whole).await;
        assert_eq!(
            read,
            Some((method, path, host)),
            "hyper reads {:?} differently",
            String::from_utf8_lossy(&head[..len])
        );
        compared += 1;
    }
    assert!(compared > 100, "only {compared} heads took the fast path");
}
