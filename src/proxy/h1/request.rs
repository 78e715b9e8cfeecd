//! Request heads on the fast path: which ones it may forward, and the head the
//! upstream gets.
//!
//! The fast path takes the common request (HTTP/1.1, origin-form target, one `Host`,
//! no body or a `Content-Length` body within the limit) and leaves everything else to
//! the general path ([`Parse::General`]): HTTP/1.0, `Transfer-Encoding`, `Expect`,
//! upgrades, a `Connection` header naming other headers, absolute-form targets,
//! duplicate `Host` or `Content-Length`, more than [`MAX_HEADERS`] headers, anything
//! httparse refuses. Sending the rare request down the general path keeps the fast
//! one small: it never has to answer 4xx itself.
//!
//! The head sent upstream is written anew (CRLF line ends, one space after each
//! colon), never copied: whatever leniency the parser had, the upstream sees a clean
//! head. Header names are written lower-case, as hyper writes them on the general
//! path (`tests/proxy_paths_agree.rs`).

use std::mem::MaybeUninit;

use super::super::{cookies, headers};
use super::wire::{content_length, header, unset_fields};

/// Most headers a request may have and still take the fast path.
pub const MAX_HEADERS: usize = 64;
/// Most `X-Forwarded-For` lines joined on the fast path.
const MAX_FORWARDED_FOR: usize = 4;

/// What a header means to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    ContentLength,
    Connection,
    /// Never forwarded: `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
    /// `Proxy-Authenticate`, `Proxy-Authorization`.
    HopByHop,
    /// The request needs the general path: `Transfer-Encoding`, `Upgrade`, `Expect`.
    General,
    Cookie,
    Preview,
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// `x-cutover-*`: the proxy's own; never taken from a client.
    Cutover,
    Other,
}

fn kind(name: &str, preview_header: &str) -> Kind {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    let k = match name.len() {
        2 if is("te") => Kind::HopByHop,
        4 if is("host") => Kind::Host,
        6 if is("cookie") => Kind::Cookie,
        6 if is("expect") => Kind::General,
        7 if is("upgrade") => Kind::General,
        7 if is("trailer") => Kind::HopByHop,
        9 if is("forwarded") => Kind::Forwarded,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::HopByHop,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::ForwardedFor,
        16 if is("proxy-connection") => Kind::HopByHop,
        16 if is("x-forwarded-host") => Kind::ForwardedHost,
        17 if is("transfer-encoding") => Kind::General,
        17 if is("x-forwarded-proto") => Kind::ForwardedProto,
        18 if is("proxy-authenticate") => Kind::HopByHop,
        19 if is("proxy-authorization") => Kind::HopByHop,
        _ => Kind::Other,
    };
    if k != Kind::Other {
        k
    } else if is(preview_header) {
        Kind::Preview
    } else if name.len() >= 10 && name.as_bytes()[..10].eq_ignore_ascii_case(b"x-cutover-") {
        Kind::Cutover
    } else {
        k
    }
}

/// A request head the fast path forwards, parsed in place.
#[derive(Debug)]
pub struct Head<'h, 'b> {
    /// Length of the head in the buffer (the body, if any, follows).
    pub len: usize,
    pub method: &'b str,
    pub path: &'b str,
    pub host: &'b str,
    /// `Content-Length`, 0 without one.
    pub body_len: u64,
    /// The client sent `Connection: close`.
    pub close: bool,
    /// The preview header's value, if present.
    pub preview_value: Option<&'b [u8]>,
    headers: &'h [httparse::Header<'b>],
}

/// The outcome of looking at the bytes received so far.
#[derive(Debug)]
pub enum Parse<'h, 'b> {
    /// The head is not complete yet.
    Partial,
    Fast(Head<'h, 'b>),
    /// Leave this request (and the rest of the connection) to the general path.
    General,
    /// httparse refused the bytes (not for their number of headers): the general
    /// path, which parses with httparse too, answers 400 without waiting for more.
    Invalid,
}

/// Room for a request head's fields, left uninitialised ([`unset_fields`]).
pub type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Empty [`Slots`].
pub const fn slots<'b>() -> Slots<'b> {
    unset_fields()
}

