//! The live routes: the socket and its REST fallback. Everything is checked before
//! the upgrade, so a refusal is a plain HTTP answer with the usual error body.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::{Extensions, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use platform::auth::{Caller, Claims, TokenVerifier, bearer_token_in};
use platform::client_address::TrustedProxies;
use platform::http::{Json, Path};
use proto::wire::live::{LiveMessage, LiveSnapshot, LiveTicket};
use proto::{ErrorBody, ErrorCode, EventId, RequestId, Role};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::feed::{Crowded, Feed, FeedError, Hub};
use crate::socket;

#[derive(Clone)]
pub struct RealtimeState {
    pub hub: Arc<Hub>,
    pub verifier: Arc<TokenVerifier>,
    /// Whose `X-Forwarded-For` names the client.
    pub proxies: Arc<TrustedProxies>,
}

impl RealtimeState {
    /// The client's address (behind trusted proxies), if the node's per-address
    /// request limit admits it; if not, how long until it would.
    fn admit_address(
        &self,
        extensions: &Extensions,
        headers: &HeaderMap,
    ) -> Result<IpAddr, std::time::Duration> {
        // In-process callers (tests) have no peer: they share one bucket.
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        let client = self.proxies.client(peer, headers);
        self.hub.admit_request(client)?;
        Ok(client)
    }
}

impl FromRef<RealtimeState> for Arc<TokenVerifier> {
    fn from_ref(state: &RealtimeState) -> Self {
        state.verifier.clone()
    }
}

pub fn router() -> OpenApiRouter<RealtimeState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(live_snapshot))
        .routes(routes!(live_ticket))
}

/// Query parameters of the live routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// A socket ticket (`POST .../live/ticket`): single use, valid 30 s. What
    /// browsers send, since they cannot set headers on a WebSocket.
    ticket: Option<String>,
    /// The access token itself. Still accepted, but it lands in every access log
    /// on the way: browsers use a ticket.
    access_token: Option<String>,
    /// The request to follow; without it, the caller's live request in the event.
    request_id: Option<String>,
}

