//! Cutover: moves a service from release N to N+1 with zero dropped requests, and back
//! in under a second when N+1 misbehaves.
//!
//! # Layout
//! - [`domain`]: the words and values every layer shares (slots, timestamps, targets,
//!   statistics snapshots); imports nothing from the crate.
//! - [`config`]: TOML → validated [`config::Config`] (all mistakes reported at once).
//! - [`proxy`]: DATA PLANE. The built-in reverse proxy, its atomically swapped routing
//!   table and lock-free per-slot request statistics.
//! - [`orchestrator`]: CONTROL PLANE. A pure deployment state machine (no I/O, no clock),
//!   the rollback policy, and the one runner that carries out its effects.
//! - [`runtime`]: where a slot runs (`Runtime` trait; local processes, Docker,
//!   Compose, Kubernetes).
//! - [`database`]: PostgreSQL backups, migrations and the compatibility gate.
//! - [`router`]: where traffic is pointed (`Router` trait; the built-in proxy, nginx,
//!   HAProxy, Traefik, Caddy, DNS, Kubernetes).
//! - [`kube`]: `kubectl` as the Kubernetes client the runtime and router share.
//! - [`checks`]: health checks and smoke tests against one slot.
//! - [`analysis`]: metric analysis for canary steps and the watch.
//! - [`notify`]: webhook notifications of deployment events.
//! - [`store`]: SQLite persistence: slots, deployments, phases, checks, events.
//! - [`tls`]: the one outbound TLS client setup (roots, `ca_file`, clear handshake errors).
//! - [`api`]: the daemon's HTTP API and Prometheus `/metrics`, plus the CLI's client.
//! - [`cli`]: command-line parsing and commands (`serve`, `deploy`, `status`, ...).
//! - [`demo`]: the demo HTTP app and the scripted demo.
//!
//! See ARCHITECTURE.md for the bird's-eye view, the layer order (enforced by
//! `tests/layering.rs`) and the invariants.

pub mod analysis;
pub mod api;
pub mod checks;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod database;
pub mod demo;
pub mod domain;
pub mod kube;
pub mod notify;
pub mod orchestrator;
pub mod proxy;
pub mod router;
pub mod runtime;
pub mod store;
pub mod tls;
