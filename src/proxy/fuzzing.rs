//! The fast path's hand-written HTTP/1.1 parsers behind a small owned API, for the
//! fuzz targets (`fuzz/`) and the differential property tests
//! (`tests/parsers_differential.rs`). Not part of Cutover's interface.
//!
//! Each function runs one parser exactly as the proxy does (default settings) and
//! returns its verdict as plain data, so a test can compare it with httparse's and
//! hyper's verdicts on the same bytes.

use super::h1::{chunked, request, response};

/// What the fast path makes of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    Partial,
    /// Forwarded by the fast path: what it read, and the head it would send upstream
    /// (client address `10.0.0.9`, not from a trusted proxy).
    Fast {
        len: usize,
        method: String,
        path: String,
        host: String,
        body_len: u64,
        close: bool,
        lines: usize,
        upstream_head: Vec<u8>,
    },
    /// Left to the general path once complete.
    General,
    /// Refused by httparse: the general path answers 400.
    Invalid,
}

/// The fast path's verdict on `buf` (the bytes received so far), with the preview
/// header `x-cutover-preview` and a body limit of 64 KiB.
pub fn request_head(buf: &[u8]) -> RequestVerdict {
    let mut headers = request::slots();
    match request::parse(buf, &mut headers, "x-cutover-preview", 64 * 1024) {
        request::Parse::Partial => RequestVerdict::Partial,
        request::Parse::General => RequestVerdict::General,
        request::Parse::Invalid => RequestVerdict::Invalid,
        request::Parse::Fast(head) => {
            let mut upstream_head = Vec::new();
            head.write_upstream(
                &mut upstream_head,
                b"10.0.0.9",
                (false, false),
                "x-cutover-preview",
                None,
            );
            RequestVerdict::Fast {
                len: head.len,
                method: head.method.to_string(),
                path: head.path.to_string(),
                host: head.host.to_string(),
                body_len: head.body_len,
                close: head.close,
                lines: head.lines(),
                upstream_head,
            }
        }
    }
}

/// What the fast path makes of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseVerdict {
    Partial,
    Informational {
        len: usize,
    },
    Final {
        status: u16,
        len: usize,
        /// `empty`, `length:N`, `chunked` or `close`.
        framing: String,
        reusable: bool,
        close_client: bool,
        client_head: Vec<u8>,
    },
    Bad,
}

/// The fast path's verdict on a response head in `buf`.
pub fn response_head(buf: &[u8], head_request: bool) -> ResponseVerdict {
    let add = response::Additions {
        slot: None,
        set_cookie: None,
        close: false,
    };
    let mut out = Vec::new();
    match response::parse(buf, head_request, add, &mut out) {
        response::RespParse::Partial => ResponseVerdict::Partial,
        response::RespParse::Bad => ResponseVerdict::Bad,
        response::RespParse::Informational { len } => ResponseVerdict::Informational { len },
        response::RespParse::Final(h) => ResponseVerdict::Final {
            status: h.status,
            len: h.len,
            framing: framing_name(h.framing),
            reusable: h.reusable,
            close_client: h.close_client,
            client_head: out,
        },
    }
}

/// A framing as the verdicts name it: `empty`, `length:N`, `chunked` or `close`.
fn framing_name(f: response::Framing) -> String {
    match f {
        response::Framing::Empty => "empty".to_string(),
        response::Framing::Length(n) => format!("length:{n}"),
        response::Framing::Chunked => "chunked".to_string(),
        response::Framing::UntilClose => "close".to_string(),
    }
}