/// Follow an event live over a WebSocket: sale state, the caller's place in line,
/// its request, seat-map changes. See docs/REALTIME.md for the messages.
///
/// The caller is named by `Authorization: Bearer` or, for browsers, by a `ticket`
/// (`POST /v1/events/{event_id}/live/ticket`). The socket closes (code 4401,
/// after an `error` message `session_ended` or `token_outdated`) when the caller's
/// session ends or role changes while it is open.
#[utoipa::path(
    get, path = "/v1/events/{event_id}/live", tag = "realtime",
    params(("event_id" = EventId, Path), LiveQuery),
    responses(
        (status = 101, description = "switching to the WebSocket protocol; then JSON text messages", body = LiveMessage),
        (status = 400, body = ErrorBody, description = "`not_a_websocket`, `invalid_query`"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`, `invalid_token` (also a ticket unknown, spent, expired or for another event), `session_ended`, `token_outdated`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: another fan's request"),
        (status = 404, body = ErrorBody, description = "`event_not_found`, `sale_not_found`, `request_not_found`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many sockets for this account or address, or too many upgrades from this address (`retry-after`)"),
    ),
    security(("bearer" = []), ())
)]
async fn live(
    State(state): State<RealtimeState>,
    Path(event_id): Path<EventId>,
    headers: HeaderMap,
    extensions: Extensions,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Response> {
    let address = state
        .admit_address(&extensions, &headers)
        .map_err(|wait| platform::http::too_many(wait, "address"))?;
    let (feed, request, claims) = admit(&state, event_id, &headers, &uri)
        .await
        .map_err(IntoResponse::into_response)?;
    let user = Caller::from(claims.clone()).user_id;
    let slot = state.hub.take_socket(user, address).map_err(|crowded| {
        let (why, limit, whose) = match crowded {
            Crowded::Account => (
                "per_account",
                state.hub.settings.max_sockets_per_account,
                "account",
            ),
            Crowded::Address => (
                "per_address",
                state.hub.settings.max_sockets_per_address,
                "address",
            ),
        };
        metrics::counter!("onsale_realtime_sockets_refused_total", "why" => why).increment(1);
        ErrorBody::new(
            ErrorCode::RateLimited,
            format!("this {whose} has {limit} live sockets open already: close one first"),
        )
        .into_response()
    })?;
    let upgrade = upgrade.map_err(|rejection| {
        ErrorBody::new(
            ErrorCode::NotAWebsocket,
            format!("this path takes a WebSocket upgrade ({rejection})"),
        )
        .into_response()
    })?;
    let settings = &state.hub.settings;
    let hub = state.hub.clone();
    let bearer = socket::Bearer {
        claims,
        revocations: state.verifier.revocations().clone(),
    };
    Ok(upgrade
        .read_buffer_size(settings.buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(settings.max_write_buffer_bytes)
        .max_message_size(settings.max_frame_bytes)
        .max_frame_size(settings.max_frame_bytes)
        .on_upgrade(move |ws| async move {
            socket::serve(ws, hub, feed, request, bearer).await;
            // Counted for as long as the socket lives.
            drop(slot);
        }))
}

/// What a live socket starts with, for a browser that cannot hold one: poll it.
#[utoipa::path(
    get, path = "/v1/events/{event_id}/live/snapshot", tag = "realtime",
    params(("event_id" = EventId, Path), LiveQuery),
    responses(
        (status = 200, body = LiveSnapshot),
        (status = 400, body = ErrorBody, description = "`invalid_query`"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`, `invalid_token`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: another fan's request"),
        (status = 404, body = ErrorBody, description = "`event_not_found`, `sale_not_found`, `request_not_found`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many requests from this address (`retry-after`)"),
    ),
    security(("bearer" = []), ())
)]
async fn live_snapshot(
    State(state): State<RealtimeState>,
    Path(event_id): Path<EventId>,
    headers: HeaderMap,
    extensions: Extensions,
    uri: Uri,
) -> Result<Json<LiveSnapshot>, Response> {
    state
        .admit_address(&extensions, &headers)
        .map_err(|wait| platform::http::too_many(wait, "address"))?;
    let (feed, request, _) = admit(&state, event_id, &headers, &uri)
        .await
        .map_err(IntoResponse::into_response)?;
    socket::snapshot(&state.hub, &feed, request)
        .await
        .map(Json)
        .map_err(|error| feed_error(error).into_response())
}

