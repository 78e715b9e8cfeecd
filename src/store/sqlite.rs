//! The SQLite-backed [`Store`].
use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::domain::{Slot, UnixMillis};

pub struct Store {
    #[allow(dead_code)]
    conn: Mutex<rusqlite::Connection>,
}

impl Store {
    pub fn open(_path: &Path) -> Result<Store, StoreError> { todo!() }
    pub fn open_in_memory() -> Result<Store, StoreError> { todo!() }
    /// Creates service rows (both slots `empty`) for names not yet stored.
    pub fn ensure_services(&self, _names: &[&str]) -> Result<(), StoreError> { todo!() }
    pub fn service(&self, _name: &str) -> Result<ServiceRecord, StoreError> { todo!() }
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> { todo!() }
    /// Writes one slot row and, optionally, the live slot, outside a deployment
    /// (boot reconciliation, standby expiry), with an event.
    pub fn update_slot(&self, _service: &str, _slot: &SlotRecord, _live: Option<Option<Slot>>, _event: Option<(&str, &str)>, _at: UnixMillis) -> Result<(), StoreError> { todo!() }
    /// Fails with `DeploymentInProgress` if the service has an unfinished deployment.
    pub fn begin_deployment(&self, _new: &NewDeployment) -> Result<i64, StoreError> { todo!() }
    pub fn apply(&self, _t: &Transition) -> Result<(), StoreError> { todo!() }
    pub fn record_check(&self, _deployment_id: i64, _check: &CheckRecord) -> Result<(), StoreError> { todo!() }
    pub fn deployment(&self, _id: i64) -> Result<DeploymentRecord, StoreError> { todo!() }
    pub fn active_deployment(&self, _service: &str) -> Result<Option<DeploymentRecord>, StoreError> { todo!() }
    pub fn active_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> { todo!() }
    /// Newest first.
    pub fn history(&self, _service: &str, _limit: usize) -> Result<Vec<DeploymentRecord>, StoreError> { todo!() }
    pub fn append_event(&self, _service: &str, _deployment_id: Option<i64>, _kind: &str, _message: &str, _at: UnixMillis) -> Result<(), StoreError> { todo!() }
    /// Newest first.
    pub fn events(&self, _service: &str, _limit: usize) -> Result<Vec<EventRecord>, StoreError> { todo!() }
    pub fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> { todo!() }
}
