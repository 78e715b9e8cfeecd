//! Response heads on the fast path: how the body is framed, whether the upstream
//! connection can be used again, and the head the client gets.
//!
//! Framing follows RFC 9112 §6.3: no body for `HEAD`, 1xx, 204 and 304; else
//! `Transfer-Encoding` (chunked last: passed through as is; anything else: until
//! close), else `Content-Length`, else until the upstream closes. A response the
//! proxy cannot frame with certainty (conflicting lengths, an unasked `101`, a status
//! below 100, unparsable) is the upstream's failure: 502.
//!
//! The client's head is written anew, as hyper writes it on the general path (names
//! lower-case; `tests/proxy_paths_agree.rs` compares the two): hop-by-hop headers out
//! (`Connection` and what it names, `Keep-Alive`, `TE`, `Trailer`, `Upgrade`,
//! `Proxy-*`), `transfer-encoding: chunked` after the others for a chunked body (passed
//! through in the same coding), an upstream's `x-cutover-slot` removed and ours added
//! when `proxy.slot_header`, the sticky `Set-Cookie` added during a split,
//! `connection: close` when the client connection ends after this response, and a
//! `date` when the upstream sent none. A `Content-Length` list of equal values
//! (`7, 7`) is read as that value, as hyper does.

use std::mem::MaybeUninit;

use super::wire::{content_length_list, date, header, unset_fields};

/// Most headers a response may have.
pub const MAX_HEADERS: usize = 100;

/// Room for a response head's fields, left uninitialised (`wire::unset_fields`).
type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// httparse's reading of the response head at the start of `buf`, its fields written
/// into `slots`.
fn read_head<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut Slots<'b>,
) -> (httparse::Response<'h, 'b>, httparse::Result<usize>) {
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    (resp, parsed)
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection (the client connection closes too).
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespHead {
    pub status: u16,
    /// Length of the head in the buffer.
    pub len: usize,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
    /// The client connection closes after this response.
    pub close_client: bool,
}

/// The outcome of looking at the upstream's bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespParse {
    Partial,
    /// A 1xx other than 101: `out` holds it for the client; a final response follows.
    Informational {
        len: usize,
    },
    Final(RespHead),
    /// Not a response the proxy can pass on.
    Bad,
}

/// What the proxy adds to the client's head.
#[derive(Debug, Clone, Copy)]
pub struct Additions<'a> {
    /// `x-cutover-slot` to add (`proxy.slot_header`); an upstream's own is removed.
    pub slot: Option<&'a str>,
    pub set_cookie: Option<&'a [u8]>,
    /// The client asked to close, or the proxy is draining.
    pub close: bool,
}

