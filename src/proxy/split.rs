//! A weighted split of one service's normal traffic between two slots (a canary step),
//! and the sticky cookie that keeps a client on the slot it landed on.
//!
//! # Why deterministic, not random
//! A canary step at 10 % should send 10 % of requests to the new slot, not "about 10 %
//! give or take a few hundred": the watch compares the slots' error rates and a random
//! split adds noise to both. Each split numbers the requests it decides with one
//! atomic counter; request `n` goes to the canary iff `⌊(k+1)·p/100⌋ > ⌊k·p/100⌋` with
//! `k = n mod 100` (Bresenham's line, i.e. error diffusion). Any 100 consecutive
//! requests hold exactly `p` canary requests, spread evenly, and the first `N` hold
//! exactly `⌊N·p/100⌋`. The counter is the only per-request state: one `fetch_add`.
//!
//! A new weight is a new [`Split`] (with a fresh counter) swapped in with the routing
//! snapshot, so it applies from the next request; requests already forwarded finish
//! where they are.
//!
//! # Stickiness
//! With `sticky` on, every response from a split sets `cutover-slot-<service>=<slot>`
//! (see [`sticky_cookie_name`]) naming the slot that answered, stable or canary, and a
//! request carrying that cookie goes to the slot it names while that slot still takes
//! part in the split (the canary at more than 0 %, the stable slot below 100 %), so a
//! user does not flip between releases while weights change. Requests decided by the
//! cookie do not advance the counter: the weights apply to the clients not yet pinned.
//! A cookie naming another slot, or an unknown value, is ignored. The cookie is never
//! passed on to upstreams (`cookies::strip`).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

use super::upstream::Upstream;
use crate::domain::Slot;

/// Prefix of the sticky cookie's name; the service name follows.
pub const STICKY_COOKIE_PREFIX: &str = "cutover-slot-";

/// `cutover-slot-<service>`.
pub fn sticky_cookie_name(service: &str) -> String {
    format!("{STICKY_COOKIE_PREFIX}{service}")
}

/// One service's normal traffic split between `stable` and `canary`.
#[derive(Debug)]
pub struct Split {
    pub stable: Upstream,
    pub canary: Upstream,
    /// Share of requests (not pinned by a cookie) sent to `canary`, 0..=100.
    pub percent: u8,
    /// Requests decided by weight so far.
    next: AtomicU64,
    /// `Set-Cookie` values indexed by [`Slot::index`]; `None` = not sticky.
    set_cookie: Option<[HeaderValue; 2]>,
}

impl Split {
    /// A split with a fresh counter. `percent` above 100 counts as 100. Stickiness is
    /// turned off if `service` cannot be part of a cookie name (config validation makes
    /// sure it can).
    pub fn new(
        service: &str,
        stable: Upstream,
        canary: Upstream,
        percent: u8,
        sticky: bool,
    ) -> Self {
        let set_cookie = sticky.then(|| Slot::ALL.map(|slot| set_cookie_value(service, slot)));
        let set_cookie = match set_cookie {
            Some([Some(blue), Some(green)]) => Some([blue, green]),
            _ => None,
        };
        Self {
            stable,
            canary,
            percent: percent.min(100),
            next: AtomicU64::new(0),
            set_cookie,
        }
    }

    pub fn is_sticky(&self) -> bool {
        self.set_cookie.is_some()
    }

    /// The upstream for one request whose sticky cookie named `cookie`, and the
    /// `Set-Cookie` value to add to its response (`None` when not sticky or when the
    /// client's cookie already names that slot).
    pub fn pick(&self, cookie: Option<Slot>) -> (&Upstream, Option<&HeaderValue>) {
        let Some(set_cookie) = &self.set_cookie else {
            return (self.by_weight(), None);
        };
        let upstream = match cookie.and_then(|slot| self.member(slot)) {
            Some(pinned) => pinned,
            None => self.by_weight(),
        };
        let set = (cookie != Some(upstream.slot)).then(|| &set_cookie[upstream.slot.index()]);
        (upstream, set)
    }

    /// The next upstream in the weighted sequence.
    fn by_weight(&self) -> &Upstream {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if canary_turn(n, self.percent) {
            &self.canary
        } else {
            &self.stable
        }
    }

