//! `exchange` against a real TCP server on loopback that answers with scripted bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::proxy::h1::spare::kept_for;

/// A server that answers each request head it reads with the next of `answers` (split
/// into the writes given), closing the connection after those marked so. Returns its
/// endpoint, the request heads it received and how many connections it accepted.
struct Script {
    endpoint: Endpoint,
    heads: mpsc::UnboundedReceiver<String>,
    accepted: Arc<AtomicUsize>,
}

async fn serve(answers: Vec<(Vec<&'static [u8]>, bool)>) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::from(listener.local_addr().unwrap());
    let (tx, heads) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        'conns: loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            loop {
                let Some(head) = read_head(&mut conn).await else {
                    continue 'conns;
                };
                let _ = tx.send(head);
                let Some((writes, close)) = answers.next() else {
                    return;
                };
                for w in writes {
                    conn.write_all(w).await.unwrap();
                    conn.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                if close {
                    continue 'conns;
                }
            }
        }
    });
    Script {
        endpoint,
        heads,
        accepted,
    }
}

async fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    Some(String::from_utf8(buf).unwrap())
}

fn request(method: Method, target: &str) -> http::request::Parts {
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(format!("http://app{target}"))
        .header("host", "example.test")
        .header("x-forwarded-proto", "https")
        .body(())
        .unwrap()
        .into_parts();
    parts.version = http::Version::HTTP_11;
    parts
}

async fn body_of(ex: Exchanged) -> Result<Vec<u8>, io::Error> {
    Ok(ex.body.collect().await?.to_bytes().to_vec())
}

#[tokio::test]
async fn a_content_length_body_comes_whole_and_the_connection_is_reused() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\n\r\nhello";
    let mut s = serve(vec![(vec![ok], false), (vec![ok], false)]).await;
    for _ in 0..2 {
        let ex = send(&s.endpoint, &request(Method::GET, "/a?b=1"))
            .await
            .unwrap();
        assert_eq!(ex.status, StatusCode::OK);
        assert_eq!(ex.headers["x-app"], "1");
        assert_eq!(ex.headers["content-length"], "5");
        assert_eq!(body_of(ex).await.unwrap(), b"hello");
        assert_eq!(kept_for(&s.endpoint), 1);
    }
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    let head = s.heads.recv().await.unwrap();
    assert_eq!(
        head,
        "GET /a?b=1 HTTP/1.1\r\nhost: example.test\r\nx-forwarded-proto: https\r\n\r\n"
    );
}

#[tokio::test]
async fn a_chunked_body_is_decoded_across_reads_and_its_trailers_passed_on() {
    let parts: Vec<&'static [u8]> = vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n5\r\nhel",
        b"lo\r\n6;ext=1\r\n world\r\n",
        b"0\r\nX-Trailer: t\r\nX-Tr",
        b"ailer: u\r\nGrpc-Status: 0\r\n\r\n",
    ];
    let s = serve(vec![(parts, false)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert!(ex.headers.get("transfer-encoding").is_none());
    assert!(
        ex.headers.get("content-length").is_none(),
        "a length that a transfer coding overrides is not passed on"
    );
    let collected = ex.body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(collected.to_bytes(), &b"hello world"[..]);
    let values: Vec<_> = trailers.get_all("x-trailer").iter().collect();
    assert_eq!(values, ["t", "u"]);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers.len(), 3);
    assert_eq!(kept_for(&s.endpoint), 0, "both framings: not reused");
}