/// Parses the response at the start of `buf` and, once complete, appends the head
/// the client gets to `out`.
pub fn parse(buf: &[u8], head_request: bool, add: Additions<'_>, out: &mut Vec<u8>) -> RespParse {
    let mut headers = unset_fields();
    let (resp, parsed) = read_head(buf, &mut headers);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return RespParse::Partial,
        Err(_) => return RespParse::Bad,
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return RespParse::Bad;
    };
    let reason = resp.reason.unwrap_or("");
    let headers: &[httparse::Header<'_>] = resp.headers;
    // httparse takes any three digits; a status below 100 is no status (RFC 9110
    // §15), and hyper's client refuses it too, so both paths answer 502.
    if status == 101 || status < 100 {
        return RespParse::Bad;
    }
    if (100..200).contains(&status) {
        status_line(out, status, reason);
        for h in headers.iter().filter(|h| !hop_by_hop(h.name, headers)) {
            header(out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(b"\r\n");
        return RespParse::Informational { len };
    }

    let Some(Frame {
        framing,
        reusable,
        chunked,
        names_others,
    }) = frame(version, status, headers, head_request)
    else {
        return RespParse::Bad;
    };
    let close_client = add.close || framing == Framing::UntilClose;

    let named_by: &[httparse::Header<'_>] = if names_others { headers } else { &[] };
    status_line(out, status, reason);
    for h in headers {
        let name = h.name;
        let passed_length = chunked.is_some() && name.eq_ignore_ascii_case("content-length");
        if passed_length || name.eq_ignore_ascii_case("x-cutover-slot") {
            continue;
        }
        // A chunked body keeps its framing, written after the headers (below).
        if chunked == Some(true) && name.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        if !name.eq_ignore_ascii_case("transfer-encoding") && hop_by_hop(name, named_by) {
            continue;
        }
        header(out, name.as_bytes(), h.value);
    }
    if let Some(slot) = add.slot {
        header(out, b"x-cutover-slot", slot.as_bytes());
    }
    if let Some(cookie) = add.set_cookie {
        header(out, b"set-cookie", cookie);
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if framing == Framing::Chunked {
        // As sent (`gzip, chunked` keeps its gzip: the body passes through coded).
        let codings = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
        for h in codings {
            header(out, b"transfer-encoding", h.value);
        }
    }
    // Every response gets a Date (RFC 9110 §6.6.1), last, as hyper adds it.
    if !headers.iter().any(|h| h.name.eq_ignore_ascii_case("date")) {
        date(out);
    }
    out.extend_from_slice(b"\r\n");
    RespParse::Final(RespHead {
        status,
        len,
        framing,
        reusable,
        close_client,
    })
}

/// How a final response's body is framed, read from its head.
struct Frame {
    framing: Framing,
    reusable: bool,
    /// A `Transfer-Encoding` header was present: whether its last coding is chunked.
    chunked: Option<bool>,
    /// A `Connection` header names other headers (which are then hop-by-hop).
    names_others: bool,
}

/// RFC 9112 §6.3 on a final response's head; `None`: it cannot be framed with
/// certainty (conflicting or invalid lengths).
fn frame(
    version: u8,
    status: u16,
    headers: &[httparse::Header<'_>],
    head_request: bool,
) -> Option<Frame> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut reusable = version == 1;
    // Only a `Connection` header naming other headers makes them hop-by-hop.
    let mut names_others = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length_list(h.value)?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    reusable = false;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    names_others = true;
                }
            }
        }
    }
    let no_body = head_request || status == 204 || status == 304;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) => Framing::UntilClose,
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::UntilClose,
    };
    if chunked.is_some() && length.is_some() {
        // Both: the length is ignored (RFC 9112 §6.3), but such a sender is suspect.
        reusable = false;
    }
    if framing == Framing::UntilClose {
        reusable = false;
    }
    Some(Frame {
        framing,
        reusable,
        chunked,
        names_others,
    })
}

/// What [`parse_map`] found.
#[derive(Debug)]
pub enum MapParse {
    Partial,
    /// A 1xx other than 101, `len` bytes long: skipped (a final response follows).
    Informational {
        len: usize,
    },
    Final {
        status: http::StatusCode,
        /// Length of the head in the buffer.
        len: usize,
        framing: Framing,
        reusable: bool,
        headers: http::HeaderMap,
    },
    Bad,
}

