//! (in progress)
pub mod app;
