//! The live event feed: every event row, published once, in id order, after the
//! transaction that wrote it committed.
//!
//! Why here and not in the runner: the event log is the durable copy and a follower
//! resumes from it by id (`Last-Event-ID`). A gap-free, duplicate-free resume needs the
//! broadcast order to be the id order, and only the store sees the ids in that order:
//! after every committed write, while still holding the connection's lock, it reads
//! the rows after the last id it published and sends them. Every writer (the runner,
//! boot reconciliation, the standby reaper) is covered without knowing of the feed.
//!
//! A subscriber that falls behind by more than [`CAPACITY`] messages is told it lagged
//! (tokio's broadcast) and catches up from the store with [`Store::events_after`].

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::broadcast;

use super::rows::{event_from_row, EVENT_COLUMNS};
use super::*;

/// Messages a subscriber may fall behind before it must re-read from the store.
pub const CAPACITY: usize = 1024;

/// Who is told of new events, and the last event id told.
#[derive(Debug)]
pub(super) struct Feed {
    tx: broadcast::Sender<Arc<EventRecord>>,
    published: std::sync::atomic::AtomicI64,
}

impl Feed {
    /// A feed whose next message is the first event after `last_id`.
    pub(super) fn new(last_id: i64) -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            published: last_id.into(),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.tx.subscribe()
    }

    /// Sends the events committed since the last call. Called with the connection's
    /// lock held, after a commit, so calls are serialized and ids go out in order.
    pub(super) fn publish_committed(&self, c: &Connection) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let after = self.published.load(Relaxed);
        let new = events_where(c, "WHERE id > ?1 ORDER BY id", rusqlite::params![after])?;
        if let Some(last) = new.last() {
            self.published.store(last.id, Relaxed);
        }
        for e in new {
            // No subscriber is not an error: the event log keeps the event.
            let _ = self.tx.send(Arc::new(e));
        }
        Ok(())
    }
}

/// The highest event id stored (0 when there is none).
pub(super) fn last_event_id(c: &Connection) -> Result<i64, StoreError> {
    Ok(
        c.query_row("SELECT coalesce(max(id), 0) FROM events", [], |row| {
            row.get(0)
        })?,
    )
}

pub(super) fn events_where(
    c: &Connection,
    clause: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<EventRecord>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events {clause}");
    let events = c
        .prepare_cached(&sql)?
        .query_map(params, event_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(events)
}

/// Which events a follower wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this service's events.
    pub service: Option<String>,
    /// Only this deployment's events.
    pub deployment_id: Option<i64>,
}

impl EventFilter {
    pub fn matches(&self, e: &EventRecord) -> bool {
        self.service.as_ref().is_none_or(|s| *s == e.service)
            && self
                .deployment_id
                .is_none_or(|id| e.deployment_id == Some(id))
    }
}
