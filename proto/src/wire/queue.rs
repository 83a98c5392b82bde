//! The waiting room: booking requests, their states, sales and the lottery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{EventId, RequestId, SeatId};

/// A booking request: specific seats, or the best `quantity` adjacent seats
/// (optionally within one section or one price tier).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Specific seats, as picked on the seat map.
    #[schema(value_type = Option<Vec<String>>, example = json!(["Floor-A-1", "Floor-A-2"]))]
    pub seats: Option<Vec<String>>,
    /// How many adjacent seats, for "best available".
    pub quantity: Option<u32>,
    pub section: Option<String>,
    pub price_tier: Option<String>,
}

/// The answer to a join: where the request stands in the line.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Joined {
    pub request_id: RequestId,
    /// `null` while the request waits in the pre-queue, until the draw numbers it.
    pub queue_number: Option<u64>,
    /// Requests ahead of this one; `null` in the pre-queue.
    pub position: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum RequestState {
    Prequeue,
    Queued,
    Held,
    Paying,
    Confirmed,
    Expired,
    Released,
    Cancelled,
    Rejected,
}

impl RequestState {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Prequeue => "prequeue",
            RequestState::Queued => "queued",
            RequestState::Held => "held",
            RequestState::Paying => "paying",
            RequestState::Confirmed => "confirmed",
            RequestState::Expired => "expired",
            RequestState::Released => "released",
            RequestState::Cancelled => "cancelled",
            RequestState::Rejected => "rejected",
        }
    }

    /// Whether the request holds seats (held, or held while its payment runs).
    pub fn is_live(self) -> bool {
        matches!(self, RequestState::Held | RequestState::Paying)
    }

    /// Whether nothing will happen to the request any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestState::Confirmed
                | RequestState::Expired
                | RequestState::Released
                | RequestState::Cancelled
                | RequestState::Rejected
        )
    }
}

/// A request as its fan sees it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestStatus {
    pub request_id: RequestId,
    pub event_id: EventId,
    pub state: RequestState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_number: Option<u64>,
    /// Requests still ahead in the line (queued requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<SeatId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// Why a request was rejected: `sold_out`, `seat_unavailable`,
    /// `no_adjacent_seats`, `over_limit`, `conflict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RequestStatus {
    /// The fields of a request's Redis hash (`Keys::request`) that
    /// [`RequestStatus::from_hash`] reads, in its order.
    pub const HASH_FIELDS: [&'static str; 5] = ["state", "number", "seats", "expires", "reason"];

    /// A request as its fan sees it, from its Redis hash (`fields`: the values of
    /// [`Self::HASH_FIELDS`], as `HMGET` returns them) and the sale's `served`.
    /// `None` when the hash has no state (no such request).
    pub fn from_hash(
        request_id: RequestId,
        event_id: EventId,
        fields: &[Option<String>],
        served: Option<u64>,
    ) -> Option<Self> {
        let field = |i: usize| fields.get(i).cloned().flatten().filter(|v| !v.is_empty());
        let state = field(0).and_then(|s| RequestState::parse(&s))?;
        let queue_number = field(1).and_then(|n| n.parse::<u64>().ok());
        let position = match state {
            RequestState::Queued => queue_number.map(|n| n.saturating_sub(served.unwrap_or(0))),
            _ => None,
        };
        let holds_seats = matches!(
            state,
            RequestState::Held | RequestState::Paying | RequestState::Confirmed
        );
        let seats = field(2)
            .filter(|_| holds_seats || state == RequestState::Queued)
            .map(|s| s.split(' ').filter_map(SeatId::parse).collect());
        let hold_expires_at = field(3)
            .filter(|_| matches!(state, RequestState::Held | RequestState::Paying))
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        Some(Self {
            request_id,
            event_id,
            state,
            queue_number,
            position,
            seats,
            hold_expires_at,
            reason: field(4),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum SaleState {
    /// Before the on-sale: requests wait in the pre-queue.
    Scheduled,
    /// The pre-queue is being shuffled and numbered.
    Drawing,
    Open,
    /// The line keeps its order but nobody is admitted.
    Paused,
    Closed,
    SoldOut,
}

impl SaleState {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SaleState::Scheduled => "scheduled",
            SaleState::Drawing => "drawing",
            SaleState::Open => "open",
            SaleState::Paused => "paused",
            SaleState::Closed => "closed",
            SaleState::SoldOut => "sold_out",
        }
    }
}

/// The lottery of an event: the commitment before the draw, the seed and the drawn
/// order after it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Lottery {
    pub event_id: EventId,
    pub state: SaleState,
    /// Hex SHA-256 of the seed, published before the on-sale.
    pub commitment: String,
    /// Hex seed; revealed once the draw is done.
    pub seed: Option<String>,
    /// How the order is computed from the seed.
    pub algorithm: String,
    /// The pre-queue cohort in drawn order, one page of it: the requests numbered
    /// `after + 1`, `after + 2`, ... (at most `limit`). Absent before the draw.
    pub order: Option<Vec<RequestId>>,
    /// The `after` of the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u32>,
}

/// The query of `GET /v1/events/{event_id}/lottery`.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LotteryPage {
    /// The queue number the page starts after (0: from the first).
    #[serde(default)]
    #[param(maximum = 2147483647)]
    pub after: u32,
    /// Entries in the page: 1 to 5000 (default 1000).
    #[serde(default = "default_lottery_limit")]
    pub limit: u32,
}

