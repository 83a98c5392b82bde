//! `POST /v1/ops/events/{event_id}/restore`: rebuilds an event's Redis state from
//! Postgres after Redis lost the event's keys (or diverged from the ledger).
//!
//! The gateway composes the services, so the restore lives here, in this order:
//! the sale must admit nobody (paused, or paused now when asked); the event is
//! seized from the booking farm (fence raised, lease taken, ended holds carried into
//! the ledger; while it is seized no fan joins or releases); the sale hash from the
//! ledger, paused; the seat map from the ledger's
//! claims (inventory); every decided request, hold and per-fan count (booking
//! workers' ledger); the line from the journal (waiting room); the event handed
//! back to the farm; an audit entry. The sale stays paused: the operator resumes it.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use platform::auth::{Operator, TokenVerifier};
use platform::http::{Json, Path};
use platform::store::Redis;
use proto::wire::queue::{EventRestored, RestoreEvent, SaleState};
use proto::{ErrorBody, ErrorCode, EventId, Keys};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use waiting_room::sale::{self, Lever};

/// What the restore needs; cheap clones.
#[derive(Clone, FromRef)]
pub struct RestoreState {
    pub pool: PgPool,
    pub redis: Redis,
    pub keys: Keys,
    pub verifier: Arc<TokenVerifier>,
}

pub fn router() -> OpenApiRouter<RestoreState> {
    OpenApiRouter::new().routes(routes!(restore))
}

/// How long the restore may keep the event from the farm if it fails halfway.
const SEIZE_MS: u64 = 120_000;

fn internal(what: &str, error: impl std::fmt::Display) -> ErrorBody {
    tracing::error!(%error, what, "restore failed");
    ErrorBody::new(ErrorCode::Internal, "internal error")
}

/// Restore an event's Redis state (seat map, holds, requests, the line) from
/// Postgres. The sale must be paused, or `{"pause": true}` pauses it first; it stays
/// paused afterwards.
#[utoipa::path(
    post, path = "/v1/ops/events/{event_id}/restore", tag = "operations",
    params(("event_id" = EventId, Path)),
    request_body = RestoreEvent,
    responses(
        (status = 200, body = EventRestored),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`invalid_transition`: the sale is open (send `{\"pause\": true}`) or drawing"),
    ),
    security(("bearer" = ["operator"]))
)]
async fn restore(
    State(state): State<RestoreState>,
    Operator(caller): Operator,
    Path(event_id): Path<EventId>,
    Json(body): Json<RestoreEvent>,
) -> Result<Json<EventRestored>, ErrorBody> {
    let (pool, keys) = (&state.pool, &state.keys);
    let mut redis = state.redis.clone();
    // Whether the sale admits anyone: Redis's word if it still has the sale, else
    // the ledger's.
    let row = sale::ensure_sale(pool, event_id).await?;
    let current: Option<String> = redis::cmd("HGET")
        .arg(keys.sale(event_id))
        .arg("state")
        .query_async(&mut redis)
        .await
        .map_err(|e| internal("reading the sale", e))?;
    let current = current
        .as_deref()
        .and_then(SaleState::parse)
        .unwrap_or(row.state());
    if matches!(current, SaleState::Drawing) || (current == SaleState::Open && !body.pause) {
        return Err(ErrorBody::new(
            ErrorCode::InvalidTransition,
            format!(
                "the sale is {}: pause it first, or send {{\"pause\": true}}",
                current.as_str()
            ),
        ));
    }
    // Seized first: from here on no drainer decides, no hold is released and no fan
    // joins (the line's numbers are not back yet) until the event is handed back.
    let seized = booking_worker::restore::seize(pool, &mut redis, keys, event_id, SEIZE_MS)
        .await
        .map_err(|e| internal("seizing the event", e))?;
    let prepared = async {
        sale::load_into_redis(&mut redis, keys, &row).await?;
        if current == SaleState::Open {
            return Ok::<_, ErrorBody>(
                sale::pull(
                    pool,
                    &mut redis,
                    keys,
                    event_id,
                    Lever::Pause,
                    caller.user_id,
                )
                .await?,
            );
        }
        Ok(current)
    }
    .await;
    let current = match prepared {
        Ok(current) => current,
        Err(error) => {
            let _ = booking_worker::restore::hand_back(&mut redis, keys, seized).await;
            return Err(error);
        }
    };
    let outcome = async {
        let seats = inventory::seatmap::rebuild(
            pool,
            &mut redis,
            keys,
            event_id,
            inventory::seatmap::LoadMode::Force,
        )
        .await?;
        let decided = booking_worker::restore::decided(pool, &mut redis, keys, &seized, event_id)
            .await
            .map_err(|e| internal("restoring decided requests", e))?;
        let line = waiting_room::restore::line(pool, &mut redis, keys, event_id).await?;
        Ok::<_, ErrorBody>(EventRestored {
            event_id,
            state: current,
            available: seats.counts.available,
            held: seats.counts.held,
            sold: seats.counts.sold,
            decided_requests: decided.requests,
            holds: decided.holds,
            queued: line.queued,
            prequeued: line.prequeued,
        })
    }
    .await;
    // The farm gets the event back whether or not the restore went through (a
    // failed one can be run again).
    let handed = booking_worker::restore::hand_back(&mut redis, keys, seized).await;
    let report = outcome?;
    handed.map_err(|e| internal("handing the event back", e))?;
    sale::audit(
        pool,
        event_id,
        Some(caller.user_id),
        "restore",
        serde_json::to_value(&report).unwrap_or_default(),
    )
    .await?;
    metrics::counter!("onsale_event_restores_total").increment(1);
    tracing::warn!(%event_id, actor = %caller.user_id, decided = report.decided_requests,
        queued = report.queued, holds = report.holds, "event restored from postgres");
    Ok(Json(report))
}
