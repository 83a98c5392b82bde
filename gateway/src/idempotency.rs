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
//! One request with a key runs at a time. The first inserts the key's row in a
//! transaction that stays open while the request runs, and stores the answer in that
//! row before committing; a duplicate arriving meanwhile waits for the row (trying
//! briefly and letting go of its connection between tries, up to [`WAIT_FOR_FIRST`],
//! then 409 `idempotency_key_in_flight`) and then replays the stored answer. A request that fails, or a process that dies, rolls its row back,
//! so the key stays free. Only successes are stored: a refused request changed
//! nothing, and asking again is asked afresh.
//!
//! Known limit: the request's own writes commit before the key's row does; should the
//! process die between the two, a retry runs the request again.

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
/// How long one try waits on the key's row, and the pause between tries.
const TRY_LOCK: Duration = Duration::from_millis(100);
const TRY_PAUSE: Duration = Duration::from_millis(20);

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

/// Postgres's `lock_not_available`, raised when `lock_timeout` runs out.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
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

        // A duplicate waits for the first without holding a pooled connection: each
        // try waits on the key's row for a moment only, so a burst of duplicates
        // cannot take every connection the first request needs to finish.
        let started = tokio::time::Instant::now();
        let (mut tx, claimed) = loop {
            let mut tx = self.pool.begin().await.map_err(|e| unavailable(&e))?;
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(format!("{}ms", TRY_LOCK.as_millis()))
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable(&e))?;
            // A live row of another request blocks here until that request's
            // transaction ends; an expired one is taken over.
            let claimed: Result<Option<bool>, sqlx::Error> = sqlx::query_scalar(
                "INSERT INTO gateway.idempotency_keys AS k (user_id, key_digest, route, fingerprint)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, key_digest) DO UPDATE
                     SET route = EXCLUDED.route, fingerprint = EXCLUDED.fingerprint,
                         status = NULL, content_type = NULL, body = NULL, created_at = now()
                     WHERE k.created_at < now() - make_interval(secs => $5)
                 RETURNING true",
            )
            .bind(user_id)
            .bind(&digest)
            .bind(&route)
            .bind(&fingerprint)
            .bind(KEEP.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await;
            match claimed {
                Ok(claimed) => break (tx, claimed),
                Err(e) if is_lock_timeout(&e) => {
                    let _ = tx.rollback().await;
                    if started.elapsed() >= WAIT_FOR_FIRST {
                        return Err(in_flight());
                    }
                    tokio::time::sleep(TRY_PAUSE).await;
                }
                Err(e) => return Err(unavailable(&e)),
            }
        };

        if claimed.is_none() {
            let stored: Option<Stored> = sqlx::query_as(
                "SELECT fingerprint, status, content_type, body FROM gateway.idempotency_keys
                 WHERE user_id = $1 AND key_digest = $2",
            )
            .bind(user_id)
            .bind(&digest)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| unavailable(&e))?;
            let _ = tx.rollback().await;
            return match stored {
                Some(stored) if stored.fingerprint != fingerprint => Err(ErrorBody::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for another request",
                )),
                Some(stored) => {
                    metrics::counter!("onsale_idempotent_replays_total").increment(1);
                    tracing::info!(%user_id, route, "request replayed for its idempotency key");
                    stored.replay().ok_or_else(in_flight)
                }
                // Forgotten between the two statements (expired and purged).
                None => Err(in_flight()),
            };
        }

        let response = next.run(Request::from_parts(parts, Body::from(body))).await;
        if !response.status().is_success() {
            let _ = tx.rollback().await;
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
        .bind(&digest)
        .bind(head.status.as_u16() as i16)
        .bind(content_type)
        .bind(body.as_ref())
        .execute(&mut *tx)
        .await;
        let committed = match stored {
            Ok(_) => tx.commit().await,
            Err(error) => Err(error),
        };
        if let Err(error) = committed {
            // The request took effect; only its key is lost, so answer as it did.
            tracing::error!(%error, %user_id, route, "idempotency key not stored: a retry will run again");
        }
        Ok(Response::from_parts(head, Body::from(body)))
    }
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
