//! Seat state: the public view, and the encoding shared by every writer of the
//! Redis seat map (Rust code and the Lua scripts alike).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{RequestId, SeatId};

/// A seat's state as fans see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeatStateName {
    Available,
    Held,
    Sold,
}

impl SeatStateName {
    pub fn as_str(self) -> &'static str {
        match self {
            SeatStateName::Available => "available",
            SeatStateName::Held => "held",
            SeatStateName::Sold => "sold",
        }
    }
}

/// One seat of an event's seat map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeatView {
    pub seat_id: SeatId,
    pub section: String,
    pub row: String,
    pub number: u32,
    pub price_tier: String,
    pub state: SeatStateName,
}

/// A seat's full state, as stored in the event's seat hash.
///
/// Encoding (the Lua scripts read and write the same strings):
/// `a` available; `h:<request_id>:<expires_at_ms>` held; `s:<request_id>` sold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held {
        request: RequestId,
        expires_at_ms: i64,
    },
    Sold {
        request: RequestId,
    },
}

impl SeatState {
    pub fn encode(&self) -> String {
        match self {
            SeatState::Available => "a".to_owned(),
            SeatState::Held {
                request,
                expires_at_ms,
            } => format!("h:{request}:{expires_at_ms}"),
            SeatState::Sold { request } => format!("s:{request}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let state = match (parts.next()?, parts.next(), parts.next()) {
            ("a", None, None) => SeatState::Available,
            ("h", Some(request), Some(expires)) => SeatState::Held {
                request: request.parse().ok()?,
                expires_at_ms: expires.parse().ok()?,
            },
            ("s", Some(request), None) => SeatState::Sold {
                request: request.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(state)
    }

    pub fn name(&self) -> SeatStateName {
        match self {
            SeatState::Available => SeatStateName::Available,
            SeatState::Held { .. } => SeatStateName::Held,
            SeatState::Sold { .. } => SeatStateName::Sold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips() {
        let request = RequestId::new();
        for state in [
            SeatState::Available,
            SeatState::Held {
                request,
                expires_at_ms: 1_800_000_000_123,
            },
            SeatState::Sold { request },
        ] {
            assert_eq!(SeatState::decode(&state.encode()), Some(state));
        }
    }

    #[test]
    fn garbage_does_not_decode() {
        for bad in [
            "",
            "x",
            "a:1",
            "h:nope:1",
            "h:00000000-0000-0000-0000-000000000000",
            "s",
            "s:x",
        ] {
            assert_eq!(SeatState::decode(bad), None, "{bad:?}");
        }
    }
}
