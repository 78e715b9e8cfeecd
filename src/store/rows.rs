//! Row-level helpers behind [`Store`](super::Store)'s methods: the writes a
//! transaction is made of (service and slot rows, the live slot, events, phases), the
//! reads that turn rows into records, and the text-column conversions of the enums.
//!
//! Why apart from `sqlite.rs`: that file is the store's public surface (one method per
//! operation, each one transaction); these are the statements it is built from, each
//! taking the open connection or transaction so they compose inside one.

use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::*;
use crate::domain::routing::default_identity;
use crate::domain::{Slot, UnixMillis};

pub(super) fn ensure_service_rows(
    c: &Connection,
    service: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO services (name, live_slot, updated_at) VALUES (?1, NULL, ?2)",
        params![service, at],
    )?;
    for slot in Slot::ALL {
        c.execute(
            "INSERT OR IGNORE INTO slots (service, slot, state, updated_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![service, slot, SlotState::Empty, at],
        )?;
    }
    Ok(())
}

pub(super) fn upsert_slot(
    c: &Connection,
    service: &str,
    slot: &SlotRecord,
    at: UnixMillis,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO slots (service, slot, state, version, addr, handle, standby_until, updated_at,
                            identity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (service, slot) DO UPDATE SET
             state = excluded.state, version = excluded.version, addr = excluded.addr,
             handle = excluded.handle, standby_until = excluded.standby_until,
             updated_at = excluded.updated_at, identity = excluded.identity",
        params![
            service,
            slot.slot,
            slot.state,
            slot.version,
            slot.addr,
            slot.handle,
            slot.standby_until,
            at,
            slot.identity,
        ],
    )?;
    Ok(())
}

pub(super) fn set_live(
    c: &Connection,
    service: &str,
    live: Option<Slot>,
    at: UnixMillis,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE services SET live_slot = ?2, updated_at = ?3 WHERE name = ?1",
        params![service, live, at],
    )?;
    Ok(())
}

/// Appends one event row. The feed publishes it once the transaction commits
/// (see `store/feed.rs`).
pub(super) fn insert_event(
    c: &Connection,
    service: &str,
    deployment_id: Option<i64>,
    kind: &str,
    message: &str,
    data: Option<&serde_json::Value>,
    at: UnixMillis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO events (at, service, deployment_id, kind, message, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        at,
        service,
        deployment_id,
        kind,
        message,
        data.map(|d| d.to_string())
    ])?;
    Ok(())
}

/// The columns of an event row, in the order [`event_from_row`] reads them.
pub(super) const EVENT_COLUMNS: &str = "id, at, service, deployment_id, kind, message, data";

pub(super) fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    let data: Option<String> = row.get(6)?;
    Ok(EventRecord {
        id: row.get(0)?,
        at: row.get(1)?,
        service: row.get(2)?,
        deployment_id: row.get(3)?,
        kind: row.get(4)?,
        message: row.get(5)?,
        // Written by this module from a `serde_json::Value`; unreadable text is dropped
        // rather than failing the whole read.
        data: data.and_then(|d| serde_json::from_str(&d).ok()),
    })
}

pub(super) fn deployment_service(c: &Connection, id: i64) -> Result<String, StoreError> {
    c.query_row(
        "SELECT service FROM deployments WHERE id = ?1",
        [id],
        |row| row.get(0),
    )
    .optional()?
    .ok_or_else(|| deployment_not_found(id))
}

pub(super) fn open_phase(
    c: &Connection,
    id: i64,
    phase: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO phases (deployment_id, seq, phase, started_at)
         SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3 FROM phases WHERE deployment_id = ?1",
        params![id, phase, at],
    )?;
    Ok(())
}

pub(super) fn close_open_phase(
    c: &Connection,
    id: i64,
    at: UnixMillis,
    result: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE phases SET ended_at = ?2, result = ?3
         WHERE deployment_id = ?1 AND ended_at IS NULL",
        params![id, at, result],
    )?;
    Ok(())
}

