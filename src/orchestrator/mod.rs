//! CONTROL PLANE: decides what happens to a service's slots and traffic.
//!
//! - `machine.rs`: the pure deployment state machine (phases, events, effects).
//! - `policy.rs`: the rollback policy over per-slot statistics (pure).
//! - `runner.rs`: carries out one deployment's effects (the only place with I/O).
//! - `progress.rs`: the live view of a running deployment the runner writes and the
//!   API reads.
//! - `switch_times.rs`: how long each switch took inside the process (for `/metrics`).
//! - `controller.rs`: entry points for the API (deploy, rollback, abort, check), boot
//!   reconciliation after a restart (`recovery.rs`), and the standby reaper.
//! - `database_ops.rs`: a service's database outside a deployment (`cutover db ...`):
//!   status, lint, backups, restore and down, refused while a slot still writes.
//! - `supervisor.rs`: health-checks the live release between deployments and restarts
//!   it (or fails over to a warm standby) when it fails.

pub mod controller;
pub mod database_ops;
pub mod machine;
pub mod policy;
pub mod progress;
mod recovery;
pub mod runner;
pub mod supervisor;
pub mod switch_times;

pub use controller::{ControlError, Controller};
pub use progress::Progress;