/// Parses the response at the start of `buf` for a client that does not speak
/// HTTP/1.1 (an HTTP/2 stream, `exchange`): the status, the framing and reuse as
/// [`parse`] decides them, and the headers as a map, as hyper's client gives them to
/// the general path. The transfer coding is left out (HTTP/2 frames bodies itself),
/// and so is a `Content-Length` that a `Transfer-Encoding` overrides, and `Connection`
/// when it names no other field (`keep-alive`, `close`: nearly every upstream's; `frame`
/// tells, as it does for the HTTP/1.1 head); the caller removes the other hop-by-hop headers as the general path
/// does. Why at parse: a field put in the map only to be taken out again costs a hash,
/// an insert and a remove (about 1,000 instructions per HTTP/2 request, BENCHMARKS.md).
pub fn parse_map(buf: &[u8], head_request: bool) -> MapParse {
    let mut headers = unset_fields();
    let (resp, parsed) = read_head(buf, &mut headers);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return MapParse::Partial,
        Err(_) => return MapParse::Bad,
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else {
        return MapParse::Bad;
    };
    if code == 101 {
        return MapParse::Bad;
    }
    if (100..200).contains(&code) {
        return MapParse::Informational { len };
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let (Ok(status), Some(f)) = (
        http::StatusCode::from_u16(code),
        frame(version, code, headers, head_request),
    ) else {
        return MapParse::Bad;
    };
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (f.chunked.is_some() && h.name.eq_ignore_ascii_case("content-length"))
            || (!f.names_others && h.name.eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        if !append_field(&mut map, h) {
            return MapParse::Bad;
        }
    }
    MapParse::Final {
        status,
        len,
        framing: f.framing,
        reusable: f.reusable,
        headers: map,
    }
}

/// Appends the field `h` to `map` as `http` takes it; `false` if its name or value is
/// not one `http` accepts (the message is then the upstream's failure).
pub fn append_field(map: &mut http::HeaderMap, h: &httparse::Header<'_>) -> bool {
    let (Ok(name), Ok(value)) = (
        http::HeaderName::from_bytes(h.name.as_bytes()),
        http::HeaderValue::from_bytes(h.value),
    ) else {
        return false;
    };
    map.append(name, value);
    true
}

/// A response the proxy writes itself (502, 504), dated like every response hyper
/// writes on the general path.
pub fn local(out: &mut Vec<u8>, status: u16, slot: Option<&str>, body: &str, close: bool) {
    status_line(out, status, "");
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    header(out, b"date", date.as_bytes());
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    if let Some(slot) = slot {
        header(out, b"x-cutover-slot", slot.as_bytes());
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// A refusal the proxy writes before any upstream is involved (431, 400): dated, no
/// slot, and the connection closes.
pub fn refusal(out: &mut Vec<u8>, status: u16, body: &str) {
    status_line(out, status, "");
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    header(out, b"date", date.as_bytes());
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    let reason = if reason.is_empty() {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    } else {
        reason
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A status code (100..=999, as httparse guarantees) as three digits.
fn itoa3(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// Hop-by-hop for a response: the fixed list plus whatever a `Connection` header among
/// `named_by` names.
fn hop_by_hop(name: &str, named_by: &[httparse::Header<'_>]) -> bool {
    const FIXED: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ];
    if FIXED.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        return true;
    }
    named_by
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Additions<'static> = Additions {
        slot: Some("blue"),
        set_cookie: None,
        close: false,
    };

    /// The parse and the client's head, its `date` line (added when the upstream
    /// sent none; checked in `tests/proxy_paths_agree.rs`) left out.
    fn parsed(raw: &str, head_request: bool, add: Additions<'_>) -> (RespParse, String) {
        let mut out = Vec::new();
        let p = parse(raw.as_bytes(), head_request, add, &mut out);
        let out = String::from_utf8(out).unwrap();
        let out = out
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect();
        (p, out)
    }

    fn framing(raw: &str, head_request: bool) -> (Framing, bool) {
        match parsed(raw, head_request, PLAIN).0 {
            RespParse::Final(h) => (h.framing, h.reusable),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    /// The head of `raw` as an HTTP/2 client's stream gets it from `parse_map`.
    fn mapped(raw: &str) -> http::HeaderMap {
        match parse_map(raw.as_bytes(), false) {
            MapParse::Final { headers, .. } => headers,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_connection_field_naming_no_other_field_is_left_out_of_the_map() {
        for value in ["keep-alive", "close", "Keep-Alive, close", " keep-alive ,"] {
            let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: {value}\r\nkeep-alive: timeout=5\r\n\r\n");
            let map = mapped(&raw);
            assert!(!map.contains_key("connection"), "{value:?}");
            // Still there for the caller's hop-by-hop removal, as on the general path.
            assert!(map.contains_key("keep-alive"), "{value:?}");
        }
        // One that names a field stays, so that the field it names is removed too.
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n\r\n";
        let mut map = mapped(raw);
        assert_eq!(map.get("connection").unwrap(), "keep-alive, x-hop");
        crate::proxy::headers::strip_hop_by_hop(&mut map, false);
        assert!(!map.contains_key("x-hop") && !map.contains_key("connection"));
        // `close` still decides reuse: the connection is not kept.
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert!(matches!(
            parse_map(raw.as_bytes(), false),
            MapParse::Final {
                reusable: false,
                ..
            }
        ));
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
                false,
                Framing::Length(2),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                false,
                Framing::Length(2),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                false,
                Framing::Length(7),
                true,
            ),
        ];
        for (raw, head, want, reusable) in cases {
            assert_eq!(framing(raw, head), (want, reusable), "{raw:?}");
        }
    }

    #[test]
    fn the_client_head_loses_hop_by_hop_headers_and_gains_the_slot() {
        let raw =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\n\
                   X-Hop: 1\r\nKeep-Alive: timeout=5\r\nx-cutover-slot: forged\r\n\
                   Content-Length: 2\r\n\r\nok";
        let add = Additions {
            slot: Some("green"),
            set_cookie: Some(b"cutover-slot-web=green; Path=/"),
            close: false,
        };
        let (p, out) = parsed(raw, false, add);
        assert_eq!(
            p,
            RespParse::Final(RespHead {
                status: 200,
                len: raw.len() - 2,
                framing: Framing::Length(2),
                reusable: true,
                close_client: false,
            })
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\
             x-cutover-slot: green\r\nset-cookie: cutover-slot-web=green; Path=/\r\n\r\n"
        );
    }

    #[test]
    fn chunked_keeps_its_header_and_close_delimited_closes_the_client() {
        let (_, out) = parsed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            PLAIN,
        );
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        let (_, out) = parsed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
            PLAIN,
        );
        assert!(
            out.contains("transfer-encoding: gzip, chunked\r\n"),
            "{out}"
        );
        let (p, out) = parsed("HTTP/1.1 200 OK\r\n\r\n", false, PLAIN);
        assert!(matches!(p, RespParse::Final(h) if h.close_client));
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
        let (_, out) = parsed("HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n", false, PLAIN);
        assert!(
            out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{out}"
        );
    }

    #[test]
    fn informational_responses_are_passed_on_and_101_or_garbage_is_bad() {
        let (p, out) = parsed(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200",
            false,
            PLAIN,
        );
        assert_eq!(p, RespParse::Informational { len: 44 });
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n");
        let bad = [
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 020 OK\r\ncontent-length: 0\r\n\r\n",
        ];
        for raw in bad {
            assert_eq!(parsed(raw, false, PLAIN).0, RespParse::Bad, "{raw:?}");
            assert!(
                matches!(parse_map(raw.as_bytes(), false), MapParse::Bad),
                "{raw:?}"
            );
        }
        assert_eq!(
            parsed("HTTP/1.1 200 OK\r\nA: b\r\n", false, PLAIN).0,
            RespParse::Partial
        );
    }

    #[test]
    fn local_responses_are_complete_dated_and_say_which_slot() {
        let mut out = Vec::new();
        local(&mut out, 502, Some("blue"), "upstream failed\n", true);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 502 Bad Gateway"));
        let rest: Vec<&str> = lines.collect();
        let date = rest[0].strip_prefix("date: ").expect("a date header first");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(
            &rest[1..],
            [
                "content-type: text/plain; charset=utf-8",
                "x-cutover-slot: blue",
                "content-length: 16",
                "connection: close",
            ]
        );
        assert_eq!(body, "upstream failed\n");
    }
}