pub(super) fn load_service(
    c: &Connection,
    name: &str,
) -> Result<Option<ServiceRecord>, StoreError> {
    let Some(live) = c
        .query_row(
            "SELECT live_slot FROM services WHERE name = ?1",
            [name],
            |row| row.get::<_, Option<Slot>>(0),
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut slots = Slot::ALL.map(SlotRecord::empty);
    let mut stmt = c.prepare_cached(
        "SELECT slot, state, version, addr, handle, identity, standby_until, updated_at
         FROM slots WHERE service = ?1",
    )?;
    let rows = stmt.query_map([name], |row| {
        let slot: Slot = row.get("slot")?;
        let addr: Option<String> = row.get("addr")?;
        // A row from before identities were stored: the default one.
        let identity: Option<String> = row.get("identity")?;
        let identity = identity.or_else(|| addr.as_ref().map(|_| default_identity(name, slot)));
        Ok(SlotRecord {
            slot,
            state: row.get("state")?,
            version: row.get("version")?,
            addr,
            handle: row.get("handle")?,
            identity,
            standby_until: row.get("standby_until")?,
            updated_at: row.get("updated_at")?,
        })
    })?;
    for record in rows {
        let record = record?;
        let index = record.slot.index();
        slots[index] = record;
    }
    Ok(Some(ServiceRecord {
        name: name.to_string(),
        live,
        slots,
    }))
}

/// Deployments matching `filter` (a `WHERE ... [ORDER BY ...] [LIMIT ...]` tail), each
/// with its phases in order and its checks and measurements in insertion order.
pub(super) fn query_deployments(
    c: &Connection,
    filter: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<DeploymentRecord>, StoreError> {
    let sql = format!(
        "SELECT id, service, kind, version, target_slot, from_slot, from_version, phase,
             outcome, reason, triggered_by, started_at, finished_at, switched_at
         FROM deployments {filter}"
    );
    let mut deployments = c
        .prepare_cached(&sql)?
        .query_map(params, deployment_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut phases = c.prepare_cached(
        "SELECT phase, started_at, ended_at, result FROM phases
         WHERE deployment_id = ?1 ORDER BY seq",
    )?;
    let mut checks = c.prepare_cached(
        "SELECT phase, name, ok, detail, duration_ms, at FROM checks
         WHERE deployment_id = ?1 ORDER BY id",
    )?;
    let mut measurements = c.prepare_cached(
        "SELECT phase, metric, value, verdict, detail, at FROM measurements
         WHERE deployment_id = ?1 ORDER BY id",
    )?;
    for d in &mut deployments {
        d.measurements = measurements
            .query_map([d.id], |row| {
                Ok(MeasurementRecord {
                    phase: row.get("phase")?,
                    metric: row.get("metric")?,
                    value: row.get("value")?,
                    verdict: row.get("verdict")?,
                    detail: row.get("detail")?,
                    at: row.get("at")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        d.phases = phases
            .query_map([d.id], |row| {
                Ok(PhaseRecord {
                    phase: row.get("phase")?,
                    started_at: row.get("started_at")?,
                    ended_at: row.get("ended_at")?,
                    result: row.get("result")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        d.checks = checks
            .query_map([d.id], |row| {
                Ok(CheckRecord {
                    phase: row.get("phase")?,
                    name: row.get("name")?,
                    ok: row.get("ok")?,
                    detail: row.get("detail")?,
                    duration_ms: row.get::<_, i64>("duration_ms")?.max(0) as u64,
                    at: row.get("at")?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(deployments)
}

pub(super) fn deployment_from_row(row: &Row<'_>) -> rusqlite::Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        id: row.get("id")?,
        service: row.get("service")?,
        kind: row.get("kind")?,
        version: row.get("version")?,
        target_slot: row.get("target_slot")?,
        from_slot: row.get("from_slot")?,
        from_version: row.get("from_version")?,
        phase: row.get("phase")?,
        outcome: row.get("outcome")?,
        reason: row.get("reason")?,
        triggered_by: row.get("triggered_by")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        switched_at: row.get("switched_at")?,
        phases: Vec::new(),
        checks: Vec::new(),
        measurements: Vec::new(),
    })
}

/// Stores an enum as its snake_case name and reads it back, refusing unknown names.
macro_rules! text_column {
    ($($ty:ty),*) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                <$ty>::from_str(value.as_str()?).map_err(|e| FromSqlError::Other(e.into()))
            }
        }
    )*};
}

text_column!(Slot, SlotState, DeploymentKind, DeploymentOutcome);

pub(super) fn deployment_not_found(id: i64) -> StoreError {
    StoreError::NotFound(format!("deployment #{id}"))
}
