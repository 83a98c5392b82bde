//! The tickets' and the door's HTTP routes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use platform::auth::{Caller, Operator};
use platform::http::{Json, Path, Query};
use proto::wire::tickets::{
    CheckinKeys, DoorStats, Revocations, ScanBatch, ScanResults, StaffGrant, Ticket,
};
use proto::{ErrorBody, ErrorCode, EventId, Role, TicketId, UserId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::door::{MAX_DEVICE_ID, MAX_SCANS};
use crate::ledger::{self, ReissueError};
use crate::{Error, TicketsState, qr, staff, stats};

pub fn router() -> OpenApiRouter<TicketsState> {
    OpenApiRouter::new()
        .routes(routes!(get_qr))
        .routes(routes!(reissue))
        .routes(routes!(get_keys))
        .routes(routes!(grant_staff, revoke_staff))
        .routes(routes!(post_scans))
        .routes(routes!(get_revoked))
        .routes(routes!(get_door))
}

/// A ticket's QR code, as SVG (the ticket's fan, or an operator).
///
/// It holds the ticket's `code`: what the door scans.
#[utoipa::path(
    get, path = "/v1/tickets/{ticket_id}/qr.svg", tag = "tickets",
    params(("ticket_id" = TicketId, Path)),
    responses(
        (status = 200, content_type = "image/svg+xml", body = String),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`ticket_not_found`: no such ticket, or not the caller's"),
    ),
    security(("bearer" = []))
)]
async fn get_qr(
    State(state): State<TicketsState>,
    caller: Caller,
    Path(ticket_id): Path<TicketId>,
) -> Result<impl IntoResponse, ErrorBody> {
    let row = ledger::get(&state.door.pool, ticket_id)
        .await
        .map_err(Error::from)?
        .filter(|t| t.fan_id == caller.user_id || caller.role.includes(Role::Operator))
        .ok_or(Error::TicketNotFound(ticket_id))?;
    let signer = state
        .door
        .ring
        .signer(&state.door.pool, row.event_id)
        .await
        .map_err(Error::from)?;
    let ticket = row.to_wire(&signer);
    let svg = qr::svg(&ticket.code).map_err(|e| Error::Unexpected(format!("drawing a QR: {e}")))?;
    Ok((
        [
            (CONTENT_TYPE, "image/svg+xml"),
            // The code changes with the ticket's version: never cached by others.
            (CACHE_CONTROL, "private, no-cache"),
        ],
        svg,
    ))
}

/// Reissue a ticket (its fan): a new version and code; the old code admits nobody,
/// at online scanners at once and at offline ones once they fetch the revocation
/// list. For a screenshot that went round, or a lost phone.
#[utoipa::path(
    post, path = "/v1/tickets/{ticket_id}/reissue", tag = "tickets",
    params(
        ("ticket_id" = TicketId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key gets the first answer and reissues once"),
    ),
    responses(
        (status = 200, body = Ticket),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`ticket_not_found`: no such ticket, or not the caller's"),
        (status = 409, body = ErrorBody, description = "`ticket_checked_in`, `ticket_void`"),
    ),
    security(("bearer" = []))
)]
async fn reissue(
    State(state): State<TicketsState>,
    caller: Caller,
    Path(ticket_id): Path<TicketId>,
) -> Result<Json<Ticket>, ErrorBody> {
    let pool = &state.door.pool;
    let row = ledger::reissue(pool, ticket_id, caller.user_id)
        .await
        .map_err(|e| match e {
            ReissueError::NotFound(id) => Error::TicketNotFound(id),
            ReissueError::CheckedIn => Error::refused(
                ErrorCode::TicketCheckedIn,
                "this ticket has come in through the door; it cannot be reissued",
            ),
            ReissueError::Void => Error::refused(
                ErrorCode::TicketVoid,
                "this ticket admits nobody any more; it cannot be reissued",
            ),
            ReissueError::Database(e) => Error::Database(e),
        })?;
    let signer = state
        .door
        .ring
        .signer(pool, row.event_id)
        .await
        .map_err(Error::from)?;
    tracing::info!(%ticket_id, version = row.version, "ticket reissued");
    Ok(Json(row.to_wire(&signer)))
}

/// The public keys that verify an event's ticket codes, for scanners that check
/// codes offline (empty before the event's first sale).
#[utoipa::path(
    get, path = "/v1/events/{event_id}/checkin/keys", tag = "tickets",
    params(("event_id" = EventId, Path)),
    responses(
        (status = 200, body = CheckinKeys),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
    )
)]
async fn get_keys(
    State(state): State<TicketsState>,
    Path(event_id): Path<EventId>,
) -> Result<Json<CheckinKeys>, ErrorBody> {
    staff::event_exists(&state.door.pool, event_id).await?;
    let keys = crate::keys::public_keys(&state.door.pool, event_id)
        .await
        .map_err(Error::from)?;
    Ok(Json(CheckinKeys { keys }))
}