#[tokio::test]
async fn trailers_after_an_empty_last_read_still_come_and_the_connection_is_kept() {
    // The data ends in one read; the trailers come alone in the next.
    let parts: Vec<&'static [u8]> = vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
        b"x-sum: 1\r\n\r\n",
    ];
    let s = serve(vec![(parts, false)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    let collected = ex.body.collect().await.unwrap();
    assert_eq!(collected.trailers().expect("trailers")["x-sum"], "1");
    assert_eq!(collected.to_bytes(), &b"ok"[..]);
    assert_eq!(kept_for(&s.endpoint), 1);
}

#[tokio::test]
async fn trailers_that_are_not_fields_or_too_long_end_the_body_with_an_error() {
    let long: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{}\r\n",
            (0..3)
                .map(|i| format!("x-long-{i}: {}\r\n", "v".repeat(6000)))
                .collect::<String>()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let bad: &'static [u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nno colon\r\n\r\n";
    for answer in [long, bad] {
        let s = serve(vec![(vec![answer], false)]).await;
        let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
        assert!(body_of(ex).await.is_err());
        assert_eq!(kept_for(&s.endpoint), 0);
    }
}

#[tokio::test]
async fn a_clean_chunked_body_leaves_the_connection_for_the_next_request() {
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let s = serve(vec![(vec![chunked], false)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert_eq!(body_of(ex).await.unwrap(), b"abc");
    assert_eq!(kept_for(&s.endpoint), 1);
}

#[tokio::test]
async fn a_body_until_close_ends_with_the_connection_which_is_not_kept() {
    let parts: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\n\r\nfirst ", b"second"];
    let s = serve(vec![(parts, true)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert_eq!(body_of(ex).await.unwrap(), b"first second");
    assert_eq!(kept_for(&s.endpoint), 0);
}

#[tokio::test]
async fn a_large_body_streams_in_several_frames() {
    static BODY: [u8; 100_000] = [b'x'; 100_000];
    let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
    let s = serve(vec![(vec![head, &BODY[..60_000], &BODY[60_000..]], false)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert_eq!(ex.body.size_hint().exact(), Some(100_000));
    let mut body = ex.body;
    let (mut frames, mut len) = (0, 0);
    while let Some(frame) = body.frame().await {
        len += frame.unwrap().into_data().unwrap().len();
        frames += 1;
    }
    assert_eq!(len, 100_000);
    assert!(frames > 1, "streamed, not buffered: {frames} frame(s)");
    assert_eq!(kept_for(&s.endpoint), 1);
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_head_or_204_have_none() {
    let short: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
    let s = serve(vec![(vec![short], true)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    let err = body_of(ex).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
    let none: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    let s = serve(vec![(vec![head], false), (vec![none], false)]).await;
    let ex = send(&s.endpoint, &request(Method::HEAD, "/"))
        .await
        .unwrap();
    assert!(ex.body.is_end_stream());
    assert_eq!(ex.headers["content-length"], "10");
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert_eq!(ex.status, StatusCode::NO_CONTENT);
    assert!(body_of(ex).await.unwrap().is_empty());
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn informational_responses_are_skipped_and_101_or_garbage_fail() {
    let early: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let s = serve(vec![(vec![early], false)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(body_of(ex).await.unwrap(), b"ok");

    for bad in [
        &b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"[..],
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    ] {
        let s = serve(vec![(vec![bad], false)]).await;
        match send(&s.endpoint, &request(Method::GET, "/")).await {
            Err(ExchangeError::Upstream(_)) => {}
            Err(e) => panic!("{e} for {:?}", String::from_utf8_lossy(bad)),
            Ok(ex) => panic!("{} for {:?}", ex.status, String::from_utf8_lossy(bad)),
        }
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::from(listener.local_addr().unwrap());
    drop(listener);
    let err = send(&endpoint, &request(Method::GET, "/"))
        .await
        .err()
        .unwrap();
    assert!(err.is_connect(), "{err}");
}

#[tokio::test]
async fn a_reused_connection_the_app_closed_is_replaced_for_a_get_but_not_a_post() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    // The second request on the kept connection is read, then the connection closed
    // without an answer: what an app closing an idle connection looks like when the
    // close crosses the request.
    let s = serve(vec![(vec![ok], false), (vec![], true), (vec![ok], false)]).await;
    for _ in 0..2 {
        let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
        assert_eq!(body_of(ex).await.unwrap(), b"ok");
    }
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        2,
        "the GET went again on a new one"
    );

    let s = serve(vec![(vec![ok], false), (vec![], true), (vec![ok], false)]).await;
    let ex = send(&s.endpoint, &request(Method::GET, "/")).await.unwrap();
    assert_eq!(body_of(ex).await.unwrap(), b"ok");
    let err = send(&s.endpoint, &request(Method::POST, "/"))
        .await
        .err()
        .unwrap();
    assert!(!err.is_connect(), "{err}");
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        1,
        "a POST is not sent twice"
    );
}

#[tokio::test]
async fn a_post_without_body_announces_its_empty_body() {
    let ok: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
    let mut s = serve(vec![(vec![ok], false)]).await;
    let ex = send(&s.endpoint, &request(Method::POST, "/items"))
        .await
        .unwrap();
    assert_eq!(ex.status, StatusCode::CREATED);
    let head = s.heads.recv().await.unwrap();
    assert!(head.starts_with("POST /items HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 0\r\n"), "{head}");
}