/// Parses the head at the start of `buf`. `max_body` is the body limit: a larger
/// `Content-Length` goes to the general path, which answers 413.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut Slots<'b>,
    preview_header: &str,
    max_body: u64,
) -> Parse<'h, 'b> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::General,
        Err(_) => return Parse::Invalid,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parse::General;
    };
    // CONNECT (even with an origin-form target) is the general path's to refuse or
    // tunnel; it never takes the fast path.
    if !path.starts_with('/') || method == "CONNECT" {
        return Parse::General;
    }
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let mut head = Head {
        len,
        method,
        path,
        host: "",
        body_len: 0,
        close: false,
        preview_value: None,
        headers,
    };
    let (mut hosts, mut lengths, mut forwarded_for) = (0, 0, 0);
    for h in headers {
        match kind(h.name, preview_header) {
            Kind::Host => {
                hosts += 1;
                // An invalid Host is the general path's to refuse (400).
                match std::str::from_utf8(h.value) {
                    Ok(v) if headers::valid_host(v.trim_ascii().as_bytes()) => {
                        head.host = v.trim_ascii();
                    }
                    _ => return Parse::General,
                }
            }
            Kind::ContentLength => {
                lengths += 1;
                match content_length(h.value) {
                    Some(n) if n <= max_body => head.body_len = n,
                    _ => return Parse::General,
                }
            }
            Kind::Connection => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Parse::General;
                    }
                }
            }
            Kind::General => return Parse::General,
            Kind::Preview => head.preview_value = Some(h.value),
            Kind::ForwardedFor => forwarded_for += 1,
            _ => {}
        }
    }
    if hosts != 1 || lengths > 1 || forwarded_for > MAX_FORWARDED_FOR {
        return Parse::General;
    }
    Parse::Fast(head)
}

impl Head<'_, '_> {
    /// Number of header lines.
    pub fn lines(&self) -> usize {
        self.headers.len()
    }