/// Make a user door staff of an event (an operator or admin): they may scan its
/// tickets and read its revocation list.
#[utoipa::path(
    put, path = "/v1/events/{event_id}/staff/{user_id}", tag = "tickets",
    params(("event_id" = EventId, Path), ("user_id" = UserId, Path)),
    responses(
        (status = 200, body = StaffGrant),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`, `user_not_found`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn grant_staff(
    State(state): State<TicketsState>,
    Operator(caller): Operator,
    Path((event_id, user_id)): Path<(EventId, UserId)>,
) -> Result<Json<StaffGrant>, ErrorBody> {
    let grant = staff::grant(&state.door.pool, event_id, user_id, caller.user_id).await?;
    tracing::info!(%event_id, %user_id, by = %caller.user_id, "door staff granted");
    Ok(Json(grant))
}

/// Undo a user's door staff grant for an event (an operator or admin).
#[utoipa::path(
    delete, path = "/v1/events/{event_id}/staff/{user_id}", tag = "tickets",
    params(("event_id" = EventId, Path), ("user_id" = UserId, Path)),
    responses(
        (status = 204, description = "the user is not door staff of the event (any more)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn revoke_staff(
    State(state): State<TicketsState>,
    Operator(caller): Operator,
    Path((event_id, user_id)): Path<(EventId, UserId)>,
) -> Result<StatusCode, ErrorBody> {
    staff::revoke(&state.door.pool, event_id, user_id).await?;
    tracing::info!(%event_id, %user_id, by = %caller.user_id, "door staff revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Scans at the event's door (its staff, or an operator).
///
/// Each scan is answered `admitted`, `already_in` (with when and through which
/// door), `exited`, `not_in`, `void` (refunded or reissued), `invalid` (not a code
/// onsale signed, or outside its validity) or `wrong_event`. A ticket is admitted
/// once however many scanners race; the same `scan_id` again gets the same answer.
/// Offline scans (`offline: true`, uploaded when the device is back) are folded in
/// in the order they were made; one that admitted a ticket already in, or void,
/// comes back with `conflict: true` and is shown to operators.
#[utoipa::path(
    post, path = "/v1/events/{event_id}/scans", tag = "tickets",
    params(
        ("event_id" = EventId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional: each scan's `scan_id` already makes a retry one scan"),
    ),
    request_body = ScanBatch,
    responses(
        (status = 200, body = ScanResults),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`forbidden`: not door staff of this event"),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
        (status = 422, body = ErrorBody, description = "`invalid_request`: no scans, more than 100, or a device id that is empty or too long"),
        (status = 503, body = ErrorBody, description = "`service_unavailable`: send the same scans again"),
    ),
    security(("bearer" = []))
)]
async fn post_scans(
    State(state): State<TicketsState>,
    caller: Caller,
    Path(event_id): Path<EventId>,
    Json(batch): Json<ScanBatch>,
) -> Result<Json<ScanResults>, ErrorBody> {
    if batch.scans.is_empty() || batch.scans.len() > MAX_SCANS {
        return Err(ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!("scans must hold 1 to {MAX_SCANS} scans"),
        ));
    }
    if let Some(bad) = batch.scans.iter().find(|s| {
        s.device_id.trim().is_empty()
            || s.device_id.chars().count() > MAX_DEVICE_ID
            || s.device_id.chars().any(char::is_control)
    }) {
        return Err(ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!(
                "scan {}: device_id must be 1 to {MAX_DEVICE_ID} characters, no control characters",
                bad.scan_id
            ),
        ));
    }
    staff::require(&state.door.pool, event_id, caller).await?;
    let results = state
        .door
        .scan(event_id, caller.user_id, batch.scans)
        .await
        .map_err(Error::from)?;
    Ok(Json(ScanResults { results }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct RevokedQuery {
    /// The list's version the scanner has (0 or absent: everything).
    since: Option<i64>,
}

/// The codes that no longer admit (reissued or voided tickets), newer than
/// `since`, for scanners that check codes offline (the event's staff, or an
/// operator).
#[utoipa::path(
    get, path = "/v1/events/{event_id}/checkin/revoked", tag = "tickets",
    params(("event_id" = EventId, Path), RevokedQuery),
    responses(
        (status = 200, body = Revocations),
        (status = 400, body = ErrorBody, description = "`invalid_query`"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`forbidden`: not door staff of this event"),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
    ),
    security(("bearer" = []))
)]
async fn get_revoked(
    State(state): State<TicketsState>,
    caller: Caller,
    Path(event_id): Path<EventId>,
    Query(query): Query<RevokedQuery>,
) -> Result<Json<Revocations>, ErrorBody> {
    let since = query.since.unwrap_or(0);
    if since < 0 {
        return Err(ErrorBody::new(
            ErrorCode::InvalidQuery,
            "since must be 0 or more",
        ));
    }
    staff::require(&state.door.pool, event_id, caller).await?;
    let list = ledger::revocations(&state.door.pool, event_id, since)
        .await
        .map_err(Error::from)?;
    Ok(Json(list))
}

/// The door's figures (an operator): tickets in now and sold, per section, and the
/// conflicts offline scanners caused.
#[utoipa::path(
    get, path = "/v1/ops/events/{event_id}/checkin", tag = "operations",
    params(("event_id" = EventId, Path)),
    responses(
        (status = 200, body = DoorStats),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn get_door(
    State(state): State<TicketsState>,
    _: Operator,
    Path(event_id): Path<EventId>,
) -> Result<Json<DoorStats>, ErrorBody> {
    staff::event_exists(&state.door.pool, event_id).await?;
    Ok(Json(
        stats::door(&state.door.pool, event_id)
            .await
            .map_err(Error::from)?,
    ))
}
