//! HTTP/2 streams' upstream side: a request from the general path sent over the fast
//! path's HTTP/1.1 code instead of hyper's pooled client.
//!
//! Why: an HTTP/2 client's requests arrive as streams of hyper's HTTP/2 server, so they
//! take the general path; there, hyper-util's pooled client and hyper's HTTP/1.1 client
//! connection task cost about a third of the instructions of each request (callgrind,
//! BENCHMARKS.md "HTTP/2 streams, the fast path's upstream side"): a pool checkout
//! under a lock, a channel hop to the connection's own task and back, a `Request`
//! encoded and a response head decoded through hyper's generic machinery. Here the
//! stream's own task writes the head to an idle connection of its worker thread, reads
//! the response head with the fast path's parser, and the response body is read by
//! the same task as hyper's HTTP/2 server asks for it ([`DirectBody`]).
//!
//! What it takes (`forward`): a request without a body (an HTTP/2 `HEADERS` frame that
//! ends the stream: `GET`, `HEAD`, most `DELETE`s) to a plain-HTTP slot, no upgrade, no
//! mirroring, and (to a guarded new slot) not one the shield might retry after a
//! status. Everything else goes through the pooled client as before.
//!
//! Connections: each worker thread (thread-per-core, `workers`) keeps its idle upstream
//! connections in a list of its own (`spare`; a stream's task never leaves its thread):
//! no lock, and shared with the thread's HTTP/1.1 client connections. A reused
//! connection found closed before any response byte (the app closed it while idle) is
//! replaced once for a `GET`, `HEAD` or `OPTIONS`.
//!
//! Failure mapping is the general path's (`forward::failed`): connect refused (nothing
//! sent: [`ExchangeError::Connect`], which the shield may retry on the previous slot),
//! reset, EOF or garbage before a complete response head → 502; the caller's timer
//! gives 504. A body cut short by the upstream ends the HTTP/2 stream with an error.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::chunked::{ChunkedEnd, Part};
use super::io::poll_read_once;
use super::response::{append_field, parse_map, Framing, MapParse};
use super::spare::{put, take};
use super::wire::header;
use super::{pool, MAX_HEAD};
use crate::domain::endpoint::Endpoint;

/// Bytes read at a time while a body streams.
const BODY_CHUNK: usize = 16 * 1024;
/// Most bytes of trailer fields after a chunked body (hyper's client allows as many);
/// more is the upstream's failure.
const TRAILERS_MAX: usize = 16 * 1024;

/// Why no response head came back.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection could not be made: nothing was sent.
    Connect(io::Error),
    /// The connection failed, or the upstream closed it or sent garbage, before a
    /// complete response head.
    Upstream(io::Error),
}

impl ExchangeError {
    pub fn is_connect(&self) -> bool {
        matches!(self, ExchangeError::Connect(_))
    }

    fn bad(why: &'static str) -> Self {
        ExchangeError::Upstream(io::Error::new(io::ErrorKind::InvalidData, why))
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Connect(e) => write!(f, "connect: {e}"),
            ExchangeError::Upstream(e) => write!(f, "upstream: {e}"),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExchangeError::Connect(e) | ExchangeError::Upstream(e) => Some(e),
        }
    }
}

/// The response head, and its body to come.
pub struct Exchanged {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: DirectBody,
}

/// Sends the body-less request `parts` (its headers already as the upstream gets them,
/// `Host` among them; its URI's path and query the target) to `endpoint` and reads the
/// response head. Unbounded in time: the caller's `upstream_wait` bounds it.
pub async fn send(
    endpoint: &Endpoint,
    parts: &http::request::Parts,
) -> Result<Exchanged, ExchangeError> {
    let mut out = pool::out_buf();
    write_head(&mut out, parts);
    let head_request = parts.method == Method::HEAD;
    let retry_safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut reused = take(endpoint);
    let result = loop {
        let fresh = reused.is_none();
        let stream = match reused.take() {
            Some(s) => s,
            None => match endpoint.connect().await {
                Ok(s) => s,
                Err(e) => break Err(ExchangeError::Connect(e)),
            },
        };
        match exchange(stream, &out, head_request).await {
            Ok(done) => break Ok(done),
            // A reused connection the app closed while it was idle: nothing came back.
            Err(Attempt::Closed(_)) if !fresh && retry_safe => continue,
            Err(Attempt::Closed(e) | Attempt::Failed(e)) => break Err(e),
        }
    };
    pool::give_out(&mut out);
    let (stream, mut buf, status, headers, framing, reusable) = result?;
    let body = DirectBody::new(endpoint, stream, &mut buf, framing, reusable);
    pool::give_read(&mut buf);
    Ok(Exchanged {
        status,
        headers,
        body,
    })
}