    /// The `Cookie` header values.
    pub fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .map(|h| h.value)
    }

    /// Whether this is a `HEAD` request (its response has no body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Safe to send again on a fresh connection when a reused one turned out closed.
    pub fn retryable(&self) -> bool {
        self.body_len == 0 && matches!(self.method, "GET" | "HEAD" | "OPTIONS")
    }

    /// Appends the head the upstream gets: hop-by-hop headers, the preview header,
    /// `x-cutover-*` and (with `strip_cookies`) the proxy's cookies removed. From a
    /// `trusted` peer (a proxy in `trusted_proxies`), `X-Forwarded-For` is joined with
    /// its address and `X-Forwarded-Proto`/`-Host` and `Forwarded` are kept, the first
    /// two added when absent; from anyone else all four are replaced by what the proxy
    /// saw (`X-Forwarded-Proto: https` when the client came over TLS).
    pub fn write_upstream(
        &self,
        out: &mut Vec<u8>,
        client_ip: &[u8],
        (trusted, https): (bool, bool),
        preview_header: &str,
        strip_cookies_named: Option<&str>,
    ) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let (mut has_proto, mut has_host) = (false, false);
        let mut forwarded_for: [&[u8]; MAX_FORWARDED_FOR] = [&[]; MAX_FORWARDED_FOR];
        let mut n_forwarded = 0;
        for h in self.headers {
            match kind(h.name, preview_header) {
                Kind::Connection | Kind::HopByHop | Kind::General | Kind::Preview => continue,
                Kind::Cutover => continue,
                Kind::ForwardedFor
                | Kind::ForwardedProto
                | Kind::ForwardedHost
                | Kind::Forwarded
                    if !trusted =>
                {
                    continue
                }
                Kind::Cookie if strip_cookies_named.is_some() => continue,
                Kind::ForwardedFor => {
                    forwarded_for[n_forwarded] = h.value;
                    n_forwarded += 1;
                    continue;
                }
                Kind::ForwardedProto => has_proto = true,
                Kind::ForwardedHost => has_host = true,
                _ => {}
            }
            header(out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        for v in &forwarded_for[..n_forwarded] {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(client_ip);
        out.extend_from_slice(b"\r\n");
        if !has_proto && https {
            out.extend_from_slice(b"x-forwarded-proto: https\r\n");
        } else if !has_proto {
            out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        }
        if !has_host {
            header(out, b"x-forwarded-host", self.host.as_bytes());
        }
        if let Some(preview_cookie) = strip_cookies_named {
            let mark = out.len();
            out.extend_from_slice(b"cookie: ");
            let start = out.len();
            cookies::kept_cookies(self.cookies(), preview_cookie, out);
            if out.len() == start {
                out.truncate(mark);
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREVIEW: &str = "x-cutover-preview";

    fn fast(raw: &str, f: impl FnOnce(&Head<'_, '_>)) {
        let mut headers = slots();
        match parse(raw.as_bytes(), &mut headers, PREVIEW, 1000) {
            Parse::Fast(head) => f(&head),
            other => panic!("expected the fast path for {raw:?}, got {other:?}"),
        }
    }

    fn upstream_head(raw: &str, strip: Option<&str>) -> String {
        upstream_head_from(raw, strip, false)
    }

    fn upstream_head_from(raw: &str, strip: Option<&str>, trusted: bool) -> String {
        let mut out = Vec::new();
        fast(raw, |h| {
            h.write_upstream(&mut out, b"10.0.0.9", (trusted, false), PREVIEW, strip)
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_plain_get_is_rewritten_with_forwarded_headers_and_no_hop_by_hop() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive\r\n\
                   Keep-Alive: timeout=5\r\nTE: trailers\r\nAccept: */*\r\n\r\n";
        fast(raw, |h| {
            assert_eq!(
                (h.method, h.path, h.host),
                ("GET", "/a?b=1", "shop.example")
            );
            assert_eq!((h.body_len, h.close, h.len), (0, false, raw.len()));
            assert!(h.retryable());
        });
        assert_eq!(
            upstream_head(raw, None),
            "GET /a?b=1 HTTP/1.1\r\nhost: shop.example\r\naccept: */*\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: shop.example\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_kept_and_joined_and_others_replaced() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\
                   x-forwarded-for: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: outer\r\n\r\n";
        assert_eq!(
            upstream_head(raw, None),
            "GET / HTTP/1.1\r\nhost: h\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
        );
        let forged = "GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=1.2.3.4\r\n\
                      X-Cutover-Mirror: 1\r\nx-cutover-slot: green\r\n\r\n";
        assert_eq!(
            upstream_head(forged, None),
            "GET / HTTP/1.1\r\nhost: h\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
        );
        assert!(upstream_head_from(forged, None, true).contains("\nforwarded: for=1.2.3.4\r\n"));
        assert!(!upstream_head_from(forged, None, true).contains("x-cutover"));
        assert_eq!(
            upstream_head_from(raw, None, true),
            "GET / HTTP/1.1\r\nhost: h\r\nx-forwarded-proto: https\r\nx-forwarded-host: outer\r\n\
             x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n\r\n"
        );
    }

    #[test]
    fn the_preview_header_and_the_proxys_cookies_are_removed() {
        let raw = "POST /p HTTP/1.1\r\nHost: h\r\nX-Cutover-Preview: 1\r\nContent-Length: 3\r\n\
                   Cookie: a=1; cutover-preview=x\r\nCookie: cutover-slot-web=blue; b=2\r\n\
                   Connection: close\r\n\r\nabc";
        fast(raw, |h| {
            assert!(h.preview_value == Some(b"1") && h.close);
            assert_eq!(h.body_len, 3);
            assert_eq!(h.len, raw.len() - 3);
            assert!(!h.retryable(), "a POST with a body is never sent twice");
            let access = crate::proxy::preview::PreviewAccess::with_secret("x");
            let s = cookies::scan_values(h.cookies(), "cutover-preview", "web", &access);
            assert!(s.preview && s.ours);
        });
        assert_eq!(
            upstream_head(raw, Some("cutover-preview")),
            "POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\
             cookie: a=1; b=2\r\n\r\n"
        );
        let only_ours = "GET / HTTP/1.1\r\nHost: h\r\nCookie: cutover-preview=1\r\n\r\n";
        assert!(!upstream_head(only_ours, Some("cutover-preview")).contains("cookie"));
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let mut headers = slots();
        let p = parse(b"GET / HTTP/1.1\r\nHost: h\r\n", &mut headers, PREVIEW, 10);
        assert!(matches!(p, Parse::Partial));
    }

    #[test]
    fn unusual_requests_are_left_to_the_general_path() {
        let general = [
            "GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nBad Header: 1\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ];
        for raw in general {
            let mut headers = slots();
            let p = parse(raw.as_bytes(), &mut headers, PREVIEW, 1000);
            assert!(
                matches!(p, Parse::General | Parse::Invalid),
                "{raw:?} gave {p:?}"
            );
        }
        let mut headers = slots();
        let p = parse(b"GARBAGE\r\n\r\n", &mut headers, PREVIEW, 1000);
        assert!(matches!(p, Parse::Invalid), "refused by httparse: {p:?}");
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
        let mut headers = slots();
        let p = parse(raw.as_bytes(), &mut headers, PREVIEW, 1000);
        assert!(
            matches!(p, Parse::General),
            "too many headers for the fast path, not too many for the general one"
        );
    }
}
