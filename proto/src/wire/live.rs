//! The live feed: what `GET /v1/events/{event_id}/live` sends to a browser, and what
//! the services publish on an event's Redis channel (`Keys::live`) for the realtime
//! nodes. docs/REALTIME.md tells the whole protocol.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wire::queue::{RequestStatus, SaleState};
use crate::{ErrorCode, RequestId};

/// A message to a browser; JSON text with a `type`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveMessage {
    /// The sale's state: on connect and on every change.
    Sale(SaleView),
    /// The fan's own request changed: the same fields as `GET /v1/requests/{id}`.
    Request(RequestStatus),
    /// Where the fan's queued request stands: on connect and whenever the line moves.
    Position(PositionView),
    /// Seat-map changes since the last `seats` message.
    Seats(SeatsDelta),
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SaleView {
    pub state: SaleState,
    pub onsale_at: DateTime<Utc>,
    pub admission_per_second: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct PositionView {
    pub request_id: RequestId,
    pub queue_number: u64,
    /// Requests still ahead: `queue_number − served`. Never goes up within a connection.
    pub position: u64,
    /// `ceil(position / admission_per_second)`; `null` while the sale is not open.
    pub eta_seconds: Option<u64>,
    /// Seats nobody holds or bought.
    pub seats_left: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SeatsDelta {
    /// Grows with every seat change (the seat map's version in Redis). Apply a delta
    /// only when it is newer than the map you hold.
    pub version: u64,
    /// Fetch the whole map again (`GET /v1/events/{id}/seats`): changes were missed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    pub changes: Vec<SeatChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SeatChange {
    pub seat_id: String,
    /// `available`, `held` or `sold`.
    pub state: String,
}

/// The REST fallback: `GET /v1/events/{event_id}/live/snapshot`, the facts a socket
/// starts with.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct LiveSnapshot {
    pub sale: SaleView,
    pub request: Option<RequestStatus>,
    pub position: Option<PositionView>,
    pub seats_version: u64,
}

/// What the services publish on an event's live channel (internal; JSON with a
/// `type`). Anything else on the channel is ignored by the readers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Published {
    /// A booking worker decided a batch: the line moved to `served`.
    Batch {
        served: u64,
        #[serde(default)]
        decided: Vec<Decided>,
    },
    /// The sweep ended these holds.
    Expired { request_ids: Vec<RequestId> },
    /// The sale's state changed (the readers re-read the sale).
    Sale {
        #[serde(default)]
        state: Option<SaleState>,
    },
    /// Published by the Lua scripts (`lua/lib/changes.lua`): seats changed at
    /// `version`, or the whole map was replaced (`reset`), and/or these requests
    /// changed state.
    Changes {
        #[serde(default)]
        version: Option<u64>,
        #[serde(default)]
        reset: bool,
        #[serde(default)]
        seats: Vec<SeatChange>,
        #[serde(default)]
        request_ids: Vec<RequestId>,
    },
}

impl Published {
    /// The message as published: JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a published message always serializes")
    }

    /// The command that sends the message to `event`'s live channel: `SPUBLISH`,
    /// sharded pub/sub, so on a cluster it stays on the node that owns the event's
    /// keys (the realtime nodes `SSUBSCRIBE` there).
    #[cfg(feature = "redis")]
    pub fn publish(&self, keys: &crate::Keys, event: crate::EventId) -> redis::Cmd {
        let mut cmd = redis::cmd("SPUBLISH");
        cmd.arg(keys.live(event)).arg(self.to_json());
        cmd
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Decided {
    pub request_id: RequestId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_message_parses() {
        let id = RequestId::new();
        let text = format!(
            r#"{{"type":"changes","version":1764500000000001,"seats":[{{"seat_id":"A-1-2","state":"held"}}],"request_ids":["{id}"]}}"#
        );
        let Published::Changes {
            version,
            reset,
            seats,
            request_ids,
        } = serde_json::from_str(&text).unwrap()
        else {
            panic!("not a changes message");
        };
        assert_eq!(version, Some(1_764_500_000_000_001));
        assert!(!reset);
        assert_eq!(seats[0].seat_id, "A-1-2");
        assert_eq!(request_ids, vec![id]);
    }

    #[test]
    fn a_worker_batch_parses_with_the_fields_realtime_ignores() {
        let id = RequestId::new();
        let text = format!(
            r#"{{"type":"batch","served":42,"decided":[{{"request_id":"{id}","state":"held","seats":["A-1-1"],"hold_expires_at":1,"reason":null}}],"held_seats":["A-1-1"]}}"#
        );
        let Published::Batch { served, decided } = serde_json::from_str(&text).unwrap() else {
            panic!("not a batch");
        };
        assert_eq!(served, 42);
        assert_eq!(decided[0].request_id, id);
    }

    #[test]
    fn a_browser_message_carries_its_type() {
        let message = LiveMessage::Seats(SeatsDelta {
            version: 7,
            reset: false,
            changes: vec![],
        });
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "seats", "version": 7, "changes": []})
        );
    }
}

/// A single-use ticket for `GET /v1/events/{event_id}/live?ticket=`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LiveTicket {
    pub ticket: String,
    /// Seconds it stays valid (30).
    pub expires_in: u64,
}
