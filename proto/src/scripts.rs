//! The Lua scripts, one `.lua` file each, loaded once into `redis::Script`s. Each
//! file's header states its `KEYS`, `ARGV`, return value and the atomicity it gives.
//!
//! Every script starts with `lua/lib/changes.lua`, the realtime feed's
//! `publish_changes`: a script that changes seats or requests publishes the change
//! itself, atomically with it (see docs/REALTIME.md).
//!
//! `Script::invoke_async` reloads a script after `NOSCRIPT` (the cache is empty after
//! every Redis restart); a pipeline that invokes one must `load_script` it first.

use std::sync::LazyLock;

use redis::Script;

use crate::wire::queue::{RequestState, SaleState};

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident => $file:literal),* $(,)?) => {
        $(
            $(#[$doc])*
            pub static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(concat!(
                    include_str!("../lua/lib/changes.lua"),
                    include_str!(concat!("../lua/", $file)),
                )));
        )*

        /// Every script with its file name, for tools that preload or benchmark them.
        pub fn all() -> Vec<(&'static str, &'static Script)> {
            vec![$(($file, &*$name)),*]
        }
    };
}

scripts! {
    /// Swaps a rebuilt seat map in atomically.
    COMMIT_SEAT_MAP => "commit_seat_map.lua",
    /// Puts a booking request in an event's line.
    JOIN => "join.lua",
    /// Closes the pre-queue at the on-sale instant.
    BEGIN_DRAW => "begin_draw.lua",
    /// Numbers a chunk of the drawn cohort.
    DRAW => "draw.lua",
    /// Numbers the latecomers and opens the sale.
    FINISH_DRAW => "finish_draw.lua",
    /// Decides a batch of requests in queue order, holding seats.
    HOLD_BATCH => "hold_batch.lua",
    /// Ends a hold and frees its seats.
    RELEASE => "release.lua",
    /// Ends an undecided request (cancelled by its fan, or rejected).
    CANCEL => "cancel.lua",
    /// Takes, stamps or renews the right to drain an event (compare and set).
    LEASE => "lease.lua",
    /// A drainer's read of its event's line or changes, fenced by its lease.
    READ_LINE => "read_line.lua",
    /// The lease holder takes over what other consumers left pending.
    RECLAIM => "reclaim.lua",
    /// Gives seats the ledger refused to their ledger owners and requeues the request.
    REQUEUE => "requeue.lua",
    /// Moves a sale between states.
    SET_SALE_STATE => "set_sale_state.lua",
    /// A held request starts paying; its hold is extended.
    PAY => "pay.lua",
    /// A declined payment: the request is held again until its normal end.
    UNPAY => "unpay.lua",
    /// A successful payment: the held seats become sold.
    CONFIRM => "confirm.lua",
    /// A scan at the door: admits a ticket once.
    REDEEM => "redeem.lua",
    /// A refund: sold seats go back on sale, each once.
    UNSELL => "unsell.lua",
    /// A batch of rate-limit checks, shared by every gateway.
    GCRA => "gcra.lua",
    /// Forgets rate-limit buckets that are full again.
    GCRA_FORGET => "gcra_forget.lua",
}

/// `unsell.lua` for a refund of `seats` sold to `request` (of `fan`); a sold-out
/// sale opens again only when `may_reopen` (its show has not begun).
pub fn unsell(
    keys: &crate::Keys,
    event: crate::EventId,
    request: crate::RequestId,
    fan: crate::UserId,
    may_reopen: bool,
    seats: &[String],
) -> redis::ScriptInvocation<'static> {
    let mut invocation = UNSELL.key(keys.seat_states(event));
    invocation
        .key(keys.seat_counts(event))
        .key(keys.fan_seats(event))
        .key(keys.row_free(event))
        .key(keys.request(event, request))
        .key(keys.lease(event))
        .key(keys.sale(event))
        .arg(request.to_string())
        .arg(fan.to_string())
        .arg(if may_reopen { "1" } else { "0" });
    for seat in seats {
        invocation.arg(seat.as_str());
    }
    invocation
}

/// `pay.lua` for one request: `fan` starts paying, the hold runs up to `grace_ms`
/// past its normal end.
pub fn pay(
    keys: &crate::Keys,
    event: crate::EventId,
    request: crate::RequestId,
    fan: crate::UserId,
    now_ms: i64,
    grace_ms: i64,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = PAY.key(keys.request(event, request));
    invocation
        .key(keys.holds(event))
        .key(keys.section_holds(event))
        .key(keys.seat_states(event))
        .key(keys.lease(event))
        .arg(request.to_string())
        .arg(fan.to_string())
        .arg(now_ms)
        .arg(grace_ms);
    invocation
}