/// A failed attempt: `Closed` when the upstream closed or reset the connection before
/// sending a byte (the request may be sent again on a new one if it is safe to).
enum Attempt {
    Closed(ExchangeError),
    Failed(ExchangeError),
}

type Head = (TcpStream, BytesMut, StatusCode, HeaderMap, Framing, bool);

async fn exchange(mut stream: TcpStream, out: &[u8], head_request: bool) -> Result<Head, Attempt> {
    let closed = |e: io::Error| Attempt::Closed(ExchangeError::Upstream(e));
    stream.write_all(out).await.map_err(closed)?;
    let mut buf = pool::read_buf();
    let mut seen_any = false;
    loop {
        match parse_map(&buf, head_request) {
            MapParse::Partial if buf.len() >= MAX_HEAD => {
                return Err(Attempt::Failed(ExchangeError::bad(
                    "response head too large",
                )));
            }
            MapParse::Partial => {}
            MapParse::Informational { len } => {
                buf.advance(len);
                continue;
            }
            MapParse::Final {
                status,
                len,
                framing,
                reusable,
                headers,
            } => {
                buf.advance(len);
                return Ok((stream, buf, status, headers, framing, reusable));
            }
            MapParse::Bad => {
                return Err(Attempt::Failed(ExchangeError::bad("bad response head")));
            }
        }
        buf.reserve(pool::READ_BUF);
        match stream.read_buf(&mut buf).await {
            Ok(0) if !seen_any => {
                return Err(closed(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "response head cut short");
                return Err(Attempt::Failed(ExchangeError::Upstream(e)));
            }
            Ok(_) => seen_any = true,
            Err(e) if !seen_any => return Err(closed(e)),
            Err(e) => return Err(Attempt::Failed(ExchangeError::Upstream(e))),
        }
    }
}

/// The request head: origin-form target, the headers as they are (names lower-case,
/// as `http` keeps them), and `content-length: 0` for a method whose requests carry
/// content (RFC 9110 §8.6: a sender should announce even an empty body).
fn write_head(out: &mut Vec<u8>, parts: &http::request::Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let announces = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if announces && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response body read from the upstream connection by the task that polls it (the
/// HTTP/2 stream's). The connection goes back to its thread's idle list once the body
/// ended cleanly and nothing followed it; dropped early, the connection is closed.
pub struct DirectBody {
    state: State,
}

enum State {
    Done,
    /// The whole body was read with the head.
    Whole(Bytes),
    Reading(Box<Reading>),
    /// The data has all been given; the trailer fields that ended it come last.
    Trailers(HeaderMap),
}

struct Reading {
    endpoint: Endpoint,
    stream: TcpStream,
    buf: BytesMut,
    left: Left,
    reusable: bool,
    /// The trailer lines of a chunked body seen so far.
    trailers: Vec<u8>,
}

enum Left {
    Length(u64),
    Chunked(ChunkedEnd),
    UntilClose,
}

impl DirectBody {
    /// `buf` holds what came after the head; whatever the body does not keep of it is
    /// left there.
    fn new(
        endpoint: &Endpoint,
        stream: TcpStream,
        buf: &mut BytesMut,
        framing: Framing,
        reusable: bool,
    ) -> Self {
        let left = match framing {
            Framing::Empty | Framing::Length(0) => {
                if reusable && buf.is_empty() {
                    put(endpoint, stream, Instant::now());
                }
                return Self { state: State::Done };
            }
            Framing::Length(n) if (buf.len() as u64) >= n => {
                let n = n as usize;
                let whole = Bytes::copy_from_slice(&buf[..n]);
                if reusable && buf.len() == n {
                    put(endpoint, stream, Instant::now());
                }
                buf.clear();
                return Self {
                    state: State::Whole(whole),
                };
            }
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(ChunkedEnd::default()),
            Framing::UntilClose => Left::UntilClose,
        };
        let mut mine = BytesMut::with_capacity(BODY_CHUNK.max(buf.len()));
        mine.extend_from_slice(buf);
        buf.clear();
        Self {
            state: State::Reading(Box::new(Reading {
                endpoint: endpoint.clone(),
                stream,
                buf: mine,
                left,
                reusable,
                trailers: Vec::new(),
            })),
        }
    }
}

impl Reading {
    /// Takes the body's next bytes out of `buf`: `Ok(Some(data, ended))`, or `Ok(None)`
    /// when more must be read first.
    fn next_data(&mut self) -> io::Result<Option<(Bytes, bool)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.left {
            Left::Length(n) => {
                let take = (self.buf.len() as u64).min(*n) as usize;
                *n -= take as u64;
                let data = self.buf.split_to(take).freeze();
                // Bytes after the body: the connection cannot be trusted again.
                if *n == 0 && !self.buf.is_empty() {
                    self.reusable = false;
                }
                Ok(Some((data, *n == 0)))
            }
            Left::Chunked(end) => {
                let mut data = BytesMut::new();
                let (buf, trailers) = (&self.buf, &mut self.trailers);
                let mut too_long = false;
                let ended = end
                    .feed_data(buf, |part, r| match part {
                        Part::Data => data.extend_from_slice(&buf[r]),
                        Part::Trailer if trailers.len() + r.len() > TRAILERS_MAX => {
                            too_long = true;
                        }
                        Part::Trailer => trailers.extend_from_slice(&buf[r]),
                    })
                    .map_err(|_| bad_body("bad chunked body"))?;
                if too_long {
                    return Err(bad_body("chunked trailers too long"));
                }
                match ended {
                    Some(n) => {
                        if n != self.buf.len() {
                            self.reusable = false;
                        }
                        self.buf.clear();
                        Ok(Some((data.freeze(), true)))
                    }
                    None => {
                        self.buf.clear();
                        Ok(Some((data.freeze(), false)))
                    }
                }
            }
            Left::UntilClose => Ok(Some((self.buf.split().freeze(), false))),
        }
    }
}

fn bad_body(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The trailer lines of a chunked body as fields (hyper's client passes them on the
/// same way: names and values checked, nothing removed).
fn trailer_fields(lines: &[u8]) -> io::Result<HeaderMap> {
    let mut block = Vec::with_capacity(lines.len() + 2);
    block.extend_from_slice(lines);
    block.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; super::response::MAX_HEADERS];
    let parsed = match httparse::parse_headers(&block, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(bad_body("bad chunked trailers")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for f in parsed {
        if !append_field(&mut map, f) {
            return Err(bad_body("bad chunked trailers"));
        }
    }
    Ok(map)
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let reading = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Whole(_) => {
                    let State::Whole(data) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!("matched above");
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Trailers(_) => {
                    let State::Trailers(fields) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched above");
                    };
                    return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                }
                State::Reading(r) => r,
            };
            match reading.next_data() {
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some((data, ended))) => {
                    if ended {
                        let State::Reading(r) = std::mem::replace(&mut this.state, State::Done)
                        else {
                            unreachable!("matched above");
                        };
                        if !r.trailers.is_empty() {
                            match trailer_fields(&r.trailers) {
                                Ok(fields) => this.state = State::Trailers(fields),
                                Err(e) => return Poll::Ready(Some(Err(e))),
                            }
                        }
                        if r.reusable {
                            put(&r.endpoint, r.stream, Instant::now());
                        }
                    }
                    if data.is_empty() && (!ended || matches!(this.state, State::Trailers(_))) {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
            }
            reading.buf.reserve(BODY_CHUNK);
            match ready!(poll_read_once(&mut reading.stream, &mut reading.buf, cx)) {
                Ok(0) => {
                    let until_close = matches!(reading.left, Left::UntilClose);
                    this.state = State::Done;
                    if until_close {
                        return Poll::Ready(None);
                    }
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short");
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done | State::Trailers(_) => SizeHint::with_exact(0),
            State::Whole(b) => SizeHint::with_exact(b.len() as u64),
            State::Reading(r) => match r.left {
                Left::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}

impl fmt::Debug for DirectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done => "done",
            State::Whole(_) => "whole",
            State::Reading(_) => "reading",
            State::Trailers(_) => "trailers",
        };
        f.debug_struct("DirectBody").field("state", &state).finish()
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