/// A ticket for one socket on this event, for a browser: it goes in the socket's
/// URL (`?ticket=`) where the access token would otherwise be written into every
/// access log on the way. Single use, valid 30 seconds.
#[utoipa::path(
    post, path = "/v1/events/{event_id}/live/ticket", tag = "realtime",
    params(("event_id" = EventId, Path)),
    responses(
        (status = 200, body = LiveTicket),
        (status = 401, body = ErrorBody, description = "`unauthenticated`, `invalid_token`, `session_ended`, `token_outdated`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many requests from this address (`retry-after`)"),
    ),
    security(("bearer" = []))
)]
async fn live_ticket(
    State(state): State<RealtimeState>,
    Path(event_id): Path<EventId>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Json<LiveTicket>, Response> {
    state
        .admit_address(&extensions, &headers)
        .map_err(|wait| platform::http::too_many(wait, "address"))?;
    ticket(&state, event_id, &headers)
        .await
        .map_err(IntoResponse::into_response)
}

async fn ticket(
    state: &RealtimeState,
    event_id: EventId,
    headers: &HeaderMap,
) -> Result<Json<LiveTicket>, ErrorBody> {
    let token = bearer_token_in(headers)?
        .ok_or_else(|| ErrorBody::new(ErrorCode::Unauthenticated, "this needs a bearer token"))?;
    let claims = state.verifier.verify(token)?;
    let mut redis = state.hub.redis.clone();
    let ticket =
        platform::sessions::issue_ticket(&mut redis, state.hub.keys.prefix(), event_id, &claims)
            .await
            .map_err(|e| feed_error(e.into()))?;
    Ok(Json(LiveTicket {
        ticket,
        expires_in: platform::sessions::TICKET_SECONDS,
    }))
}

/// Checks the caller (token or ticket), the event and the request; returns the
/// event's feed, the request to follow and the caller's claims.
async fn admit(
    state: &RealtimeState,
    event_id: EventId,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(Arc<Feed>, Option<RequestId>, Claims), ErrorBody> {
    let axum::extract::Query(query) = axum::extract::Query::<LiveQuery>::try_from_uri(uri)?;
    let claims = match (
        bearer_token_in(headers)?,
        query.ticket.as_deref(),
        query.access_token.as_deref(),
    ) {
        (Some(token), _, _) | (None, None, Some(token)) => state.verifier.verify(token)?,
        (None, Some(ticket), _) => {
            let mut redis = state.hub.redis.clone();
            platform::sessions::redeem_ticket(
                &mut redis,
                state.hub.keys.prefix(),
                event_id,
                ticket,
                state.verifier.revocations(),
            )
            .await?
        }
        (None, None, None) => {
            return Err(ErrorBody::new(
                ErrorCode::Unauthenticated,
                "this needs `Authorization: Bearer` or a `?ticket=` (POST .../live/ticket)",
            ));
        }
    };
    let caller = Caller::from(claims.clone());
    let requested = match &query.request_id {
        Some(raw) => Some(raw.parse::<RequestId>().map_err(|_| {
            ErrorBody::new(ErrorCode::InvalidQuery, "request_id is not a request id")
        })?),
        None => None,
    };
    let feed = state.hub.feed(event_id).await.map_err(feed_error)?;
    let mut redis = state.hub.redis.clone();
    let keys = &state.hub.keys;
    let request = match requested {
        Some(request_id) => {
            let fan: Option<String> = redis::cmd("HGET")
                .arg(keys.request(event_id, request_id))
                .arg("fan")
                .query_async(&mut redis)
                .await
                .map_err(|e| feed_error(e.into()))?;
            let fan = fan.ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::RequestNotFound,
                    format!("request {request_id} is not in this event's line"),
                )
            })?;
            if fan != caller.user_id.to_string() && !caller.role.includes(Role::Operator) {
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    "this request belongs to another fan",
                ));
            }
            Some(request_id)
        }
        None => {
            let live: Option<String> = redis::cmd("HGET")
                .arg(keys.fans(event_id))
                .arg(caller.user_id.to_string())
                .query_async(&mut redis)
                .await
                .map_err(|e| feed_error(e.into()))?;
            live.and_then(|id| id.parse().ok())
        }
    };
    Ok((feed, request, claims))
}

fn feed_error(error: FeedError) -> ErrorBody {
    match error {
        FeedError::EventNotFound(id) => {
            ErrorBody::new(ErrorCode::EventNotFound, format!("event {id} not found"))
        }
        FeedError::SaleNotFound(id) => ErrorBody::new(
            ErrorCode::SaleNotFound,
            format!("event {id} has no sale to follow"),
        ),
        FeedError::Busy(wait) => {
            metrics::counter!("onsale_rate_limited_total", "limiter" => "event_lookups")
                .increment(1);
            ErrorBody::new(
                ErrorCode::RateLimited,
                format!(
                    "this node is looking up too many events right now; retry in {} s",
                    wait.as_secs().max(1)
                ),
            )
        }
        other => {
            tracing::warn!(error = %other, "live route failed");
            ErrorBody::new(
                ErrorCode::ServiceUnavailable,
                "the live feed is unavailable right now; retry shortly",
            )
        }
    }
}