/// `unpay.lua` for one request: back from paying to held.
pub fn unpay(
    keys: &crate::Keys,
    event: crate::EventId,
    request: crate::RequestId,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = UNPAY.key(keys.request(event, request));
    invocation
        .key(keys.holds(event))
        .key(keys.section_holds(event))
        .key(keys.seat_states(event))
        .key(keys.lease(event))
        .arg(request.to_string());
    invocation
}

/// `confirm.lua` for one request: its paying hold becomes sold.
pub fn confirm(
    keys: &crate::Keys,
    event: crate::EventId,
    request: crate::RequestId,
    now_ms: i64,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = CONFIRM.key(keys.seat_states(event));
    invocation
        .key(keys.seat_counts(event))
        .key(keys.holds(event))
        .key(keys.section_holds(event))
        .key(keys.fans(event))
        .key(keys.request(event, request))
        .key(keys.lease(event))
        .arg(request.to_string())
        .arg(now_ms);
    invocation
}

/// `redeem.lua` for one scan of `ticket` (see the script for `ledger`, the
/// ledger's last word on the ticket).
#[allow(clippy::too_many_arguments)]
pub fn redeem(
    keys: &crate::Keys,
    event: crate::EventId,
    ticket: crate::TicketId,
    direction: crate::wire::tickets::Direction,
    scan_id: uuid::Uuid,
    at_ms: i64,
    device: &str,
    ledger: &str,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = REDEEM.key(keys.door(event));
    invocation
        .key(keys.door_scans(event))
        .arg(ticket.to_string())
        .arg(direction.as_str())
        .arg(scan_id.to_string())
        .arg(at_ms)
        .arg(device)
        .arg(ledger)
        .arg(DOOR_RETENTION_SECONDS);
    invocation
}

/// How long an event's door hashes live after its last scan (`redeem.lua`).
pub const DOOR_RETENTION_SECONDS: u64 = 7 * 24 * 3600;

/// The event keys `hold_batch.lua` takes first (`KEYS[1..10]`), in the order it reads
/// them; the request hashes follow.
pub fn hold_batch_keys(keys: &crate::Keys, event: crate::EventId) -> [String; 10] {
    [
        keys.seat_states(event),
        keys.seat_counts(event),
        keys.sale(event),
        keys.holds(event),
        keys.fan_seats(event),
        keys.layout(event),
        keys.row_free(event),
        keys.fans(event),
        keys.lease(event),
        keys.section_holds(event),
    ]
}

/// `set_sale_state.lua`: the sale moves to `to` if it is in one of `from`. The reply,
/// `(1, previous)` or `(0, current)`, reads with [`sale_state_moved`].
pub fn set_sale_state(
    keys: &crate::Keys,
    event: crate::EventId,
    to: SaleState,
    from: &[SaleState],
) -> redis::ScriptInvocation<'static> {
    let mut invocation = SET_SALE_STATE.key(keys.sale(event));
    invocation.arg(to.as_str());
    for state in from {
        invocation.arg(state.as_str());
    }
    invocation
}

/// `set_sale_state.lua`'s reply: whether the state moved, and the state it moved
/// from (or the state it stays in); `None` when Redis has no sale.
pub fn sale_state_moved((changed, state): (i64, String)) -> (bool, Option<SaleState>) {
    (changed == 1, SaleState::parse(&state))
}

/// `cancel.lua` for one request: ends it in `state` (`Cancelled` or `Rejected`) with
/// `reason` (empty for none) if it is still undecided.
pub fn cancel(
    keys: &crate::Keys,
    event: crate::EventId,
    request: crate::RequestId,
    state: RequestState,
    reason: &str,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = CANCEL.key(keys.request(event, request));
    invocation
        .key(keys.fans(event))
        .arg(request.to_string())
        .arg(state.as_str())
        .arg(reason);
    invocation
}

/// `release.lua` for one request, its `KEYS` in the order the script reads them.
/// `state` is what the hold ends in (`Expired`, `Released`, `Rejected`); `lease` is
/// the sweeping drainer's lease value, or `""` for a fan's release.
pub fn release(
    keys: &crate::Keys,
    event: crate::EventId,
    request: crate::RequestId,
    state: RequestState,
    now_ms: i64,
    only_if_expired: bool,
    lease: &str,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = RELEASE.key(keys.seat_states(event));
    invocation
        .key(keys.seat_counts(event))
        .key(keys.holds(event))
        .key(keys.fan_seats(event))
        .key(keys.row_free(event))
        .key(keys.fans(event))
        .key(keys.request(event, request))
        .key(keys.changes(event))
        .key(keys.section_holds(event))
        .key(keys.lease(event))
        .arg(request.to_string())
        .arg(state.as_str())
        .arg(now_ms)
        .arg(if only_if_expired { "1" } else { "0" })
        .arg(lease);
    invocation
}
