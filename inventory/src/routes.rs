//! Inventory's HTTP routes: venues, events, seat maps, and the operator's rebuild.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::IF_NONE_MATCH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use platform::auth::Admin;
use platform::http::{Json, Path, Query};
use proto::wire::inventory::{CreateEvent, CreateVenue, Event, EventCreated, Venue, VenueCreated};
use proto::wire::queue::SaleState;
use proto::wire::seats::SeatView;
use proto::{ErrorBody, EventId, VenueId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::seatmap::{self, LoadMode};
use crate::{InventoryState, SeatMapCache, events, venues};

pub fn router() -> OpenApiRouter<InventoryState> {
    OpenApiRouter::new()
        .routes(routes!(create_venue))
        .routes(routes!(get_venue))
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event))
        .routes(routes!(get_seats))
        .routes(routes!(rebuild_seat_map))
}

/// Create a venue with its sections, rows and seats.
#[utoipa::path(
    post, path = "/v1/venues", tag = "inventory",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key and body gets the first answer, with no second effect"),
    ),
    request_body = CreateVenue,
    responses(
        (status = 201, body = VenueCreated, description = "the venue and its seat count"),
        (status = 400, body = ErrorBody, description = "`invalid_idempotency_key`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`idempotency_key_reused`, `idempotency_key_in_flight`"),
        (status = 422, body = ErrorBody,
            description = "`venue_has_no_seats`, `duplicate_section`, `duplicate_row_label` or `invalid_request`"),
    ),
    security(("bearer" = ["admin"]))
)]
async fn create_venue(
    State(state): State<InventoryState>,
    _: Admin,
    Json(venue): Json<CreateVenue>,
) -> Result<(StatusCode, Json<VenueCreated>), ErrorBody> {
    let venue = venues::validate(venue)?;
    let venue_id = venues::create(&state.pool, &venue).await?;
    Ok((
        StatusCode::CREATED,
        Json(VenueCreated {
            venue_id,
            seat_count: venue.seat_count,
        }),
    ))
}

/// A venue's sections and rows.
#[utoipa::path(
    get, path = "/v1/venues/{venue_id}", tag = "inventory",
    params(("venue_id" = VenueId, Path)),
    responses((status = 200, body = Venue), (status = 404, body = ErrorBody))
)]
async fn get_venue(
    State(state): State<InventoryState>,
    Path(venue_id): Path<VenueId>,
) -> Result<Json<Venue>, Error> {
    Ok(Json(venues::get(&state.pool, venue_id).await?))
}

/// Create an event on a venue; its seat map is loaded into Redis at once, and its
/// sale (with the lottery's commitment) is set up with it.
#[utoipa::path(
    post, path = "/v1/events", tag = "inventory",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key and body gets the first answer, with no second effect"),
    ),
    request_body = CreateEvent,
    responses(
        (status = 201, body = EventCreated),
        (status = 400, body = ErrorBody, description = "`invalid_idempotency_key`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`venue_not_found`"),
        (status = 409, body = ErrorBody, description = "`idempotency_key_reused`, `idempotency_key_in_flight`"),
        (status = 422, body = ErrorBody,
            description = "`onsale_after_start`, `missing_price`, `unknown_price_tier` or `invalid_request`"),
    ),
    security(("bearer" = ["admin"]))
)]
async fn create_event(
    State(mut state): State<InventoryState>,
    _: Admin,
    Json(event): Json<CreateEvent>,
) -> Result<(StatusCode, Json<EventCreated>), ErrorBody> {
    let event_id =
        events::create_with(&state.pool, &event, state.on_event_created.as_deref()).await?;
    // The event exists once Postgres has it; if Redis is away now, the first read
    // of the event loads the seat map instead.
    if let Err(error) = seatmap::rebuild(
        &state.pool,
        &mut state.redis,
        &state.keys,
        event_id,
        LoadMode::IfAbsent,
    )
    .await
    {
        tracing::warn!(%event_id, %error, "seat map not loaded at event creation; it loads on first read");
    }
    Ok((StatusCode::CREATED, Json(EventCreated { event_id })))
}

/// How many events one listing may ask for.
pub const LIST_LIMIT: std::ops::RangeInclusive<u32> = 1..=200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// At most this many events (1 to 200, default 50).
    limit: Option<u32>,
}

/// Events whose show has not started yet, soonest on-sale first.
#[utoipa::path(
    get, path = "/v1/events", tag = "inventory",
    params(ListParams),
    responses((status = 200, body = Vec<EventSummary>), (status = 400, body = ErrorBody))
)]
async fn list_events(
    State(mut state): State<InventoryState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<EventSummary>>, Error> {
    let limit = params.limit.unwrap_or(50);
    if !LIST_LIMIT.contains(&limit) {
        return Err(Error::invalid(
            proto::ErrorCode::InvalidQuery,
            format!(
                "limit must be {} to {}",
                LIST_LIMIT.start(),
                LIST_LIMIT.end()
            ),
        ));
    }
    let rows = events::upcoming(&state.pool, limit.into()).await?;
    let ids: Vec<EventId> = rows.iter().map(|row| row.event_id).collect();
    // The badge a fan sees ("on sale now", "sold out", "closed") is the sale's own
    // state; an unreadable Redis leaves it out rather than failing the list.
    let sale_states = platform::reads::sale_states(&mut state.redis, &state.keys, &ids)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "sale states unreadable; the list goes without them");
            vec![None; ids.len()]
        });
    Ok(Json(
        rows.into_iter()
            .zip(sale_states)
            .map(|(row, sale_state)| EventSummary {
                sale_state,
                ..EventSummary::from(row)
            })
            .collect(),
    ))
}

