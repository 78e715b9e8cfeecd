//! A raw-socket backend that records exactly what it received: each request's head as
//! bytes (header case, order and duplicates as they came) and its body, and answers
//! every request with a fixed, byte-exact response. For tests that assert what an app
//! behind the proxy sees, and that compare the two proxy paths byte for byte.
//!
//! Include it with `#[path = "support/raw_backend.rs"] mod raw_backend;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The head through the blank line, as sent.
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    /// The request line.
    pub fn line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }
}

pub struct RawBackend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    accept: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What the backend answers to every request.
pub const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App-Header: kept\r\n\r\nok";

impl RawBackend {
    /// Answers every request with `answer`.
    pub async fn start_with(answer: &'static [u8]) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.spawn(serve(s, log.clone(), answer));
            }
        });
        RawBackend {
            addr,
            received,
            accept,
        }
    }

    pub async fn start() -> RawBackend {
        Self::start_with(ANSWER).await
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn serve(mut s: TcpStream, log: Arc<Mutex<Vec<Received>>>, answer: &'static [u8]) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let req = Received {
            head,
            body: Vec::new(),
        };
        let body = if req
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            // Naive: up to the last chunk and its empty trailer section.
            loop {
                if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    break buf.drain(..i + 5).collect();
                }
                if !fill(&mut s, &mut buf).await {
                    return;
                }
            }
        } else {
            let n: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < n {
                if !fill(&mut s, &mut buf).await {
                    return;
                }
            }
            buf.drain(..n).collect()
        };
        log.lock().unwrap().push(Received { body, ..req });
        if s.write_all(answer).await.is_err() {
            return;
        }
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
