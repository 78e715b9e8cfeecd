//! HTTP/2 clients for the proxy's TLS listeners: hyper's HTTP/2 client over a rustls
//! connection that offers only `h2` ([`H2`], many streams on one connection), and a
//! frame-level client ([`Raw`]) for what a well-behaved client never does (opening more
//! streams than allowed, resetting them at once, oversized header blocks) and for
//! reading what the server sends (SETTINGS, GOAWAY, RST_STREAM).
//!
//! [`Raw`] writes its header blocks with HPACK's literal forms only (no Huffman, no
//! dynamic table), which every decoder must accept (RFC 7541 §6.2.2), and never decodes
//! the server's: the tests read frame types, flags, stream ids and error codes.
//!
//! Include it with `#[path = "support/h2.rs"] mod h2;` (it needs no other support file).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The name every test certificate carries (`support/tls.rs` `three_certs`).
pub const HOST: &str = "a.test";

/// A TLS connection to `addr` for [`HOST`], trusting `ca`, offering `alpn`.
pub async fn tls(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let roots = cutover::tls::roots_from_file(ca).expect("the test CA loads");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    tcp.set_nodelay(true).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// One HTTP/2 connection (hyper's client); clone it to send streams concurrently.
#[derive(Clone)]
pub struct H2 {
    send: SendRequest<Full<Bytes>>,
    base: String,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: String,
    /// Trailer fields that ended the body, if any.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// `x-cutover-slot` (the proxy's `slot_header`).
    pub fn slot(&self) -> &str {
        self.headers["x-cutover-slot"].to_str().unwrap()
    }

    /// `name=value` of the `Set-Cookie`, ready to send back.
    pub fn cookie(&self) -> Option<String> {
        let v = self.headers.get("set-cookie")?.to_str().unwrap();
        Some(v.split(';').next().unwrap().to_string())
    }
}

impl H2 {
    /// Connects to `addr`; fails unless ALPN chose `h2`.
    pub async fn connect(addr: SocketAddr, ca: &Path) -> H2 {
        let io = tls(addr, ca, &[b"h2"]).await;
        assert_eq!(
            io.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN chose h2"
        );
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        H2 {
            send,
            base: format!("https://{HOST}:{}", addr.port()),
        }
    }

    /// A GET of `path` with `headers` (a name given twice is sent as two fields).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_get(path, headers)
            .await
            .expect("a stream through the proxy")
    }

    pub async fn try_get(&self, path: &str, headers: &[(&str, &str)]) -> hyper::Result<Reply> {
        self.request(http::Method::GET, path, headers).await
    }

    /// A request without a body (`HEADERS` ends the stream) of `method` for `path`.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Result<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.send.clone().send_request(req).await?;
        let (status, version) = (resp.status().as_u16(), resp.version());
        let headers = resp.headers().clone();
        let collected = resp.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        Ok(Reply {
            status,
            version,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            trailers,
        })
    }
}

// ---------------------------------------------------------------- frames

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
/// SETTINGS_MAX_CONCURRENT_STREAMS.
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM, or of a GOAWAY (after its last stream id).
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// A SETTINGS frame's value for `id`.
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.payload.chunks(6).find_map(|s| {
            (u16::from_be_bytes([s[0], s[1]]) == id)
                .then(|| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
        })
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn int(value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    int(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// A GET's header block: `:method GET`, `:scheme https` (indexed), `:authority` and
/// `:path` (literal, indexed names), then `extra` (literal, new names).
pub fn get_block(authority: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x82, 0x87];
    int(1, 4, 0, &mut b);
    string(authority.as_bytes(), &mut b);
    int(4, 4, 0, &mut b);
    string(path.as_bytes(), &mut b);
    for (k, v) in extra {
        b.push(0);
        string(k.as_bytes(), &mut b);
        string(v.as_bytes(), &mut b);
    }
    b
}

/// A request without a body on `stream`.
pub fn get(stream: u32, authority: &str, path: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &get_block(authority, path, &[]),
    )
}

/// A frame-level HTTP/2 client over TLS; it acknowledges SETTINGS and PING itself.
pub struct Raw {
    io: TlsStream<TcpStream>,
    pub authority: String,
}

impl Raw {
    /// Connects, sends the preface and empty SETTINGS.
    pub async fn connect(addr: SocketAddr, ca: &Path) -> Raw {
        let mut io = tls(addr, ca, &[b"h2"]).await;
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        io.write_all(&hello).await.unwrap();
        Raw {
            io,
            authority: format!("{HOST}:{}", addr.port()),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write frames");
        self.io.flush().await.unwrap();
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.io.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.io.read_exact(&mut payload).await.ok()?;
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload,
        };
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            let _ = self.io.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
        }
        if f.kind == PING && f.flags & ACK == 0 {
            let _ = self.io.write_all(&frame(PING, ACK, 0, &f.payload)).await;
        }
        Some(f)
    }

    /// Reads until a frame matches `want`; panics if the connection closes first.
    pub async fn until(&mut self, mut want: impl FnMut(&Frame) -> bool) -> Frame {
        loop {
            let f = self.next().await.expect("the server closed the connection");
            if want(&f) {
                return f;
            }
        }
    }
}
