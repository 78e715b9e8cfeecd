//! The demo: a small HTTP app whose version, health, error rate and latency are set by
//! flags (`app`), and the scripted story `cutover demo` plays with it (`story`), so
//! the demo and the end-to-end tests need nothing external.

pub mod app;
mod app_db;
pub mod load;
pub mod story;
