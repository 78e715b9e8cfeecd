//! Where a slot answers and what to mirror where: the values the orchestrator hands to
//! a router, the built-in proxy's table holds, and the machine reads back.
//!
//! They live in the domain leaf (not in `router`) so the proxy and the pure state
//! machine use them without importing the router layer.

use std::net::SocketAddr;

use super::Slot;

/// A slot and the address it answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub slot: Slot,
    pub addr: SocketAddr,
}

/// What to mirror where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    pub target: Target,
    /// Share of live requests copied, 1..=100.
    pub percent: u8,
    /// Upper-case methods copied (safe methods unless configured otherwise).
    pub methods: Vec<String>,
}

/// How mirrored requests compared with the live ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MirrorReport {
    /// Copies sent to the mirror target.
    pub mirrored: u64,
    /// Copies whose mirror response and live response were both seen.
    pub compared: u64,
    /// Compared copies whose status class differed from the live response's.
    pub mismatched: u64,
    /// Copies that got no response (connect error, timeout).
    pub failed: u64,
    /// Copies not sent because too many were already in flight (never delays clients).
    pub dropped: u64,
    pub live_latency_sum_us: u64,
    pub mirror_latency_sum_us: u64,
}
