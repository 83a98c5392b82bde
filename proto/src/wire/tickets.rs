//! Tickets and the door: the ticket a paid seat becomes, the signed code its QR
//! carries, the keys that verify codes offline, scans and their results, the
//! revocation list, and the door's figures for operators.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{EventId, TicketId, UserId};

/// A ticket's state as its holder and the door see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Admits its holder.
    Valid,
    /// Admits nobody (its order was refunded, the show cancelled).
    Void,
    /// Its holder has come in through the door.
    CheckedIn,
}

impl TicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Valid => "valid",
            TicketState::Void => "void",
            TicketState::CheckedIn => "checked_in",
        }
    }
}

/// One seat of a paid order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Ticket {
    pub ticket_id: TicketId,
    #[schema(example = "Floor-A-1")]
    pub seat_id: String,
    /// Grows with every reissue; a code of an older version admits nobody.
    pub version: i32,
    pub state: TicketState,
    /// What the QR holds: a compact JWS (`alg: EdDSA`, `kid` in its header) over
    /// [`TicketClaims`], verifiable offline with the event's key
    /// (`GET /v1/events/{event_id}/checkin/keys`).
    pub code: String,
}

/// The payload of a ticket's code. Short names: the code is drawn as a QR.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct TicketClaims {
    /// The ticket.
    pub tid: TicketId,
    /// Its version.
    pub v: i32,
    /// The event it admits to.
    pub ev: EventId,
    /// The seat.
    pub seat: String,
    /// Not valid before (unix seconds).
    pub nbf: i64,
    /// Not valid after (unix seconds).
    pub exp: i64,
}

/// The public keys that verify an event's ticket codes.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CheckinKeys {
    pub keys: Vec<CheckinKey>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CheckinKey {
    /// The `kid` of the codes this key verifies.
    pub kid: String,
    /// Always `EdDSA` (Ed25519).
    pub alg: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding.
    pub public_key: String,
}

/// A user made door staff of an event.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct StaffGrant {
    pub event_id: EventId,
    pub user_id: UserId,
    pub granted_at: DateTime<Utc>,
}

/// Which way a scanned fan goes through the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Entry,
    Exit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Entry => "entry",
            Direction::Exit => "exit",
        }
    }
}

/// Scans from one device, in the order it made them.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBatch {
    /// 1 to 100 scans.
    #[schema(min_items = 1, max_items = 100)]
    pub scans: Vec<Scan>,
}

/// One scan of one code at the door.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scan {
    /// Made by the device (a UUID): the same scan sent again is one scan.
    pub scan_id: uuid::Uuid,
    /// The string the QR held.
    pub code: String,
    pub direction: Direction,
    /// When the device scanned it (for an offline scan, long before the upload).
    pub scanned_at: DateTime<Utc>,
    /// The door or scanner, as staff named it (`Gate B`): 1 to 64 characters, no
    /// control characters.
    #[schema(example = "Gate B", min_length = 1, max_length = 64)]
    pub device_id: String,
    /// Scanned without the network: the device decided by itself, and the server
    /// only records it (and reports it as a conflict if it admitted a ticket that
    /// was already in, or void).
    #[serde(default)]
    pub offline: bool,
}

/// What the door makes of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanOutcome {
    /// In: the first entry (or a re-entry after an exit).
    Admitted,
    /// Refused: the ticket is already in (`first_admitted_at`, `first_device_id`).
    AlreadyIn,
    /// Out: an exit of a ticket that was in.
    Exited,
    /// An exit of a ticket that is not in.
    NotIn,
    /// Refused: the code is of a voided ticket or an older version.
    Void,
    /// Refused: not a code onsale signed (forged, damaged, expired).
    Invalid,
    /// Refused: a ticket for another event.
    WrongEvent,
}

impl ScanOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanOutcome::Admitted => "admitted",
            ScanOutcome::AlreadyIn => "already_in",
            ScanOutcome::Exited => "exited",
            ScanOutcome::NotIn => "not_in",
            ScanOutcome::Void => "void",
            ScanOutcome::Invalid => "invalid",
            ScanOutcome::WrongEvent => "wrong_event",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// The answer to one scan; the same `scan_id` again gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ScanResult {
    pub scan_id: uuid::Uuid,
    pub result: ScanOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<TicketId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_id: Option<String>,
    /// When the ticket came in (for `already_in`: the entry that refuses this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_admitted_at: Option<DateTime<Utc>>,
    /// Through which door it came in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_device_id: Option<String>,
    /// Why a scan was refused, in words (`reissued`, `signature does not verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An offline scan that admitted a ticket the server finds already in or void:
    /// a double entry, detected after the fact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflict: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ScanResults {
    pub results: Vec<ScanResult>,
}

/// Codes that no longer admit, for offline scanners.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Revocations {
    /// The list's version: ask with `since=<version>` next time for what is newer.
    pub version: i64,
    pub revoked: Vec<Revoked>,
}

/// The code of `ticket_id` at `version` no longer admits (reissued or voided).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Revoked {
    pub ticket_id: TicketId,
    pub version: i32,
}

/// The door's figures for an operator.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct DoorStats {
    /// Tickets inside now (admitted, not exited).
    pub checked_in: i64,
    /// Valid tickets.
    pub sold: i64,
    pub sections: Vec<SectionDoor>,
    /// Tickets admitted twice while a scanner was offline, or admitted offline
    /// though void: detected when the scans were uploaded, newest first.
    pub conflicts: Vec<Conflict>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct SectionDoor {
    pub section: String,
    pub sold: i64,
    pub checked_in: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Conflict {
    pub ticket_id: TicketId,
    pub seat_id: String,
    /// `double_entry` or `void`.
    pub kind: String,
    /// The offline scan that admitted the ticket a second time.
    pub scan_id: uuid::Uuid,
    pub device_id: String,
    pub scanned_at: DateTime<Utc>,
    /// The entry it collided with (absent for `void`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_admitted_at: Option<DateTime<Utc>>,
}
