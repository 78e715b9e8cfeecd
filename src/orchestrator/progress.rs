//! What the API shows of a running deployment beyond what the store holds: its phase,
//! when the watch ends, the latest watch window and the canary's state.
//!
//! Its own file because the runner writes it (after every step) and the controller
//! reads it (for the API); in either one, the two would import each other.

use serde::Serialize;

use super::machine::CanaryView;
use super::policy::WindowView;

/// Live view of a running deployment, beyond what the store holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub deployment_id: i64,
    pub phase: String,
    /// Unix ms when the watch passes, while watching.
    pub watch_ends_at: Option<i64>,
    /// The latest evaluation of the watch window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowView>,
    /// Canary step, weight, hold and the latest analysis round (canary or analysis
    /// configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
}

impl Serialize for WindowView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("WindowView", 4)?;
        st.serialize_field("requests", &self.requests)?;
        st.serialize_field("errors", &self.errors)?;
        st.serialize_field("error_rate", &self.error_rate)?;
        st.serialize_field("p95_ms", &self.p95.map(|d| d.as_millis() as u64))?;
        st.end()
    }
}
