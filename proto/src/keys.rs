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
//! | `<p>:{ev:<id>}:counts` | hash | `available`, `held`, `sold`, the `generation` of the loaded map, and the seat map's `version` (grows with every seat change) |
//! | `<p>:{ev:<id>}:layout` | hash | section → `row:seats,...` in preference order; `_sections`; `tier:<t>` → sections |
//! | `<p>:{ev:<id>}:rowfree` | hash | `<section>-<row>` → free seats in that row; `sec:<section>` → free seats in the section |
//! | `<p>:{ev:<id>}:sale` | hash | `state`, `max_per_fan`, `hold_ms`, `admission_per_second`, `served`, `prequeue_size` |
//! | `<p>:{ev:<id>}:fans` | hash | fan id → the fan's live request id |
//! | `<p>:{ev:<id>}:fanseats` | hash | fan id → seats the fan holds or bought |
//! | `<p>:{ev:<id>}:req:<request>` | hash | one request: `fan`, ask, `number`, `state`, `seats`, `expires`, `reason` |
//! | `<p>:{ev:<id>}:idem:<fan>:<key>` | string | `fingerprint|request id` of an `Idempotency-Key` (24 h) |
//! | `<p>:{ev:<id>}:prequeue` | set | request ids waiting for the draw |
//! | `<p>:{ev:<id>}:latecomers` | list | request ids that arrived while the draw ran, in arrival order |
//! | `<p>:{ev:<id>}:next` | string | the last queue number given out |
//! | `<p>:{ev:<id>}:requests` | stream | the line, in queue-number order; group `workers` |
//! | `<p>:{ev:<id>}:dead` | stream | entries that kept failing, with the reason |
//! | `<p>:{ev:<id>}:changes` | stream | holds released by fans, for the workers to carry into the ledger |
//! | `<p>:{ev:<id>}:holds` | zset | request id scored by its hold's expiry (ms) |
//! | `<p>:{ev:<id>}:secholds` | zset | `<section>|<request>` for each section a hold has seats in, scored by its expiry (ms) |
//! | `<p>:{ev:<id>}:lease` | string | the worker draining the event, with a TTL |
//! | `<p>:{ev:<id>}:samples` | list | `<unix ms> <next> <served> <held> <sold>`, newest first, one a second, the last 10 minutes |
//! | `<p>:{ev:<id>}:live` | pub/sub | JSON updates for the realtime service; the scripts spell it from any event key (`lua/lib/changes.lua`) |
//! | `<p>:{ev:<id>}:door` | hash | ticket id → `<in\|out>\|<entry no>\|<scan id>\|<unix ms>\|<device>`: the door's last word on each ticket (`redeem.lua`); lives a week past the last scan |
//! | `<p>:{ev:<id>}:door:scans` | hash | scan id → the answer `redeem.lua` gave it (a retry gets it again); lives a week past the last scan |
//! | `<p>:request:<request>` | string | the request's event id, for lookups by request id |
//! | `<p>:active` | set | events whose sale is drawing, open or paused |

use crate::{EventId, RequestId, UserId};

/// The consumer group of the booking workers on every event stream.
pub const WORKER_GROUP: &str = "workers";

/// Cheap to clone (handlers' state carries one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: std::sync::Arc<str>,
}

