//! One slot's endpoint and the counters its requests are recorded in: what the routing
//! table holds for a live or preview slot, what a canary split chooses between, and
//! what both proxy paths forward to.
//!
//! An [`Endpoint::Addr`] is dialled as is (no lookup, no allocation per request); a
//! host name is resolved when a connection to it is opened (the fast path's
//! `io::connect`, the hyper client's connector on the general path and the mirror),
//! never per request on a kept-alive connection.
//!
//! Its own file because `table` (which holds splits) and `split` (which chooses
//! between upstreams) both need it; kept in either, they would import each other.

use std::sync::Arc;

use super::stats::SlotStats;
use crate::domain::endpoint::Endpoint;
use crate::domain::Slot;

/// One slot's endpoint and the counters its requests are recorded in.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub slot: Slot,
    pub endpoint: Endpoint,
    pub stats: Arc<SlotStats>,
    /// `Some` when the slot serves TLS: requests take the general path over TLS.
    pub tls: Option<Arc<crate::tls::ClientTls>>,
}
