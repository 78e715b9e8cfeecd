//! Loopback ports for the servers tests start, outside the kernel's ephemeral range.
//!
//! Why not "bind :0, read the port, release it": that port is an ephemeral one, and
//! once released the kernel may hand it to an outgoing connection (the tests open
//! hundreds) before the server meant to take it binds it: "Address already in use".
//! Ports here come from 20000-31999, below Linux's default ephemeral range
//! (32768-60999), in one sequence per test process starting at a pid-derived offset,
//! each checked bindable before it is handed out.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

const LOW: u32 = 20_000;
const SPAN: u32 = 12_000;
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback address nothing listens on now, never handed out before in this process.
pub fn free_addr() -> SocketAddr {
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        }
    }
    panic!("no free loopback port in {LOW}-{}", LOW + SPAN - 1);
}