/// A chunked body that breaks the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Where a chunked body that arrives in `pieces` ends, counted from the start of the
/// first piece: `Ok(Some(n))`, `Ok(None)` (not yet), or `Err(Malformed)`.
pub fn chunked_end<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<usize>, Malformed> {
    let mut end = chunked::ChunkedEnd::default();
    let mut offset = 0;
    for piece in pieces {
        match end.feed(piece) {
            Ok(Some(n)) => return Ok(Some(offset + n)),
            Ok(None) => offset += piece.len(),
            Err(_) => return Err(Malformed),
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------- checks
//
// The properties every input must satisfy, shared by the fuzz targets and the
// property tests. Each panics with the input and both verdicts when one fails.

/// Header names a forwarded head must never carry.
const NEVER_FORWARDED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "x-cutover-preview",
];

/// The fast path's request verdict agrees with httparse's on the same bytes, and what
/// it would forward is a clean head httparse reads back the same way.
pub fn check_request_head(buf: &[u8]) {
    let verdict = request_head(buf);
    let mut headers = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf);
    let fail = |why: &str| -> ! {
        panic!(
            "{why}\ninput: {:?}\nfast path: {verdict:?}\nhttparse: {parsed:?}",
            String::from_utf8_lossy(buf)
        )
    };
    match (&verdict, &parsed) {
        (RequestVerdict::Partial, Ok(httparse::Status::Partial)) => {}
        (RequestVerdict::General, Err(httparse::Error::TooManyHeaders)) => {}
        (RequestVerdict::Invalid, Err(e)) if *e != httparse::Error::TooManyHeaders => {}
        (RequestVerdict::General, Ok(httparse::Status::Complete(_))) => {}
        (
            RequestVerdict::Fast {
                len,
                method,
                path,
                host,
                body_len,
                upstream_head,
                lines,
                ..
            },
            Ok(httparse::Status::Complete(n)),
        ) => {
            if len != n || Some(method.as_str()) != req.method || Some(path.as_str()) != req.path {
                fail("head length, method or path differ");
            }
            if req.version != Some(1)
                || !path.starts_with('/')
                || method == "CONNECT"
                || *lines != req.headers.len()
            {
                fail("the fast path took a request it must leave to the general path");
            }
            let named = |name: &'static str| {
                req.headers
                    .iter()
                    .filter(move |h| h.name.eq_ignore_ascii_case(name))
            };
            let hosts: Vec<_> = named("host").collect();
            if hosts.len() != 1
                || hosts[0].value.trim_ascii() != host.as_bytes()
                || !super::headers::valid_host(host.as_bytes())
            {
                fail("the Host the fast path read is not the one valid Host");
            }
            if named("transfer-encoding").count()
                + named("upgrade").count()
                + named("expect").count()
                > 0
                || named("content-length").count() > 1
            {
                fail("the fast path took a request whose framing is the general path's");
            }
            check_forwarded_head(upstream_head, method, path, host, *body_len);
        }
        _ => fail("the fast path and httparse disagree"),
    }
}

fn check_forwarded_head(head: &[u8], method: &str, path: &str, host: &str, body_len: u64) {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let fail = |why: &str| -> ! { panic!("{why}\nforwarded: {:?}", String::from_utf8_lossy(head)) };
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => fail("the forwarded head is not exactly one complete head"),
    }
    if req.method != Some(method) || req.path != Some(path) || req.version != Some(1) {
        fail("the forwarded request line differs");
    }
    let count = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    let value = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if count("host") != 1 || value("host") != Some(host.as_bytes()) {
        fail("the forwarded Host is not the client's one Host");
    }
    if count("x-forwarded-for") != 1 || value("x-forwarded-for") != Some(b"10.0.0.9") {
        fail("X-Forwarded-For is not what the proxy saw");
    }
    if NEVER_FORWARDED.iter().any(|n| count(n) > 0)
        || req
            .headers
            .iter()
            .any(|h| h.name.len() >= 10 && h.name[..10].eq_ignore_ascii_case("x-cutover-"))
        || req
            .headers
            .iter()
            .any(|h| h.name.bytes().any(|b| b.is_ascii_uppercase()))
    {
        fail("a hop-by-hop, x-cutover-* or upper-case header was forwarded");
    }
    let length = value("content-length").and_then(super::h1::wire::content_length);
    if count("content-length") > 1 || (body_len > 0 && length != Some(body_len)) {
        fail("the forwarded Content-Length is not the body's");
    }
}

