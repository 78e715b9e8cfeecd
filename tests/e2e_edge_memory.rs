//! The real binary under the trickling-heads attack of issue #12 (item 2): many
//! connections each sending a large unfinished request head. Request heads are
//! bounded (`proxy.max_header_bytes`, 64 KiB by default), so the daemon's memory
//! stays flat where it used to grow by ~380 KB per connection; heads over the limit
//! get 431; normal traffic keeps flowing meanwhile.
//!
//! Memory is the daemon's `VmRSS` from `/proc/<pid>/status`, asserted against a
//! generous bound (the figures are printed; run with `--nocapture` to see them).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 300;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Opens a connection and writes an unfinished head of `size` bytes (stopping at the
/// first write error, as a closed connection gives); returns the connection.
async fn unfinished_head(proxy: SocketAddr, size: usize) -> TcpStream {
    let mut s = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");
    let mut head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Trickle: ".to_vec();
    head.resize(size, b'a');
    for chunk in head.chunks(16 * 1024) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_unfinished_heads_keep_the_daemons_memory_flat_and_traffic_flowing() {
    let mut h = Harness::builder().without_latency_trigger().build().await;
    h.start().await;
    let out = h.cli(&["deploy", "web", "v1"]).await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}");
    let pid = h.daemon_pid();
    for _ in 0..20 {
        assert_eq!(h.get_proxy("/").await.map(|r| r.0), Ok(200));
    }
    let before = rss_kib(pid);

    // Phase 1: heads just under the limit (60 KB), held open: the most a client may
    // make the proxy keep.
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(unfinished_head(h.proxy, 60 * 1024)))
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.expect("writer task"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_rss = rss_kib(pid);
    assert_eq!(
        h.get_proxy("/").await.map(|r| r.0),
        Ok(200),
        "normal traffic under attack"
    );

    // Phase 2: the 380 KB heads: refused with 431 at the limit.
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(unfinished_head(h.proxy, 380 * 1024)))
        .collect();
    let mut refused = 0;
    for t in tasks {
        let mut s = t.await.expect("writer task");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        if out.starts_with(b"HTTP/1.1 431") {
            refused += 1;
        }
    }
    let after_rss = rss_kib(pid);
    assert_eq!(
        h.get_proxy("/").await.map(|r| r.0),
        Ok(200),
        "normal traffic after the attack"
    );
    drop(held);

    eprintln!(
        "VmRSS: {} MiB before, {} MiB with {CONNECTIONS} heads of 60 KB held, {} MiB after \
         {CONNECTIONS} heads of 380 KB ({refused} answered 431)",
        before / 1024,
        held_rss / 1024,
        after_rss / 1024
    );
    // Nearly every 380 KB head is answered 431 (a few may see the reset first when
    // the proxy closes while they are still writing).
    assert!(
        refused >= CONNECTIONS * 9 / 10,
        "{refused} of {CONNECTIONS} got 431"
    );
    // 300 × 380 KB would be 111 MiB if heads were buffered whole; bounded heads keep
    // the growth to the limit per connection (300 × 64 KiB = 19 MiB) plus overhead.
    let grown = held_rss.max(after_rss).saturating_sub(before) / 1024;
    assert!(grown < 64, "the daemon grew by {grown} MiB");
}