    /// The upstream of `slot` if it currently takes part in the split.
    fn member(&self, slot: Slot) -> Option<&Upstream> {
        if slot == self.canary.slot && self.percent > 0 {
            Some(&self.canary)
        } else if slot == self.stable.slot && self.percent < 100 {
            Some(&self.stable)
        } else {
            None
        }
    }
}

/// Whether request number `n` of a split at `percent` goes to the canary.
fn canary_turn(n: u64, percent: u8) -> bool {
    let k = n % 100;
    let p = u64::from(percent.min(100));
    (k + 1) * p / 100 > k * p / 100
}

/// `cutover-slot-<service>=<slot>; Path=/; HttpOnly; SameSite=Lax` (a session cookie).
/// Built once per split; cloning it per response only bumps a reference count.
fn set_cookie_value(service: &str, slot: Slot) -> Option<HeaderValue> {
    let value = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax",
        sticky_cookie_name(service),
        slot.as_str()
    );
    let valid = service
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid
        .then(|| HeaderValue::from_maybe_shared(Bytes::from(value)).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proxy::stats::SlotStats;

    fn upstream(slot: Slot, port: u16) -> Upstream {
        Upstream {
            slot,
            endpoint: std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
            stats: Arc::new(SlotStats::default()),
            tls: None,
        }
    }

    fn split(percent: u8, sticky: bool) -> Split {
        Split::new(
            "web",
            upstream(Slot::Blue, 1),
            upstream(Slot::Green, 2),
            percent,
            sticky,
        )
    }

    #[test]
    fn the_first_n_requests_hold_exactly_the_floor_of_n_times_the_weight() {
        for percent in [0u8, 1, 7, 10, 33, 50, 99, 100] {
            let mut canary = 0u64;
            for n in 0..10_000u64 {
                canary += u64::from(canary_turn(n, percent));
                assert_eq!(
                    canary,
                    (n + 1) * u64::from(percent) / 100,
                    "{percent}% after {n}"
                );
            }
        }
    }

    #[test]
    fn canary_requests_are_spread_evenly_not_bunched() {
        let turns: Vec<u64> = (0..100).filter(|&n| canary_turn(n, 10)).collect();
        assert_eq!(turns, [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]);
    }

    #[test]
    fn a_cookie_pins_a_client_to_a_slot_of_the_split_and_is_set_only_when_it_changes() {
        let s = split(10, true);
        let (up, set) = s.pick(Some(Slot::Green));
        assert_eq!(up.slot, Slot::Green);
        assert!(set.is_none(), "the client already holds the right cookie");
        let (up, set) = s.pick(Some(Slot::Blue));
        assert_eq!(up.slot, Slot::Blue);
        assert!(set.is_none());
        let (up, set) = s.pick(None);
        assert_eq!(up.slot, Slot::Blue);
        assert_eq!(
            set.unwrap(),
            "cutover-slot-web=blue; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn a_cookie_naming_a_slot_that_takes_no_traffic_is_ignored() {
        let s = split(0, true);
        let (up, set) = s.pick(Some(Slot::Green));
        assert_eq!(up.slot, Slot::Blue);
        assert_eq!(
            set.unwrap().to_str().unwrap().split(';').next(),
            Some("cutover-slot-web=blue")
        );
        let s = split(100, true);
        assert_eq!(s.pick(Some(Slot::Blue)).0.slot, Slot::Green);
    }

    #[test]
    fn without_stickiness_cookies_are_ignored_and_none_is_set() {
        let s = split(0, false);
        let (up, set) = s.pick(Some(Slot::Green));
        assert_eq!(up.slot, Slot::Blue);
        assert!(set.is_none());
        assert!(!s.is_sticky());
    }

    #[test]
    fn pinned_requests_do_not_shift_the_weighted_sequence() {
        let s = split(50, true);
        let mut slots = Vec::new();
        for _ in 0..4 {
            s.pick(Some(Slot::Green));
            slots.push(s.pick(None).0.slot);
        }
        assert_eq!(slots, [Slot::Blue, Slot::Green, Slot::Blue, Slot::Green]);
    }
}
