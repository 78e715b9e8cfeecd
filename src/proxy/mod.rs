//! DATA PLANE: the built-in reverse proxy.
pub mod stats;
pub mod table;
