//! Free loopback ports for releases that are not given fixed `ports`.
//!
//! Why not simply bind port 0: the kernel answers with a port from its *ephemeral*
//! range, the same range it draws the source port of every outgoing connection from.
//! The port is free when we ask, but the release binds it only later (a process has
//! to start, a container has to be created), and in between any outgoing connection on
//! the machine — a health check, a router, a browser — may be given that very port as
//! its source, and the release then fails with "Address already in use". CI saw it.
//!
//! So the port is chosen *outside* the ephemeral range (read from
//! `/proc/sys/net/ipv4/ip_local_port_range`; 32768–60999 by default on Linux):
//! above it when there are at least [`MIN_SPAN`] ports there (61000–65535 by default),
//! else below it, down to 10000. Nothing the kernel hands out automatically lands
//! there, so a port that could be bound a moment ago stays free unless something binds
//! it on purpose. The search starts after the port handed out last (from a random
//! start), so blue and green never get the same port even before either has bound it.
//! When the ephemeral range covers everything, the kernel's choice (port 0) is used.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The fewest ports a range outside the ephemeral one must have to be used.
const MIN_SPAN: u32 = 256;
/// The lowest port chosen below the ephemeral range.
const LOWEST: u32 = 10_000;
/// Linux's default ephemeral range, used when the kernel's cannot be read.
const DEFAULT_EPHEMERAL: (u32, u32) = (32_768, 60_999);

/// The offset (into the range) the next probe tries; `u32::MAX` = not yet chosen.
/// Every probe takes its own offset (`fetch_add`), so two starts at the same moment
/// never probe, and never hand out, the same port.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port nothing listens on, outside the kernel's ephemeral range.
pub fn free_loopback_port() -> io::Result<u16> {
    let Some((low, high)) = outside(ephemeral_range()) else {
        return kernel_choice();
    };
    let span = high - low + 1;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        random() % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    match search(low, span, &NEXT) {
        Some(port) => Ok(port),
        None => kernel_choice(),
    }
}

/// The first port loopback can bind, probing `low + cursor % span` onwards (each probe
/// advancing `cursor`), within one round of the range.
fn search(low: u32, span: u32, cursor: &AtomicU32) -> Option<u16> {
    (0..span).find_map(|_| {
        let port = (low + cursor.fetch_add(1, Ordering::Relaxed) % span) as u16;
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .is_ok()
            .then_some(port)
    })
}

fn kernel_choice() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The kernel's ephemeral port range, inclusive.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_range(&s))
        .unwrap_or(DEFAULT_EPHEMERAL)
}

fn parse_range(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split_whitespace().map(str::parse::<u32>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low <= high && high <= 65_535).then_some((low, high))
}

/// The range (inclusive) to choose from, given the ephemeral range: above it if it
/// leaves room, else below it; `None` when neither side has [`MIN_SPAN`] ports.
fn outside((low, high): (u32, u32)) -> Option<(u32, u32)> {
    if 65_535 - high >= MIN_SPAN {
        Some((high + 1, 65_535))
    } else if low > LOWEST && low - LOWEST >= MIN_SPAN {
        Some((LOWEST, low - 1))
    } else {
        None
    }
}

/// A random number from the standard library's per-process hash keys (no `rand` crate
/// for one number).
fn random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_above_the_ephemeral_one_when_there_is_room() {
        assert_eq!(outside((32_768, 60_999)), Some((61_000, 65_535)));
        assert_eq!(outside((32_768, 65_000)), Some((65_001, 65_535)));
    }

    #[test]
    fn the_range_is_below_when_the_ephemeral_one_reaches_the_top() {
        assert_eq!(outside((40_000, 65_535)), Some((10_000, 39_999)));
        assert_eq!(outside((1_024, 65_535)), None);
        assert_eq!(outside((10_100, 65_400)), None);
    }

    #[test]
    fn the_kernels_range_is_parsed_and_nonsense_refused() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("1 70000"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_not_repeated() {
        let (low, high) = ephemeral_range();
        let a = free_loopback_port().unwrap() as u32;
        let b = free_loopback_port().unwrap() as u32;
        assert_ne!(a, b, "two consecutive calls must not hand out one port");
        for p in [a, b] {
            assert!(
                !(low..=high).contains(&p),
                "{p} is in the ephemeral range {low}-{high}"
            );
        }
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let (low, high) = outside(ephemeral_range()).unwrap();
        let a = free_loopback_port().unwrap();
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, a)).unwrap();
        let cursor = AtomicU32::new(a as u32 - low);
        let port = search(low, high - low + 1, &cursor).unwrap();
        assert_ne!(port, a, "the held port must be passed over");
        assert_eq!(cursor.load(Ordering::Relaxed), port as u32 - low + 1);
    }
}
