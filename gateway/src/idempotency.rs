//! `Idempotency-Key` for the admins' and operators' state-changing requests (creating
//! venues and events, the sale's levers, the admission rate, seat-map rebuilds) and
//! for a fan's checkout.
//!
//! The semantics are the joins' (`docs/QUEUE.md`): a retry with the same key and the
//! same request (method, path and body) from the same account gets the first answer
//! again, status and body, with no second effect; the same key with another request
//! gets 409 `idempotency_key_reused`; a key that is not 1 to 255 visible ASCII
//! characters gets 400 `invalid_idempotency_key`. Joins keep their own keys in Redis,
//! beside the line; these requests are rare and are remembered in Postgres
//! (`gateway.idempotency_keys`) for 24 hours.
//!
//! One request with a key runs at a time. The first claims the key with a row
//! committed at once (`claimed_until`, a lease of [`RUN_LEASE`]), runs in a task of
//! its own, and stores its answer in the row: a client that goes away mid-request
//! (a checkout whose charge is under way) does not stop it, and the retry gets the
//! answer, the order. A duplicate arriving meanwhile polls for the answer without
//! holding a connection, up to [`WAIT_FOR_FIRST`], then 409
//! `idempotency_key_in_flight`. Only successes are stored: after a refusal the key
//! is freed, since a refused request changed nothing and asking again is asked
//! afresh. No connection is held while the request runs.
//!
//! Known limit: a gateway that dies mid-request leaves its claim until the lease
//! ends; a retry after that runs the request again (the request's own effects, a
//! checkout's say, are idempotent on their own).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platform::auth::Caller;
use proto::{ErrorBody, ErrorCode, UserId};
use secrecy::ExposeSecret;
use sha2::Sha256;
use sqlx::PgPool;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer that was stored and is being replayed.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long an answer is remembered.
pub const KEEP: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a duplicate waits for the first request with its key to finish.
pub const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// How often a duplicate looks for the first request's answer.
const POLL: Duration = Duration::from_millis(25);
/// How long a claim holds its key while its request runs: a gateway that died
/// mid-request leaves a claim that a retry takes over after this.
pub const RUN_LEASE: Duration = Duration::from_secs(120);

/// The routes whose retries must not repeat their effect, as mounted. Joins are not
/// here: they carry their keys in Redis, inside the join script.
const ROUTES: [(Method, &str); 11] = [
    (Method::POST, "/v1/venues"),
    (Method::POST, "/v1/events"),
    (Method::POST, "/v1/ops/events/{event_id}/{action}"),
    (Method::POST, "/v1/ops/events/{event_id}/rebuild"),
    (Method::PUT, "/v1/ops/events/{event_id}/admission"),
    (Method::POST, "/v1/requests/{request_id}/checkout"),
    (Method::POST, "/v1/tickets/{ticket_id}/reissue"),
    (Method::POST, "/v1/orders/{order_id}/refunds"),
    (Method::POST, "/v1/ops/orders/{order_id}/refunds"),
    (Method::POST, "/v1/ops/events/{event_id}/cancel"),
    // Each scan's scan_id already makes a retry one scan; a key is taken too.
    (Method::POST, "/v1/events/{event_id}/scans"),
];

/// What the middleware needs.
#[derive(Clone)]
pub struct Idempotency {
    pub pool: PgPool,
    /// Keys the request fingerprints (the token signing secret serves).
    pub secret: secrecy::SecretString,
    /// The largest request body, as for every other route.
    pub body_limit: usize,
}

