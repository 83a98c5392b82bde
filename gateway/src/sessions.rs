//! Sessions in `gateway.sessions`: a sign-in, its refresh tokens and its end.
//!
//! A refresh token is 32 random bytes (base64url), stored as its SHA-256 and spent
//! by one use: a refresh gives a new one. A spent token presented again means two
//! parties hold it (one of them may have stolen it), so the session ends for both.
//! A refresh locks its session's row, so two refreshes of one token at once are one
//! refresh and one reuse, never two refreshes.
//!
//! Ending a session here only stops its refreshes; its access tokens are refused
//! by the revocation list (`platform::sessions`), which the routes publish to.

use base64::Engine;
use chrono::{DateTime, Utc};
use proto::{ErrorBody, ErrorCode, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::accounts::Account;

/// Why a session ended (`gateway.sessions.ended_why`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    SignedOut,
    SignedOutEverywhere,
    RefreshTokenReused,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::SignedOut => "signed_out",
            Ended::SignedOutEverywhere => "signed_out_everywhere",
            Ended::RefreshTokenReused => "refresh_token_reused",
        }
    }
}

/// A refresh token's storage form.
pub(crate) fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new refresh token: 256 random bits.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A refresh token's longest plausible length: anything longer is not ours.
pub(crate) const MAX_TOKEN_CHARS: usize = 128;

/// A new session for `user_id`, refreshable until `expires_at`: its id and first
/// refresh token.
pub async fn open(
    pool: &PgPool,
    user_id: UserId,
    expires_at: DateTime<Utc>,
) -> Result<(Uuid, String), sqlx::Error> {
    let session_id = Uuid::now_v7();
    let token = new_token();
    sqlx::query(
        "WITH session AS (INSERT INTO gateway.sessions (session_id, user_id, expires_at)
                          VALUES ($1, $2, $3))
         INSERT INTO gateway.refresh_tokens (token_hash, session_id) VALUES ($4, $1)",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(expires_at)
    .bind(digest(&token))
    .execute(pool)
    .await?;
    Ok((session_id, token))
}

/// What a refresh gave.
pub struct Refreshed {
    pub session_id: Uuid,
    pub account: Account,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a refresh was refused.
#[derive(Debug)]
pub enum RefreshError {
    /// No such token.
    Unknown,
    /// The session had ended, or can no longer be refreshed.
    Ended,
    /// The token was spent before: the session is now ended (its id, to revoke).
    Reused(Uuid),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for RefreshError {
    fn from(error: sqlx::Error) -> Self {
        RefreshError::Database(error)
    }
}

impl From<RefreshError> for ErrorBody {
    fn from(error: RefreshError) -> Self {
        match error {
            RefreshError::Unknown => {
                ErrorBody::new(ErrorCode::InvalidToken, "this refresh token is not known")
            }
            RefreshError::Ended => ErrorBody::new(
                ErrorCode::SessionEnded,
                "this session has ended: sign in again",
            ),
            RefreshError::Reused(_) => ErrorBody::new(
                ErrorCode::RefreshTokenReused,
                "this refresh token was already used: the session has been ended, sign in again",
            ),
            RefreshError::Database(error) => crate::accounts::AccountError::from(error).into(),
        }
    }
}

/// A refresh token's row with its session's: session, spent at, ended at, expires at.
type TokenRow = (
    Uuid,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

/// Spends `token` for a new one, in one transaction with the session's row locked.
pub async fn refresh(pool: &PgPool, token: &str) -> Result<Refreshed, RefreshError> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Err(RefreshError::Unknown);
    }
    let hash = digest(token);
    let mut tx = pool.begin().await?;
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT s.session_id, t.spent_at, s.ended_at, s.expires_at
             FROM gateway.refresh_tokens t JOIN gateway.sessions s USING (session_id)
             WHERE t.token_hash = $1
             FOR UPDATE",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((session_id, spent_at, ended_at, expires_at)) = row else {
        return Err(RefreshError::Unknown);
    };
    if ended_at.is_some() || expires_at <= Utc::now() {
        return Err(RefreshError::Ended);
    }
    if spent_at.is_some() {
        sqlx::query(
            "UPDATE gateway.sessions SET ended_at = now(), ended_why = $2 WHERE session_id = $1",
        )
        .bind(session_id)
        .bind(Ended::RefreshTokenReused.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::warn!(target: "audit", %session_id, "a spent refresh token was used again: session ended");
        return Err(RefreshError::Reused(session_id));
    }
    let next = new_token();
    let account: Account = sqlx::query_as(
        "WITH spent AS (UPDATE gateway.refresh_tokens SET spent_at = now() WHERE token_hash = $2),
              issued AS (INSERT INTO gateway.refresh_tokens (token_hash, session_id) VALUES ($3, $1)),
              touched AS (UPDATE gateway.sessions SET refreshed_at = now() WHERE session_id = $1)
         SELECT u.user_id, u.email, u.role, u.token_version,
                u.email_verified_at IS NOT NULL AS email_verified
         FROM gateway.sessions s JOIN gateway.users u USING (user_id)
         WHERE s.session_id = $1",
    )
    .bind(session_id)
    .bind(&hash)
    .bind(digest(&next))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Refreshed {
        session_id,
        account,
        refresh_token: next,
        expires_at,
    })
}

/// Ends one session; false when it had already ended (or is not `user_id`'s).
pub async fn end(pool: &PgPool, user_id: UserId, session_id: Uuid) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query(
        "UPDATE gateway.sessions SET ended_at = now(), ended_why = $3
         WHERE session_id = $1 AND user_id = $2 AND ended_at IS NULL",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(Ended::SignedOut.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(ended > 0)
}

/// Ends every session of `user_id` and raises its token version (so tokens of no
/// session, and any issued before, are refused too); returns the new version.
pub async fn end_all(pool: &PgPool, user_id: UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH ended AS (UPDATE gateway.sessions SET ended_at = now(), ended_why = $2
                        WHERE user_id = $1 AND ended_at IS NULL)
         UPDATE gateway.users SET token_version = token_version + 1 WHERE user_id = $1
         RETURNING token_version",
    )
    .bind(user_id)
    .bind(Ended::SignedOutEverywhere.as_str())
    .fetch_one(pool)
    .await
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
        assert_eq!(digest(&a).len(), 32);
        assert_ne!(digest(&a), a.as_bytes());
    }
}
