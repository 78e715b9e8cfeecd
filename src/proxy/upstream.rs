//! One slot's address and the counters its requests are recorded in: what the routing
//! table holds for a live or preview slot, what a canary split chooses between, and
//! what both proxy paths forward to.
//!
//! Its own file because `table` (which holds splits) and `split` (which chooses
//! between upstreams) both need it; kept in either, they would import each other.

use std::net::SocketAddr;
use std::sync::Arc;

use super::stats::SlotStats;
use crate::domain::Slot;

/// One slot's address and the counters its requests are recorded in.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub slot: Slot,
    pub addr: SocketAddr,
    pub stats: Arc<SlotStats>,
}
