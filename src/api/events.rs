//! `GET /api/v1/events`: the live event feed as Server-Sent Events.
//!
//! Every event the store commits (deployment steps, check results, analysis
//! measurements, watch samples, slot changes) is sent once, in id order, as
//! `id: <event id>`, `event: <kind>`, `data: <the EventRecord as JSON>`.
//! Query: `service=NAME` and/or `deployment=ID` narrow the feed; `after=ID` (or the
//! standard `Last-Event-ID` header, which wins) resumes after an event already seen.
//! Without either, a `deployment=` follower gets that deployment from its first event
//! and any other follower gets what happens from now on.
//!
//! Why resume cannot gap or repeat: the follower subscribes to the store's feed
//! *before* reading the backlog from the event log, then skips every id it has already
//! sent; the feed sends ids in order (see `store/feed.rs`), so the backlog and the
//! live messages meet without a hole. A follower that lags behind the feed's buffer
//! re-reads what it missed from the log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use super::{ApiError, ApiState};
use crate::store::{EventFilter, EventRecord, Store};

/// Events read from the log per query while catching up.
const PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    service: Option<String>,
    deployment: Option<i64>,
    after: Option<i64>,
}

pub(super) async fn feed(
    State(s): State<ApiState>,
    Query(q): Query<FeedQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if let Some(name) = &q.service {
        super::known(&s, name)?;
    }
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be an event id (a number)")
                })?,
        ),
        None => q.after,
    };
    let store = s.controller.store().clone();
    // Subscribe first: whatever is committed from here on reaches `rx`.
    let rx = store.subscribe();
    let after = match (resume, q.deployment) {
        (Some(id), _) => id,
        (None, Some(_)) => 0,
        (None, None) => store.last_event_id()?,
    };
    let follower = Follower {
        store,
        rx,
        stop: s.stop.clone(),
        filter: EventFilter {
            service: q.service,
            deployment_id: q.deployment,
        },
        last: after,
        backlog: VecDeque::new(),
        catching_up: true,
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        let e = f.next().await?;
        Some((Ok(to_sse(&e)), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn to_sse(e: &EventRecord) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(e.id.to_string())
        .event(&e.kind)
        .data(data)
}

/// One follower's position in the feed.
struct Follower {
    store: Arc<Store>,
    rx: broadcast::Receiver<Arc<EventRecord>>,
    stop: watch::Receiver<bool>,
    filter: EventFilter,
    /// The last id sent (or the id to resume after).
    last: i64,
    backlog: VecDeque<EventRecord>,
    /// Reading the log: the last page was full, so there may be more.
    catching_up: bool,
}

impl Follower {
    /// The next event to send; `None` ends the stream (daemon shutting down, or the
    /// store failed).
    async fn next(&mut self) -> Option<EventRecord> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                self.last = e.id;
                return Some(e);
            }
            if self.catching_up {
                let page = match self.store.events_after(&self.filter, self.last, PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "event feed: cannot read the event log");
                        return None;
                    }
                };
                self.catching_up = page.len() == PAGE;
                self.backlog.extend(page);
                continue;
            }
            let received = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.stop.wait_for(|stop| *stop) => return None,
            };
            match received {
                Ok(e) if e.id > self.last && self.filter.matches(&e) => {
                    self.last = e.id;
                    return Some(EventRecord::clone(&e));
                }
                Ok(_) => {}
                // Fell behind the buffer: what was dropped is in the log.
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