/// The fast path's response verdict agrees with httparse and with RFC 9112 §6.3's
/// framing rules, and the head the client gets is clean.
pub fn check_response_head(buf: &[u8], head_request: bool) {
    let verdict = response_head(buf, head_request);
    let mut headers = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp.parse(buf);
    let fail = |why: &str| -> ! {
        panic!(
            "{why}\ninput: {:?}\nfast path: {verdict:?}\nhttparse: {parsed:?}",
            String::from_utf8_lossy(buf)
        )
    };
    let n = match (&verdict, &parsed) {
        (ResponseVerdict::Partial, Ok(httparse::Status::Partial)) => return,
        (ResponseVerdict::Bad, Err(_)) => return,
        (_, Ok(httparse::Status::Complete(n))) => *n,
        _ => fail("the fast path and httparse disagree"),
    };
    let status = resp.code.unwrap_or(0);
    let named = |name: &'static str| {
        resp.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    // RFC 9112 §6.3, as the fast path applies it.
    let te_last_chunked = named("transfer-encoding").next_back().map(|h| {
        let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
        last.trim_ascii().eq_ignore_ascii_case(b"chunked")
    });
    let lengths: Vec<Option<u64>> = named("content-length")
        .map(|h| super::h1::wire::content_length_list(h.value))
        .collect();
    let length_ok = lengths.iter().all(Option::is_some) && lengths.windows(2).all(|w| w[0] == w[1]);
    let expected = if status == 101 || status < 100 {
        None
    } else if (100..200).contains(&status) {
        Some("informational".to_string())
    } else if !length_ok {
        None
    } else if head_request || status == 204 || status == 304 {
        Some("empty".to_string())
    } else {
        match (te_last_chunked, lengths.first()) {
            (Some(true), _) => Some("chunked".to_string()),
            (Some(false), _) => Some("close".to_string()),
            (None, Some(Some(n))) => Some(format!("length:{n}")),
            _ => Some("close".to_string()),
        }
    };
    match (&verdict, expected.as_deref()) {
        (ResponseVerdict::Bad, None) => {}
        (ResponseVerdict::Informational { len }, Some("informational")) if *len == n => {}
        (
            ResponseVerdict::Final {
                status: s,
                len,
                framing,
                client_head,
                ..
            },
            Some(want),
        ) if *s == status && *len == n && framing == want => {
            check_client_head(client_head, status, framing);
        }
        _ => fail(&format!("expected framing {expected:?}")),
    }
    check_map_agrees(buf, head_request, &verdict, resp.headers);
}