impl Keys {
    /// Keys under `prefix` (no trailing colon; `"onsale"` in production).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into().into(),
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
        // Spelled by hand rather than with `format!`: a join spells a dozen keys.
        let mut buffer = uuid::Uuid::encode_buffer();
        let id = event.as_uuid().hyphenated().encode_lower(&mut buffer);
        let mut key = String::with_capacity(self.prefix.len() + id.len() + name.len() + 7);
        for part in [&*self.prefix, ":{ev:", id, "}:", name] {
            key.push_str(part);
        }
        key
    }

    /// Ticket id → the door's last scan of it (`redeem.lua`).
    pub fn door(&self, event: EventId) -> String {
        self.event_key(event, "door")
    }

    /// Scan id → the answer `redeem.lua` gave it.
    pub fn door_scans(&self, event: EventId) -> String {
        self.event_key(event, "door:scans")
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

    /// The row-free counts staged by one rebuild.
    pub fn row_free_staging(&self, event: EventId, generation: &str) -> String {
        self.event_key(event, &format!("rowfree:staging:{generation}"))
    }

    /// The layout staged by one rebuild.
    pub fn layout_staging(&self, event: EventId, generation: &str) -> String {
        self.event_key(event, &format!("layout:staging:{generation}"))
    }

    /// Counters of available, held and sold seats, and the loaded generation.
    pub fn seat_counts(&self, event: EventId) -> String {
        self.event_key(event, "counts")
    }

    pub fn layout(&self, event: EventId) -> String {
        self.event_key(event, "layout")
    }

    pub fn row_free(&self, event: EventId) -> String {
        self.event_key(event, "rowfree")
    }

    pub fn sale(&self, event: EventId) -> String {
        self.event_key(event, "sale")
    }

    pub fn fans(&self, event: EventId) -> String {
        self.event_key(event, "fans")
    }

    pub fn fan_seats(&self, event: EventId) -> String {
        self.event_key(event, "fanseats")
    }

    pub fn request(&self, event: EventId, request: RequestId) -> String {
        self.request_named(event, &request.to_string())
    }

    /// A request hash by the id's text; benchmarks name requests with the numbers
    /// redis-benchmark substitutes.
    pub fn request_named(&self, event: EventId, request: &str) -> String {
        self.event_key(event, &format!("req:{request}"))
    }

    /// An `Idempotency-Key` of one fan. The key is hashed by the caller so any
    /// client string is a safe key name.
    pub fn idempotency(&self, event: EventId, fan: UserId, key_digest: &str) -> String {
        self.event_key(event, &format!("idem:{fan}:{key_digest}"))
    }

    pub fn prequeue(&self, event: EventId) -> String {
        self.event_key(event, "prequeue")
    }

    pub fn latecomers(&self, event: EventId) -> String {
        self.event_key(event, "latecomers")
    }

    pub fn next_number(&self, event: EventId) -> String {
        self.event_key(event, "next")
    }

    pub fn stream(&self, event: EventId) -> String {
        self.event_key(event, "requests")
    }

    pub fn dead_letters(&self, event: EventId) -> String {
        self.event_key(event, "dead")
    }

    /// Changes made outside the workers (a fan releasing a hold) that the workers
    /// carry into the ledger.
    pub fn changes(&self, event: EventId) -> String {
        self.event_key(event, "changes")
    }

    pub fn holds(&self, event: EventId) -> String {
        self.event_key(event, "holds")
    }

    /// Holds by section (`<section>|<request>`, scored by expiry): whether seats of a
    /// section come back soon, without reading every hold.
    pub fn section_holds(&self, event: EventId) -> String {
        self.event_key(event, "secholds")
    }

    /// Samples of the line for the operators' rates and charts (newest first):
    /// `<unix ms> <next> <served> <held> <sold>`.
    pub fn samples(&self, event: EventId) -> String {
        self.event_key(event, "samples")
    }

    pub fn lease(&self, event: EventId) -> String {
        self.event_key(event, "lease")
    }

    /// The pub/sub channel the realtime service listens on.
    pub fn live(&self, event: EventId) -> String {
        self.event_key(event, "live")
    }

    /// Which event a request belongs to (outside the event's slot on purpose:
    /// it is read before the event is known).
    pub fn request_index(&self, request: RequestId) -> String {
        format!("{}:request:{request}", self.prefix)
    }

    /// Events the booking workers should look at.
    pub fn active_events(&self) -> String {
        format!("{}:active", self.prefix)
    }

    /// The tier's rate-limit buckets (one hash, one slot: a batch of checks is one
    /// script call).
    pub fn rate_buckets(&self) -> String {
        format!("{}:{{rl}}:buckets", self.prefix)
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
    fn event_keys_are_spelled_prefix_tag_name() {
        let keys = Keys::new("onsale");
        let event = EventId::new();
        assert_eq!(
            keys.stream(event),
            format!("onsale:{{ev:{event}}}:requests")
        );
        assert_eq!(
            keys.seat_states_staging(event, "g1"),
            format!("onsale:{{ev:{event}}}:seats:staging:g1")
        );
    }

    #[test]
    fn every_event_key_shares_the_event_hash_tag() {
        let keys = Keys::new("test:abc");
        let event = EventId::new();
        let tag = format!("ev:{event}");
        for key in [
            keys.seat_states(event),
            keys.seat_states_staging(event, "g1"),
            keys.row_free_staging(event, "g1"),
            keys.layout_staging(event, "g1"),
            keys.seat_counts(event),
        ] {
            assert_eq!(hash_tag(&key), tag, "{key}");
            assert!(key.starts_with("test:abc:"), "{key}");
        }
    }

    /// `lua/lib/changes.lua` spells the live channel from the key it is given: the
    /// key up to and including `{ev:<id>}:`, then `live`.
    #[test]
    fn the_scripts_spell_the_live_channel_from_any_event_key() {
        let keys = Keys::new("test:{odd}:prefix");
        let event = EventId::new();
        let request = RequestId::new();
        for key in [
            keys.seat_counts(event),
            keys.request(event, request),
            keys.seat_states(event),
        ] {
            let start = key.find("{ev:").expect("tagged");
            let end = start + key[start..].find("}:").expect("closed") + 2;
            assert_eq!(format!("{}live", &key[..end]), keys.live(event), "{key}");
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
