//! The waiting room's HTTP routes: joining and leaving the line, reading a request,
//! the lottery, and the operators' levers.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use platform::auth::{Caller, Operator};
use platform::http::{Json, Path, Query};
use proto::wire::queue::{
    AuditEntry, CreateRequest, Joined, LOTTERY_PAGE_MAX, Lottery, LotteryPage, RequestStatus, Sale,
    SaleState, SaleStats, SetAdmission, StatsSample,
};
use proto::{ErrorBody, ErrorCode, EventId, RequestId, Role, UserId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::requests::{self, Ask};
use crate::sale::{self, Lever};
use crate::{WaitingRoomState, lottery, stats};

pub fn router() -> OpenApiRouter<WaitingRoomState> {
    OpenApiRouter::new()
        .routes(routes!(join))
        .routes(routes!(get_request, leave))
        .routes(routes!(get_lottery))
        .routes(routes!(pull_lever))
        .routes(routes!(set_admission))
        .routes(routes!(get_stats))
        .routes(routes!(get_audit))
        .routes(routes!(get_history))
}

/// How far back `stats/history` reaches, in seconds.
pub const HISTORY_SECONDS: std::ops::RangeInclusive<u32> = 1..=600;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// How far back, in seconds (1 to 600; default 300).
    seconds: Option<u32>,
}

