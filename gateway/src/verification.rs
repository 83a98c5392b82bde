//! Confirming an account's email address: tokens in `gateway.email_verifications`,
//! the `account.verification_requested` event that has the notifier email the link,
//! and the confirmation itself (`gateway.users.email_verified_at`).
//!
//! A token is 32 random bytes (base64url), stored as its SHA-256, good once and for
//! [`TOKEN_TTL`]. It travels to the fan in the event (outbox, then the `accounts`
//! topic) and back in the link's fragment (`/verify#token=…`), which browsers never
//! send to a server, so no access log holds it. An account gets at most
//! [`PER_HOUR`] tokens in any hour (sign-up's included): whoever signs up with a
//! stranger's address can send them that many emails, no more.
//!
//! A token confirms the address it was sent to, and only while the account still
//! has that address. Issuing a new one leaves the earlier ones good (emails arrive
//! out of order); using any of them confirms the account. Confirming is idempotent:
//! a second token of a confirmed account confirms nothing new and succeeds; a token
//! used before is refused (`verification_token_used`), and the page says the address
//! is confirmed (using it is what confirmed it).

use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use proto::wire::events::{EventType, NO_SALE, VerificationPayload};
use proto::{ErrorBody, ErrorCode, UserId};
use sqlx::{PgConnection, PgPool};

use crate::accounts::AccountError;
use crate::sessions::{MAX_TOKEN_CHARS, digest, new_token};

/// How long a confirmation link works.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Tokens (each an email) an account may be given in any hour.
pub const PER_HOUR: i64 = 3;

/// Makes a confirmation token for `user_id` at `email` and writes the event that
/// emails it, in the caller's transaction (the account's own, at sign-up).
pub async fn request(
    tx: &mut PgConnection,
    user_id: UserId,
    email: &str,
) -> Result<(), sqlx::Error> {
    let token = new_token();
    let expires_at = Utc::now() + chrono::Duration::from_std(TOKEN_TTL).unwrap_or_default();
    sqlx::query(
        "INSERT INTO gateway.email_verifications (token_hash, user_id, email, expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(digest(&token))
    .bind(user_id)
    .bind(email)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let payload = VerificationPayload {
        user_id,
        email: email.to_owned(),
        token,
        expires_at,
    };
    platform::outbox::write(
        tx,
        &[platform::outbox::Message::new(
            EventType::AccountVerificationRequested,
            NO_SALE,
            None,
            &payload,
        )],
    )
    .await?;
    metrics::counter!("onsale_email_verifications_requested_total").increment(1);
    Ok(())
}

/// Why a token confirmed nothing.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("unknown confirmation token")]
    Invalid,
    #[error("confirmation token expired")]
    Expired,
    #[error("confirmation token already used")]
    Used,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl VerifyError {
    fn outcome(&self) -> &'static str {
        match self {
            VerifyError::Invalid => "invalid",
            VerifyError::Expired => "expired",
            VerifyError::Used => "used",
            VerifyError::Database(_) => "error",
        }
    }
}

impl From<VerifyError> for ErrorBody {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Invalid => ErrorBody::new(
                ErrorCode::VerificationTokenInvalid,
                "this confirmation link is not one of ours: copy the whole link from the email",
            ),
            VerifyError::Expired => ErrorBody::new(
                ErrorCode::VerificationTokenExpired,
                "this confirmation link has expired: sign in and ask for another",
            ),
            VerifyError::Used => ErrorBody::new(
                ErrorCode::VerificationTokenUsed,
                "this confirmation link was used already: the address is confirmed",
            ),
            VerifyError::Database(error) => AccountError::from(error).into(),
        }
    }
}

/// A token's row with its account's address: user, address sent to, expiry, used at,
/// the account's address now.
type TokenRow = (UserId, String, DateTime<Utc>, Option<DateTime<Utc>>, String);

