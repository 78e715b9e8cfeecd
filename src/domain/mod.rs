//! Words every layer shares: the two slots, versions, timestamps, and the value types
//! that cross layers (`endpoint`: where a slot can be reached, an address or a
//! `host:port`; `routing`: a slot's target and what to mirror; `stats`: a slot's request
//! counters at one moment).
//!
//! The leaf of the layer order (see ARCHITECTURE.md, "Layer order"): it imports nothing
//! from the crate, so the proxy, the routers and the pure state machine can all speak
//! these words without importing each other. Kept small on purpose: plain values and
//! pure arithmetic on them; anything with I/O or shared state lives in the layer that
//! owns it. One exception: an [`endpoint::Endpoint`] resolves and dials itself, because
//! the proxy, the checks and the routers must all dial a slot by the same rule.

pub mod endpoint;
pub mod routing;
pub mod stats;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two places a service's release can run. Exactly one is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::Blue, Slot::Green];

    /// The slot that is not `self`.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// Index into per-slot arrays (`[T; 2]`).
    pub fn index(self) -> usize {
        match self {
            Slot::Blue => 0,
            Slot::Green => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blue" => Ok(Slot::Blue),
            "green" => Ok(Slot::Green),
            other => Err(format!("expected `blue` or `green`, got `{other}`")),
        }
    }
}

/// Milliseconds since the Unix epoch: the only clock format stored or sent over the API.
pub type UnixMillis = i64;

/// Wall-clock now, in [`UnixMillis`]. Only the runner and the store call this; the
/// state machine receives time as an argument.
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats a timestamp as RFC 3339 (UTC, seconds precision) for people.
pub fn format_ms(ms: UnixMillis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_slot_flips_and_parses_back() {
        assert_eq!(Slot::Blue.other(), Slot::Green);
        assert_eq!(Slot::Green.other(), Slot::Blue);
        assert_eq!("green".parse::<Slot>().unwrap(), Slot::Green);
        assert!("red".parse::<Slot>().is_err());
    }
}