/// The head an HTTP/2 client gets (`response::parse_map`, `h1::exchange`) is framed
/// as the HTTP/1.1 one, and carries no transfer coding (nor a length it overrides).
fn check_map_agrees(
    buf: &[u8],
    head_request: bool,
    verdict: &ResponseVerdict,
    headers: &[httparse::Header<'_>],
) {
    let map = response::parse_map(buf, head_request);
    let fail = |why: &str| -> ! {
        panic!(
            "{why}\ninput: {:?}\nfast path: {verdict:?}\nfor HTTP/2: {map:?}",
            String::from_utf8_lossy(buf)
        )
    };
    match (verdict, &map) {
        (ResponseVerdict::Partial, response::MapParse::Partial)
        | (ResponseVerdict::Bad, response::MapParse::Bad) => {}
        (
            ResponseVerdict::Informational { len: a },
            response::MapParse::Informational { len: b },
        ) if a == b => {}
        (
            ResponseVerdict::Final {
                status,
                len,
                framing,
                reusable,
                ..
            },
            response::MapParse::Final {
                status: s,
                len: l,
                framing: f,
                reusable: r,
                headers: h,
            },
        ) => {
            if (s.as_u16(), *l, framing_name(*f), *r) != (*status, *len, framing.clone(), *reusable)
            {
                fail("framed differently");
            }
            let te = h.contains_key(http::header::TRANSFER_ENCODING);
            let cl_overridden =
                framing == "chunked" && h.contains_key(http::header::CONTENT_LENGTH);
            if te || cl_overridden {
                fail("a transfer coding, or the length it overrides, reached the HTTP/2 head");
            }
        }
        // A name or value httparse takes but `http` does not: refused, never passed on.
        (ResponseVerdict::Final { .. }, response::MapParse::Bad)
            if headers.iter().any(|h| {
                http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                    || http::HeaderValue::from_bytes(h.value).is_err()
            }) => {}
        _ => fail("the HTTP/1.1 and HTTP/2 heads disagree"),
    }
}

fn check_client_head(head: &[u8], status: u16, framing: &str) {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let fail =
        |why: &str| -> ! { panic!("{why}\nclient head: {:?}", String::from_utf8_lossy(head)) };
    match resp.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => fail("the client's head is not exactly one complete head"),
    }
    let count = |name: &str| {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    // A Date always (the upstream's, passed as it is, or ours).
    if resp.code != Some(status) || count("date") == 0 || count("x-cutover-slot") != 0 {
        fail("status, Date or x-cutover-slot wrong");
    }
    if framing == "chunked" && (count("transfer-encoding") == 0 || count("content-length") != 0) {
        fail("a chunked response must carry exactly its chunked framing");
    }
    if ["keep-alive", "te", "trailer", "upgrade", "proxy-connection"]
        .iter()
        .any(|n| count(n) > 0)
    {
        fail("a hop-by-hop header reached the client");
    }
}

/// The chunked scanner finds the same end however the body is split into reads.
pub fn check_chunked_split(body: &[u8], cuts: &[usize]) {
    let whole = chunked_end([body]);
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&body[start..p]);
        start = p;
    }
    pieces.push(&body[start..]);
    let split = chunked_end(pieces.iter().copied());
    assert_eq!(
        whole,
        split,
        "the end of {:?} depends on how it was read ({cuts:?})",
        String::from_utf8_lossy(body)
    );
    // The data and the trailer lines (`feed_data`, what an HTTP/2 client gets) are the
    // same however it was read, and for a complete body they are what a plain reading
    // of the grammar gives.
    let decoded = chunked_data(&pieces);
    assert_eq!(
        decoded,
        chunked_data(&[body]),
        "the data of {:?} depends on how it was read ({cuts:?})",
        String::from_utf8_lossy(body)
    );
    if let (Ok(Some(_)), Ok(got)) = (whole, &decoded) {
        assert_eq!(
            Some(got),
            reference_chunked(body).as_ref(),
            "decoded {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

/// The chunk data and the trailer lines `feed_data` reports across `pieces`, up to
/// the end of the message.
fn chunked_data(pieces: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
    let mut end = chunked::ChunkedEnd::default();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    for piece in pieces {
        let r = end.feed_data(piece, |part, range| match part {
            chunked::Part::Data => data.extend_from_slice(&piece[range]),
            chunked::Part::Trailer => trailers.extend_from_slice(&piece[range]),
        });
        match r {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(_) => return Err(Malformed),
        }
    }
    Ok((data, trailers))
}

/// A second, plain reading of a complete chunked body (sizes, CRLFs, data, the
/// trailer lines up to the empty line), for comparison: `None` if it does not parse
/// this way.
fn reference_chunked(body: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..line_end];
        let hex: Vec<u8> = line
            .iter()
            .copied()
            .take_while(u8::is_ascii_hexdigit)
            .collect();
        let size = u64::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            let trailers = if rest.starts_with(b"\r\n") {
                Vec::new()
            } else {
                let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
                rest[..end + 2].to_vec()
            };
            return Some((data, trailers));
        }
        let size = usize::try_from(size).ok()?;
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return None;
        }
        data.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Reading any config text never panics; a file TOML cannot parse is refused, and
/// every problem names a key and says what is wrong.
pub fn check_config(text: &str) {
    let result = crate::config::parse(text, None);
    if toml::from_str::<toml::Table>(text).is_err() {
        assert!(result.is_err(), "invalid TOML accepted: {text:?}");
    }
    if let Err(e) = result {
        assert!(!e.problems.is_empty());
        for p in &e.problems {
            assert!(
                !p.key.is_empty() && !p.message.is_empty(),
                "{p:?} for {text:?}"
            );
        }
    }
}