/// The line second by second over the last minutes (oldest first), for charts: one
/// sample a second while the sale is active.
#[utoipa::path(
    get, path = "/v1/ops/events/{event_id}/stats/history", tag = "operations",
    params(("event_id" = EventId, Path), HistoryQuery),
    responses(
        (status = 200, body = Vec<StatsSample>),
        (status = 400, body = ErrorBody, description = "`invalid_query`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`, `sale_not_found`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn get_history(
    State(mut state): State<WaitingRoomState>,
    _: Operator,
    Path(event_id): Path<EventId>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Vec<StatsSample>>, ErrorBody> {
    let seconds = query.seconds.unwrap_or(300);
    if !HISTORY_SECONDS.contains(&seconds) {
        return Err(ErrorBody::new(
            ErrorCode::InvalidQuery,
            format!(
                "seconds must be {} to {}",
                HISTORY_SECONDS.start(),
                HISTORY_SECONDS.end()
            ),
        ));
    }
    sale::get(&state.pool, event_id).await?;
    let since = chrono::Utc::now().timestamp_millis() - i64::from(seconds) * 1000;
    let samples =
        stats::samples(&mut state.redis, &state.keys, event_id, stats::SAMPLES_KEPT).await?;
    Ok(Json(
        samples
            .into_iter()
            .rev()
            .filter(|s| s.at_ms >= since)
            .filter_map(|s| {
                Some(StatsSample {
                    at: chrono::DateTime::from_timestamp_millis(s.at_ms)?,
                    next: s.next,
                    served: s.served,
                    held: s.held,
                    sold: s.sold,
                })
            })
            .collect(),
    ))
}

/// The sale's figures now: the line, the rates, holds and sales. Read from counters
/// the farm keeps, so it costs the same for a line of ten or a million.
#[utoipa::path(
    get, path = "/v1/ops/events/{event_id}/stats", tag = "operations",
    params(("event_id" = EventId, Path)),
    responses(
        (status = 200, body = SaleStats),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`, `sale_not_found`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn get_stats(
    State(mut state): State<WaitingRoomState>,
    _: Operator,
    Path(event_id): Path<EventId>,
) -> Result<Json<SaleStats>, ErrorBody> {
    Ok(Json(
        stats::read(&state.pool, &mut state.redis, &state.keys, event_id).await?,
    ))
}

/// Who pulled which lever, when, from what to what; newest first, the last 200.
#[utoipa::path(
    get, path = "/v1/ops/events/{event_id}/audit", tag = "operations",
    params(("event_id" = EventId, Path)),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`event_not_found`, `sale_not_found`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn get_audit(
    State(state): State<WaitingRoomState>,
    _: Operator,
    Path(event_id): Path<EventId>,
) -> Result<Json<Vec<AuditEntry>>, ErrorBody> {
    Ok(Json(stats::audit_log(&state.pool, event_id, 200).await?))
}

/// Join the event's line with a booking request.
///
/// Before the on-sale the request waits in the pre-queue (`queue_number` and
/// `position` are `null`) until the draw numbers it. A retry with the same
/// `Idempotency-Key` returns the same request. Where the deployment requires a
/// confirmed email address, a fan's token must say it is confirmed (403
/// `email_unverified`: confirm it, then refresh the token); operators and admins
/// are exempt.
#[utoipa::path(
    post, path = "/v1/events/{event_id}/requests", tag = "waiting room",
    params(
        ("event_id" = EventId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key have the effect of one request"),
    ),
    request_body = CreateRequest,
    responses(
        (status = 202, body = Joined),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`email_unverified`: the deployment requires a confirmed email address and the token does not say it is confirmed"),
        (status = 404, body = ErrorBody, description = "`event_not_found`"),
        (status = 409, body = ErrorBody, description = "`already_in_line`, `sale_closed`, `sold_out`, `idempotency_key_reused`"),
        (status = 422, body = ErrorBody, description = "`invalid_request`, `over_limit`, `unknown_seat`, `unknown_section`, `unknown_price_tier`"),
        (status = 429, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn join(
    State(state): State<WaitingRoomState>,
    caller: Caller,
    Path(event_id): Path<EventId>,
    headers: HeaderMap,
    Json(body): Json<CreateRequest>,
) -> Result<(StatusCode, Json<Joined>), ErrorBody> {
    if state.require_verified_email && !confirmed_or_staff(caller) {
        return Err(ErrorBody::new(
            ErrorCode::EmailUnverified,
            "confirm your email address first (the link is in the email we sent; \
             POST /v1/auth/verify-email/resend sends another), then refresh the token",
        ));
    }
    let ask = Ask::parse(body)?;
    let idempotency = match headers.get("idempotency-key") {
        Some(value) => Some(requests::idempotency_digest(value.to_str().unwrap_or(" "))?),
        None => None,
    };
    let joined = state
        .joiner
        .join(event_id, caller.user_id, &ask, idempotency.as_deref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(joined)))
}

/// Whether `caller` passes the confirmation requirement: its token says the
/// address is confirmed, or it is staff (operators and admins are made by an admin,
/// who vouches for them; they test sales before fans can).
fn confirmed_or_staff(caller: Caller) -> bool {
    caller.email_verified || caller.role.includes(Role::Operator)
}

/// The request of a caller who may see it: its fan, or an operator.
async fn visible_request(
    state: &mut WaitingRoomState,
    caller: Caller,
    request_id: RequestId,
) -> Result<EventId, Error> {
    Ok(visible_request_of(state, caller, request_id).await?.0)
}

/// [`visible_request`], with the request's fan.
async fn visible_request_of(
    state: &mut WaitingRoomState,
    caller: Caller,
    request_id: RequestId,
) -> Result<(EventId, UserId), Error> {
    let event_id =
        requests::event_of(&mut state.redis, &state.keys, &state.pool, request_id).await?;
    let owner = requests::owner_of(&mut state.redis, &state.keys, event_id, request_id).await?;
    if owner != caller.user_id && !caller.role.includes(Role::Operator) {
        // Someone else's request does not exist, as far as this caller can tell.
        return Err(Error::RequestNotFound(request_id));
    }
    Ok((event_id, owner))
}

/// Where a request stands: its state, position in line, held seats and expiry.
#[utoipa::path(
    get, path = "/v1/requests/{request_id}", tag = "waiting room",
    params(("request_id" = RequestId, Path)),
    responses((status = 200, body = RequestStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn get_request(
    State(mut state): State<WaitingRoomState>,
    caller: Caller,
    Path(request_id): Path<RequestId>,
) -> Result<Json<RequestStatus>, Error> {
    let live = match visible_request(&mut state, caller, request_id).await {
        Ok(event_id) => {
            requests::status_of(&mut state.redis, &state.keys, event_id, request_id).await
        }
        Err(error) => Err(error),
    };
    match live {
        Ok(status) => Ok(Json(status)),
        // Redis forgot it (the sale ended and its keys expired), or lost it (even
        // between two reads of this request): Postgres remembers.
        Err(Error::RequestNotFound(_)) => {
            match requests::recorded(&state.pool, request_id).await? {
                Some((fan, status))
                    if fan == caller.user_id || caller.role.includes(Role::Operator) =>
                {
                    Ok(Json(status))
                }
                _ => Err(Error::RequestNotFound(request_id)),
            }
        }
        Err(error) => Err(error),
    }
}

/// Leave the line, or release the held seats.
#[utoipa::path(
    delete, path = "/v1/requests/{request_id}", tag = "waiting room",
    params(("request_id" = RequestId, Path)),
    responses((status = 200, body = RequestStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn leave(
    State(mut state): State<WaitingRoomState>,
    caller: Caller,
    Path(request_id): Path<RequestId>,
) -> Result<Json<RequestStatus>, Error> {
    let (event_id, fan) = match visible_request_of(&mut state, caller, request_id).await {
        Ok(found) => found,
        // Redis does not have it: an ended request is answered from Postgres; one
        // still live waits for the restore of its event's line.
        Err(Error::RequestNotFound(_)) => {
            return match requests::recorded(&state.pool, request_id).await? {
                Some((fan, status))
                    if fan == caller.user_id || caller.role.includes(Role::Operator) =>
                {
                    if status.state.is_terminal() {
                        Ok(Json(status))
                    } else {
                        Err(Error::LineLost(status.event_id))
                    }
                }
                _ => Err(Error::RequestNotFound(request_id)),
            };
        }
        Err(error) => return Err(error),
    };
    let status = requests::leave(
        &state.pool,
        &mut state.redis,
        &state.keys,
        event_id,
        request_id,
    )
    .await?;
    if fan != caller.user_id {
        // An operator ended a fan's request: the sale's audit log says who and whose.
        sale::audit(
            &state.pool,
            event_id,
            Some(caller.user_id),
            "release",
            serde_json::json!({"request_id": request_id, "fan": fan, "state": status.state}),
        )
        .await?;
    }
    Ok(Json(status))
}

/// The event's lottery: the seed's commitment before the draw; the seed and the
/// drawn order after it, so anyone can recompute the order. The order comes in
/// pages (`?after=&limit=`, by queue number): a read costs one index range of
/// the page's size, whatever the cohort. A drawn page never changes, so it may
/// be cached for a day; before the draw, for a few seconds.
///
/// Anyone may ask, so this only reads: the sale is set up when its event is created.
#[utoipa::path(
    get, path = "/v1/events/{event_id}/lottery", tag = "waiting room",
    params(("event_id" = EventId, Path), LotteryPage),
    responses(
        (status = 200, body = Lottery, headers(("Cache-Control" = String))),
        (status = 400, body = ErrorBody, description = "`invalid_query`: an unknown parameter, or `limit` outside 1 to 5000"),
        (status = 404, body = ErrorBody, description = "`event_not_found`, or `sale_not_found` for an event whose sale was never set up"),
    )
)]
async fn get_lottery(
    State(state): State<WaitingRoomState>,
    Path(event_id): Path<EventId>,
    Query(page): Query<LotteryPage>,
) -> Result<axum::response::Response, ErrorBody> {
    if !(1..=LOTTERY_PAGE_MAX).contains(&page.limit) {
        return Err(ErrorBody::new(
            ErrorCode::InvalidQuery,
            format!("limit must be 1 to {LOTTERY_PAGE_MAX}"),
        ));
    }
    let Ok(after) = i32::try_from(page.after) else {
        return Err(ErrorBody::new(
            ErrorCode::InvalidQuery,
            format!("after must be 0 to {}", i32::MAX),
        ));
    };
    let sale = sale::get(&state.pool, event_id).await?;
    let drawn: Option<Option<i32>> = sqlx::query_scalar(
        "SELECT cohort_size FROM waiting_room.sales WHERE event_id = $1 AND drawn_at IS NOT NULL",
    )
    .bind(event_id)
    .fetch_optional(&state.pool)
    .await
    .map_err(Error::from)?;
    let (order, next_after) = match drawn {
        Some(_) => {
            // One more than the page: whether another follows.
            let mut rows: Vec<(RequestId, i32)> = sqlx::query_as(
                "SELECT request_id, queue_number FROM waiting_room.draw_entries
                 WHERE event_id = $1 AND queue_number > $2
                 ORDER BY queue_number LIMIT $3",
            )
            .bind(event_id)
            .bind(after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&state.pool)
            .await
            .map_err(Error::from)?;
            let more = rows.len() > page.limit as usize;
            rows.truncate(page.limit as usize);
            let next = more.then(|| rows.last().map(|(_, n)| *n as u32)).flatten();
            (Some(rows.into_iter().map(|(id, _)| id).collect()), next)
        }
        None => (None, None),
    };
    let cache = if order.is_some() {
        "public, max-age=86400, immutable"
    } else {
        "public, max-age=5"
    };
    let body = Lottery {
        event_id,
        state: sale.state(),
        commitment: sale.commitment.clone(),
        seed: order.as_ref().map(|_| lottery::to_hex(&sale.seed)),
        algorithm: lottery::ALGORITHM.to_owned(),
        order,
        next_after,
    };
    Ok((
        [(axum::http::header::CACHE_CONTROL, cache)],
        axum::Json(body),
    )
        .into_response())
}

/// Pull a sale lever: `open` (draws the pre-queue now), `pause`, `resume`, `close`.
#[utoipa::path(
    post, path = "/v1/ops/events/{event_id}/{action}", tag = "operations",
    params(
        ("event_id" = EventId, Path), ("action" = String, Path, description = "`open`, `pause`, `resume` or `close`"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key and body gets the first answer, with no second effect"),
    ),
    responses(
        (status = 200, body = Sale),
        (status = 400, body = ErrorBody, description = "`invalid_idempotency_key`"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`invalid_transition`, `idempotency_key_reused`, `idempotency_key_in_flight`"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn pull_lever(
    State(mut state): State<WaitingRoomState>,
    Operator(caller): Operator,
    Path((event_id, action)): Path<(EventId, String)>,
) -> Result<Json<Sale>, ErrorBody> {
    let lever = Lever::parse(&action).ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::NotFound,
            format!("no lever {action:?}: open, pause, resume or close"),
        )
    })?;
    let new_state = sale::pull(
        &state.pool,
        &mut state.redis,
        &state.keys,
        event_id,
        lever,
        caller.user_id,
    )
    .await?;
    Ok(Json(current_sale(&state, event_id, new_state).await?))
}

async fn current_sale(
    state: &WaitingRoomState,
    event_id: EventId,
    sale_state: SaleState,
) -> Result<Sale, Error> {
    let per_second: i32 = sqlx::query_scalar(
        "SELECT admission_per_second FROM waiting_room.sales WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(Sale {
        event_id,
        state: sale_state,
        admission_per_second: per_second as u32,
    })
}

/// Set how many requests per second the booking workers admit from the line.
#[utoipa::path(
    put, path = "/v1/ops/events/{event_id}/admission", tag = "operations",
    params(
        ("event_id" = EventId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key and body gets the first answer, with no second effect"),
    ),
    request_body = SetAdmission,
    responses(
        (status = 200, body = Sale),
        (status = 400, body = ErrorBody, description = "`invalid_idempotency_key`"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`idempotency_key_reused`, `idempotency_key_in_flight`"),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["operator"]))
)]
async fn set_admission(
    State(mut state): State<WaitingRoomState>,
    Operator(caller): Operator,
    Path(event_id): Path<EventId>,
    Json(body): Json<SetAdmission>,
) -> Result<Json<Sale>, ErrorBody> {
    sale::set_admission(
        &state.pool,
        &mut state.redis,
        &state.keys,
        event_id,
        body.per_second,
        caller.user_id,
    )
    .await?;
    let row = sale::ensure_sale(&state.pool, event_id).await?;
    Ok(Json(current_sale(&state, event_id, row.state()).await?))
}