fn default_lottery_limit() -> u32 {
    LOTTERY_PAGE_DEFAULT
}

/// A lottery page's default and largest sizes.
pub const LOTTERY_PAGE_DEFAULT: u32 = 1000;
pub const LOTTERY_PAGE_MAX: u32 = 5000;

/// The admission rates an operator may set (requests per second).
pub const ADMISSION_PER_SECOND: std::ops::RangeInclusive<u32> = 1..=100_000;
/// Most seats one booking request may ask for (named or best available).
pub const MAX_SEATS_PER_REQUEST: u32 = 50;

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAdmission {
    /// Requests admitted to the booking workers per second.
    pub per_second: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Sale {
    pub event_id: EventId,
    pub state: SaleState,
    pub admission_per_second: u32,
}

/// Asks to restore an event's Redis state from Postgres.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreEvent {
    /// Pause an open sale first (a restore runs only on a sale that admits nobody).
    #[serde(default)]
    pub pause: bool,
}

/// What a restore put back into Redis.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EventRestored {
    pub event_id: EventId,
    /// The sale's state after the restore (`paused` if it was open).
    pub state: SaleState,
    /// Seats of the map, by state, as the ledger has them.
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    /// Decided requests written back, of which live holds (which will expire).
    pub decided_requests: usize,
    pub holds: usize,
    /// Undecided requests put back in the line and in the pre-queue from the journal.
    pub queued: usize,
    pub prequeued: usize,
}

/// An event's sale as its operators watch it: `GET /v1/ops/events/{id}/stats`.
/// Read from counters the farm keeps, never by walking the line.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct SaleStats {
    pub event_id: EventId,
    pub state: SaleState,
    /// Requests waiting: in the pre-queue before the draw, in the line after it.
    pub queue_length: u64,
    /// The last queue number the workers decided.
    pub served: u64,
    /// Requests joining per second, over the last sampled seconds.
    pub arrivals_per_second: f64,
    /// Requests decided per second, over the last sampled seconds.
    pub admitted_per_second: f64,
    /// The admission rate the operators set.
    pub admission_per_second: u32,
    /// How long the last fan in line waits at the admission rate; `null` unless open.
    pub eta_seconds: Option<u64>,
    pub holds_active: u64,
    pub sold: u64,
    pub available: u64,
    pub held: u64,
    /// When the rates were last sampled (the waiting room samples every second).
    pub sampled_at: Option<DateTime<Utc>>,
    /// Booking workers reading the event's line.
    pub workers: Vec<WorkerView>,
    /// Entries of the line not yet delivered to any worker; `null` when unknown.
    pub line_lag: Option<u64>,
    /// Entries delivered to a worker and not yet acknowledged.
    pub line_pending: u64,
    /// Entries that kept failing and were set aside.
    pub dead_letters: u64,
    pub orders: OrderCounts,
    /// The sum of paid orders.
    pub revenue_cents: i64,
    /// `null` before the event's first order.
    pub currency: Option<String>,
    /// Domain events waiting to be relayed to Kafka (every event's).
    pub outbox_unpublished: i64,
    /// The age of the oldest of them; `null` when none waits.
    pub outbox_lag_seconds: Option<f64>,
    /// Tickets inside now: admitted at the door and not gone out.
    #[serde(default)]
    pub checked_in: i64,
}

/// A booking worker as the line's consumer group knows it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WorkerView {
    pub name: String,
    /// Entries delivered to it and not yet acknowledged.
    pub pending: u64,
    /// Milliseconds since it last read.
    pub idle_ms: u64,
}

/// An event's orders by state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct OrderCounts {
    pub pending: i64,
    pub paid: i64,
    pub declined: i64,
    pub refunded: i64,
    pub cancelled: i64,
}

/// One lever pulled: who, what, when, from what to what.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The operator or admin; `null` for the system (a sale found sold out, a draw at
    /// its time).
    pub actor: Option<crate::UserId>,
    pub actor_email: Option<String>,
    /// `open`, `pause`, `resume`, `close`, `admission`, `draw`, `sold_out`, `reopened`
    /// (refunded seats opened a sold-out sale), `restore`, `cancel`, `refund`,
    /// `rebuild` (the seat map rebuilt from the ledger), `release` (an operator ended
    /// a fan's request).
    pub action: String,
    #[schema(value_type = Object)]
    pub from: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub to: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// One second of an event's line, for the operators' charts.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct StatsSample {
    pub at: DateTime<Utc>,
    /// Queue numbers given out so far (arrivals since the draw, the cohort included).
    pub next: u64,
    /// The last queue number decided.
    pub served: u64,
    pub held: u64,
    pub sold: u64,
}
