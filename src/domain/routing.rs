//! Where a slot answers and what to mirror where: the values the orchestrator hands to
//! a router, the built-in proxy's table holds, and the machine reads back.
//!
//! They live in the domain leaf (not in `router`) so the proxy and the pure state
//! machine use them without importing the router layer.

use super::endpoint::Endpoint;
use super::Slot;

/// A slot, where it can be reached, and the name a router knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub slot: Slot,
    /// Where the slot's release answers (an address, or a host resolved when dialled).
    pub endpoint: Endpoint,
    /// The slot's router-specific identity: what a router that switches by label,
    /// Service or DNS record names it. Set by the runtime ([`default_identity`] unless
    /// it has its own name for the slot, such as a container or a Compose project).
    pub identity: String,
}

impl Target {
    /// A target whose identity is the default one (`<service>-<slot>`).
    pub fn new(service: &str, slot: Slot, endpoint: impl Into<Endpoint>) -> Target {
        Target {
            slot,
            endpoint: endpoint.into(),
            identity: default_identity(service, slot),
        }
    }
}

/// The identity of a slot whose runtime has no name of its own for it:
/// `<service>-<slot>` (`web-blue`).
pub fn default_identity(service: &str, slot: Slot) -> String {
    format!("{service}-{slot}")
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
