//! The one place a Redis key is spelled.
//!
//! Every key that belongs to an event carries the hash tag `{ev:<event_id>}`, so all
//! keys one script or transaction touches hash to one Redis Cluster slot. A prefix
//! in front of the tag separates deployments sharing a Redis and gives each test
//! its own key space.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{ev:<id>}:seats` | hash | seat id → encoded [`SeatState`](crate::wire::seats::SeatState) |
//! | `<p>:{ev:<id>}:seats:staging:<generation>` | hash | the seat map being rebuilt, renamed over `seats` on commit |
//! | `<p>:{ev:<id>}:counts` | hash | `available`, `held`, `sold`, and the `generation` of the loaded map |

use crate::EventId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (no trailing colon; `"onsale"` in production).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash tag that pins an event's keys to one cluster slot.
    pub fn event_tag(event: EventId) -> String {
        format!("{{ev:{event}}}")
    }

    fn event_key(&self, event: EventId, name: &str) -> String {
        format!("{}:{{ev:{event}}}:{name}", self.prefix)
    }

    /// Seat id → encoded seat state, for every seat of the event.
    pub fn seat_states(&self, event: EventId) -> String {
        self.event_key(event, "seats")
    }

    /// Where one rebuild (named by its generation) writes the seat map before
    /// swapping it in atomically; concurrent rebuilds never share a staging key.
    pub fn seat_states_staging(&self, event: EventId, generation: &str) -> String {
        self.event_key(event, &format!("seats:staging:{generation}"))
    }

    /// Counters of available, held and sold seats, and the loaded generation.
    pub fn seat_counts(&self, event: EventId) -> String {
        self.event_key(event, "counts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster hashes only the part between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').map(|i| i + 1).unwrap_or(0);
        let close = key[open..].find('}').map(|i| open + i).unwrap_or(key.len());
        &key[open..close]
    }

    #[test]
    fn every_event_key_shares_the_event_hash_tag() {
        let keys = Keys::new("test:abc");
        let event = EventId::new();
        let tag = format!("ev:{event}");
        for key in [
            keys.seat_states(event),
            keys.seat_states_staging(event, "g1"),
            keys.seat_counts(event),
        ] {
            assert_eq!(hash_tag(&key), tag, "{key}");
            assert!(key.starts_with("test:abc:"), "{key}");
        }
    }

    #[test]
    fn different_events_never_share_a_key() {
        let keys = Keys::new("onsale");
        let (a, b) = (EventId::new(), EventId::new());
        assert_ne!(keys.seat_states(a), keys.seat_states(b));
        assert_ne!(keys.seat_states(a), keys.seat_counts(a));
    }
}
