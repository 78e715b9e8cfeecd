//! Persistence: SQLite (bundled) with a versioned schema.
//!
//! The store is the source of truth a restarted daemon boots from: which slot is live,
//! what runs in each slot (address and runtime handle, for adoption), every deployment
//! with its phases, check results, outcome and reason, and an event log.
//!
//! Architecture invariant: *one deployment per service at a time is enforced here*, by a
//! partial unique index on unfinished deployments, not by memory, so two daemons or a
//! crash cannot produce two.
//! Every state-machine transition is written in one transaction ([`Store::apply`]).

mod feed;
mod records;
mod retention;
mod rows;
mod schema;
mod sqlite;

pub use feed::{EventFilter, CAPACITY as FEED_CAPACITY};
pub use records::*;
pub use retention::{PrunePolicy, Pruned};
pub use sqlite::Store;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a deployment of `{service}` is already in progress (deployment #{id})")]
    DeploymentInProgress { service: String, id: i64 },
    #[error("{0} not found")]
    NotFound(String),
    /// A phase change or a second finish for a deployment that already has an outcome.
    #[error("deployment #{id} already finished ({outcome})")]
    AlreadyFinished { id: i64, outcome: DeploymentOutcome },
    #[error("the store's schema version {found} is newer than this binary supports ({supported}); upgrade cutover")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("cannot open the store at {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// Displays SQLite's own message ("database or disk is full", "constraint
    /// failed", ...): a store failure stops a deployment, and its reason must say why.
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