/// Middleware for the gateway's router. Runs after authentication: keys belong to
/// accounts, and a request without a verified caller goes on to be refused by its
/// handler.
pub async fn guard(
    State(idempotency): State<Idempotency>,
    request: Request,
    next: Next,
) -> Response {
    let Some(route) = covered(&request) else {
        return next.run(request).await;
    };
    let (Some(key), Some(caller)) = (
        request.headers().get(HEADER),
        request.extensions().get::<Caller>().copied(),
    ) else {
        return next.run(request).await;
    };
    let digest = match key_digest(key) {
        Ok(digest) => digest,
        Err(refusal) => return refusal.into_response(),
    };
    idempotency
        .run_once(caller.user_id, digest, route, request, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `"METHOD /route/{template}"` of a request to a covered route.
fn covered(request: &Request) -> Option<String> {
    let path = request.extensions().get::<MatchedPath>()?.as_str();
    ROUTES
        .iter()
        .any(|(method, route)| method == request.method() && *route == path)
        .then(|| format!("{} {path}", request.method()))
}

/// Checks a key (the joins' rule) and returns its digest, which is all that is kept.
fn key_digest(key: &HeaderValue) -> Result<String, ErrorBody> {
    Ok(waiting_room::requests::idempotency_digest(
        key.to_str().unwrap_or(" "),
    )?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What makes two requests the same request.
/// The request's fingerprint: an HMAC under a server secret, not a bare hash, because
/// a checkout's body holds a card number, which must not be recoverable from what
/// is stored (a bare hash of a 16-digit number falls to a search).
fn fingerprint(secret: &[u8], method: &Method, path_and_query: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(secret).expect("hmac accepts any key length");
    mac.update(method.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(path_and_query.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// An answer as stored.
#[derive(sqlx::FromRow)]
struct Stored {
    fingerprint: String,
    status: Option<i16>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

impl Stored {
    fn replay(self) -> Option<Response> {
        let status = StatusCode::from_u16(u16::try_from(self.status?).ok()?).ok()?;
        let mut response = (status, self.body.unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        if let Some(content_type) = self
            .content_type
            .and_then(|v| HeaderValue::try_from(v).ok())
        {
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        Some(response)
    }
}

fn unavailable(error: &sqlx::Error) -> ErrorBody {
    tracing::error!(%error, "idempotency key store failed");
    ErrorBody::new(
        ErrorCode::ServiceUnavailable,
        "the service is unavailable, try again shortly",
    )
}

fn in_flight() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::IdempotencyKeyInFlight,
        "a request with this Idempotency-Key is still being answered; ask again shortly",
    )
}

impl Idempotency {
    /// Runs the request unless an answer is stored for its key; stores a success.
    async fn run_once(
        &self,
        user_id: UserId,
        digest: String,
        route: String,
        request: Request,
        next: Next,
    ) -> Result<Response, ErrorBody> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, self.body_limit)
            .await
            .map_err(|_| {
                ErrorBody::new(
                    ErrorCode::PayloadTooLarge,
                    "request body is larger than this endpoint accepts",
                )
            })?;
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let fingerprint = fingerprint(
            self.secret.expose_secret().as_bytes(),
            &parts.method,
            path,
            &body,
        );

        // The key is claimed in a statement of its own, committed at once: no
        // connection is held while the request runs. A duplicate meanwhile polls for
        // the answer (or for the key to be free again) without holding one either.
        let started = tokio::time::Instant::now();
        loop {
            let claimed: Option<bool> = sqlx::query_scalar(
                "INSERT INTO gateway.idempotency_keys AS k
                     (user_id, key_digest, route, fingerprint, claimed_until)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $6))
                 ON CONFLICT (user_id, key_digest) DO UPDATE
                     SET route = EXCLUDED.route, fingerprint = EXCLUDED.fingerprint,
                         status = NULL, content_type = NULL, body = NULL, created_at = now(),
                         claimed_until = EXCLUDED.claimed_until
                     WHERE k.created_at < now() - make_interval(secs => $5)
                        OR (k.status IS NULL AND k.claimed_until < now())
                 RETURNING true",
            )
            .bind(user_id)
            .bind(&digest)
            .bind(&route)
            .bind(&fingerprint)
            .bind(KEEP.as_secs_f64())
            .bind(RUN_LEASE.as_secs_f64())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable(&e))?;
            if claimed.is_some() {
                break;
            }
            let stored: Option<Stored> = sqlx::query_as(
                "SELECT fingerprint, status, content_type, body FROM gateway.idempotency_keys
                 WHERE user_id = $1 AND key_digest = $2",
            )
            .bind(user_id)
            .bind(&digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable(&e))?;
            match stored {
                Some(stored) if stored.fingerprint != fingerprint => {
                    return Err(ErrorBody::new(
                        ErrorCode::IdempotencyKeyReused,
                        "this Idempotency-Key was used for another request",
                    ));
                }
                Some(stored) if stored.status.is_some() => {
                    metrics::counter!("onsale_idempotent_replays_total").increment(1);
                    tracing::info!(%user_id, route, "request replayed for its idempotency key");
                    return stored.replay().ok_or_else(in_flight);
                }
                // The first is still running (or its key was freed a moment ago,
                // and the next claim takes it).
                Some(_) | None => {
                    if started.elapsed() >= WAIT_FOR_FIRST {
                        return Err(in_flight());
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }

        // The request runs in a task of its own: a client that goes away mid-request
        // (a checkout whose charge is under way) does not stop it, and its answer is
        // stored for the retry, which gets the order.
        let pool = self.pool.clone();
        let request = Request::from_parts(parts, Body::from(body));
        // It keeps the call's correlation id and log span (a task-local and a span
        // do not follow `tokio::spawn` by themselves).
        let task = tokio::spawn(tracing::Instrument::in_current_span(
            platform::correlation::carried(async move {
                let response = next.run(request).await;
                settle_claim(&pool, user_id, &digest, &route, response).await
            }),
        ));
        match task.await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::error!(%error, "an idempotent request's task failed");
                Err(ErrorBody::new(ErrorCode::Internal, "internal error"))
            }
        }
    }
}

/// Stores a success as the key's answer; frees the key after anything else (a
/// refused request changed nothing, and asking again is asked afresh).
async fn settle_claim(
    pool: &PgPool,
    user_id: UserId,
    digest: &str,
    route: &str,
    response: Response,
) -> Result<Response, ErrorBody> {
    if !response.status().is_success() {
        let freed = sqlx::query(
            "DELETE FROM gateway.idempotency_keys
             WHERE user_id = $1 AND key_digest = $2 AND status IS NULL",
        )
        .bind(user_id)
        .bind(digest)
        .execute(pool)
        .await;
        if let Err(error) = freed {
            // The claim's lease frees it later.
            tracing::warn!(%error, route, "freeing an idempotency key failed");
        }
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, route, "reading an answer to store failed");
            return Err(ErrorBody::new(ErrorCode::Internal, "internal error"));
        }
    };
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let stored = sqlx::query(
        "UPDATE gateway.idempotency_keys SET status = $3, content_type = $4, body = $5
         WHERE user_id = $1 AND key_digest = $2",
    )
    .bind(user_id)
    .bind(digest)
    .bind(head.status.as_u16() as i16)
    .bind(content_type)
    .bind(body.as_ref())
    .execute(pool)
    .await;
    if let Err(error) = stored {
        // The request took effect; only its answer is lost: a retry after the claim's
        // lease runs it again.
        tracing::error!(%error, %user_id, route, "idempotency answer not stored");
    }
    Ok(Response::from_parts(head, Body::from(body)))
}

/// Forgets answers older than [`KEEP`]; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM gateway.idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(KEEP.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let f =
            |method: &Method, path: &str, body: &[u8]| fingerprint(b"secret", method, path, body);
        let base = f(&Method::POST, "/v1/venues", b"{}");
        assert_eq!(base, f(&Method::POST, "/v1/venues", b"{}"));
        assert_ne!(base, f(&Method::PUT, "/v1/venues", b"{}"));
        assert_ne!(base, f(&Method::POST, "/v1/events", b"{}"));
        assert_ne!(base, f(&Method::POST, "/v1/venues", b"{ }"));
        assert_ne!(base, f(&Method::POST, "/v1/venues?x=1", b"{}"));
        // Keyed: the same request under another secret does not match.
        assert_ne!(
            base,
            fingerprint(b"other", &Method::POST, "/v1/venues", b"{}")
        );
        // Unsalted SHA-256 of the same input is not what is stored.
        use sha2::Digest;
        let mut bare = Sha256::new();
        bare.update(b"POST\n/v1/venues\n{}");
        assert_ne!(base, hex(&bare.finalize()));
    }
}