/// Confirms the address `token` was sent to; returns the account. The token's row is
/// locked, so two uses at once are one confirmation and one `Used`.
pub async fn verify(pool: &PgPool, token: &str) -> Result<UserId, VerifyError> {
    let outcome = verify_token(pool, token).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(error) => error.outcome(),
    };
    metrics::counter!("onsale_email_verifications_total", "outcome" => label).increment(1);
    outcome
}

async fn verify_token(pool: &PgPool, token: &str) -> Result<UserId, VerifyError> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Err(VerifyError::Invalid);
    }
    let hash = digest(token);
    let mut tx = pool.begin().await?;
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT v.user_id, v.email, v.expires_at, v.used_at, u.email
         FROM gateway.email_verifications v JOIN gateway.users u USING (user_id)
         WHERE v.token_hash = $1
         FOR UPDATE OF v",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, sent_to, expires_at, used_at, email)) = row else {
        return Err(VerifyError::Invalid);
    };
    if used_at.is_some() {
        return Err(VerifyError::Used);
    }
    if expires_at <= Utc::now() {
        return Err(VerifyError::Expired);
    }
    if sent_to != email {
        // The account's address changed since: this link confirms the old one.
        return Err(VerifyError::Invalid);
    }
    sqlx::query(
        "WITH used AS (UPDATE gateway.email_verifications SET used_at = now() WHERE token_hash = $2)
         UPDATE gateway.users SET email_verified_at = coalesce(email_verified_at, now())
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(%user_id, "email address confirmed");
    Ok(user_id)
}

/// What a request for another link did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resent {
    /// A new link is on its way.
    Sent,
    /// The address is confirmed already: nothing sent.
    AlreadyVerified,
}

/// Why no link was sent.
#[derive(Debug)]
pub enum ResendError {
    /// [`PER_HOUR`] links went out within the hour: the next may go after this.
    Throttled(Duration),
    Account(AccountError),
}

impl From<sqlx::Error> for ResendError {
    fn from(error: sqlx::Error) -> Self {
        ResendError::Account(error.into())
    }
}

impl IntoResponse for ResendError {
    fn into_response(self) -> Response {
        match self {
            ResendError::Throttled(wait) => {
                metrics::counter!("onsale_rate_limited_total", "limiter" => "verification_email")
                    .increment(1);
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                let mut response = ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!(
                        "{PER_HOUR} confirmation emails went to this address within the hour; \
                         ask again in {seconds} s"
                    ),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(seconds));
                response
            }
            ResendError::Account(error) => ErrorBody::from(error).into_response(),
        }
    }
}

/// Sends `user_id` another confirmation link, unless its address is confirmed or it
/// had [`PER_HOUR`] within the hour. The account's row is locked, so requests at
/// once are counted one after another.
pub async fn resend(pool: &PgPool, user_id: UserId) -> Result<Resent, ResendError> {
    let mut tx = pool.begin().await?;
    let account: Option<(String, bool)> = sqlx::query_as(
        "SELECT email, email_verified_at IS NOT NULL FROM gateway.users
         WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((email, verified)) = account else {
        return Err(ResendError::Account(AccountError::UserNotFound(user_id)));
    };
    if verified {
        return Ok(Resent::AlreadyVerified);
    }
    let (sent, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(created_at) FROM gateway.email_verifications
         WHERE user_id = $1 AND created_at > now() - interval '1 hour'",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    if sent >= PER_HOUR {
        let free_at = oldest.unwrap_or_else(Utc::now) + chrono::Duration::hours(1);
        let wait = (free_at - Utc::now()).to_std().unwrap_or_default();
        return Err(ResendError::Throttled(wait));
    }
    request(&mut tx, user_id, &email).await?;
    tx.commit().await?;
    tracing::info!(%user_id, "confirmation email requested again");
    Ok(Resent::Sent)
}

/// Forgets tokens expired more than a week ago (the gateway's housekeeping).
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM gateway.email_verifications WHERE expires_at < now() - interval '7 days'",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in unpadded base64url");
        assert!(a.len() <= MAX_TOKEN_CHARS);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "safe in a URL fragment: {a}"
        );
        assert_eq!(digest(&a).len(), 32);
    }
}