/// An event without live counts, as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventSummary {
    pub event_id: EventId,
    pub venue_id: VenueId,
    pub name: String,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub onsale_at: chrono::DateTime<chrono::Utc>,
    pub seat_count: u32,
    /// The sale's state right now; absent when the sale is not set up yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale_state: Option<SaleState>,
}

impl From<events::EventRow> for EventSummary {
    fn from(row: events::EventRow) -> Self {
        Self {
            event_id: row.event_id,
            venue_id: row.venue_id,
            name: row.name,
            starts_at: row.starts_at,
            onsale_at: row.onsale_at,
            seat_count: row.seat_count as u32,
            sale_state: None,
        }
    }
}

/// An event with its available, held and sold seat counts.
#[utoipa::path(
    get, path = "/v1/events/{event_id}", tag = "inventory",
    params(("event_id" = EventId, Path)),
    responses((status = 200, body = Event), (status = 404, body = ErrorBody))
)]
async fn get_event(
    State(mut state): State<InventoryState>,
    Path(event_id): Path<EventId>,
) -> Result<Json<Event>, Error> {
    let row = events::get(&state.pool, event_id).await?;
    let prices = events::prices(&state.pool, event_id).await?;
    let counts =
        seatmap::ensure_loaded(&state.pool, &mut state.redis, &state.keys, event_id).await?;
    Ok(Json(Event {
        event_id,
        venue_id: row.venue_id,
        name: row.name.clone(),
        starts_at: row.starts_at,
        onsale_at: row.onsale_at,
        max_per_fan: row.max_per_fan as u32,
        hold_seconds: row.hold_seconds as u32,
        admission_per_second: row.admission_per_second as u32,
        prices,
        seat_count: row.seat_count as u32,
        available: counts.available,
        held: counts.held,
        sold: counts.sold,
        refund_policy: row.refund_policy(),
        tax: row.tax(),
        cancelled: row.cancelled,
    }))
}

/// Every seat of the event with its state, at most one second old.
///
/// Everyone gets the same snapshot, with an `ETag` and `Cache-Control: public,
/// max-age=1`; a request whose `If-None-Match` names the current snapshot gets 304.
/// `Onsale-Seats-Version` names the version of the map the body shows, so a client
/// following `/v1/events/{event_id}/live` applies only the seat deltas after it.
#[utoipa::path(
    get, path = "/v1/events/{event_id}/seats", tag = "inventory",
    params(
        ("event_id" = EventId, Path),
        ("If-None-Match" = Option<String>, Header, description = "an ETag of an earlier answer"),
    ),
    responses(
        (status = 200, body = Vec<SeatView>, headers(
            ("ETag" = String), ("Cache-Control" = String),
            ("Onsale-Seats-Version" = u64, description = "the seat map's version the body shows; live seat deltas with a greater version come after it"),
            ("Onsale-Sale-State" = String, description = "the sale's state (`scheduled`, `drawing`, `open`, `paused`, `sold_out`, `closed`) when the map was read; absent while the sale is not loaded"),
        )),
        (status = 304, description = "the map has not changed since the ETag sent"),
        (status = 404, body = ErrorBody),
    )
)]
async fn get_seats(
    State(seat_maps): State<Arc<SeatMapCache>>,
    Path(event_id): Path<EventId>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    Ok(seat_maps
        .get(event_id)
        .await?
        .response(headers.get(IF_NONE_MATCH)))
}

/// The outcome of a seat-map rebuild.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RebuildOutcome {
    pub event_id: EventId,
    pub generation: String,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
}

/// Rebuild the event's Redis seat map from the Postgres ledger, replacing what
/// Redis holds. Run it with the event's sale paused.
#[utoipa::path(
    post, path = "/v1/ops/events/{event_id}/rebuild", tag = "operations",
    params(
        ("event_id" = EventId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key and body gets the first answer, with no second effect"),
    ),
    responses(
        (status = 200, body = RebuildOutcome),
        (status = 400, body = ErrorBody, description = "`invalid_idempotency_key`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`idempotency_key_reused`, `idempotency_key_in_flight`"),
    ),
    security(("bearer" = ["admin"]))
)]
async fn rebuild_seat_map(
    State(mut state): State<InventoryState>,
    Admin(caller): Admin,
    Path(event_id): Path<EventId>,
) -> Result<Json<RebuildOutcome>, ErrorBody> {
    let report = seatmap::rebuild(
        &state.pool,
        &mut state.redis,
        &state.keys,
        event_id,
        LoadMode::Force,
    )
    .await?;
    tracing::info!(target: "audit", %event_id, user_id = %caller.user_id, "seat map rebuilt by operator");
    let outcome = RebuildOutcome {
        event_id,
        generation: report.generation,
        available: report.counts.available,
        held: report.counts.held,
        sold: report.counts.sold,
    };
    // Into the sale's audit log (the dashboard's), beside the levers.
    sqlx::query(
        "INSERT INTO waiting_room.audit (event_id, actor, action, detail)
         SELECT event_id, $2, 'rebuild', $3 FROM waiting_room.sales WHERE event_id = $1",
    )
    .bind(event_id)
    .bind(caller.user_id)
    .bind(serde_json::to_value(&outcome).unwrap_or_default())
    .execute(&state.pool)
    .await
    .map_err(|error| {
        tracing::error!(%error, %event_id, "auditing a seat-map rebuild failed");
        ErrorBody::new(proto::ErrorCode::Internal, "internal error")
    })?;
    Ok(Json(outcome))
}
