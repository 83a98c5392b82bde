//! Accounts in `gateway.users`: registration, password checks, roles, and the
//! bootstrap admin. Passwords are stored as argon2id PHC strings.
//!
//! Hashing is deliberately slow (tens of milliseconds of one core), so it runs on the
//! blocking pool, and through a [`Hasher`] that bounds it: at most K hashes at once
//! (one per core by default), a short queue, a bounded wait. A login flood then gets
//! 503 `overloaded` with `Retry-After` for what does not fit, instead of every core
//! and every request with it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use proto::{ErrorBody, ErrorCode, Role, UserId};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::config::AuthSettings;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 128;
pub const MAX_EMAIL_CHARS: usize = 254;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// Taking the admin role from the only admin.
    #[error("the last admin keeps the admin role")]
    LastAdmin,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Every hasher is busy and the queue is full, or the wait for one ran out.
    #[error("too many password checks at once")]
    Busy,
}

impl From<AccountError> for ErrorBody {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Invalid(message) => ErrorBody::new(ErrorCode::InvalidRequest, message),
            AccountError::EmailTaken => {
                ErrorBody::new(ErrorCode::EmailTaken, "an account with this email exists")
            }
            AccountError::InvalidCredentials => {
                ErrorBody::new(ErrorCode::InvalidCredentials, "wrong email or password")
            }
            AccountError::UserNotFound(id) => {
                ErrorBody::new(ErrorCode::UserNotFound, format!("user {id} does not exist"))
            }
            AccountError::LastAdmin => ErrorBody::new(
                ErrorCode::LastAdmin,
                "this is the only admin: make another account admin first",
            ),
            AccountError::Database(cause) => {
                tracing::error!(error = %cause, "account query failed");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "accounts are unavailable, try again shortly",
                )
            }
            AccountError::Hashing(cause) => {
                tracing::error!(error = %cause, "password hashing failed");
                ErrorBody::new(ErrorCode::Internal, "internal error")
            }
            // The `overloaded` body carries its Retry-After (proto::http).
            AccountError::Busy => ErrorBody::new(
                ErrorCode::Overloaded,
                "too many sign-ins at once, try again in a second",
            ),
        }
    }
}

/// Lower-cases and checks an email address. Deliberately loose: the mail server is
/// the judge of deliverability, this only refuses what cannot be an address.
pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    // The length is the one sent, spaces included (the OpenAPI schema's maxLength).
    let sent_chars = email.chars().count();
    let email = email.trim().to_lowercase();
    let valid = sent_chars <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(AccountError::Invalid(format!(
            "{email:?} is not an email address"
        )))
    }
}

pub fn check_password(password: &str) -> Result<(), AccountError> {
    let chars = password.chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )))
    }
}

/// Runs password hashes on the blocking pool, at most `concurrency` at once, with at
/// most `queue` more waiting, each for at most `wait`.
pub struct Hasher {
    permits: std::sync::Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    wait: Duration,
}

/// Counts a waiter out however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hasher {
    pub fn new(concurrency: usize, queue: usize, wait: Duration) -> Self {
        Self {
            permits: std::sync::Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            queue,
            wait,
        }
    }

    pub fn from_settings(settings: &AuthSettings) -> Self {
        Self::new(
            settings.hash_concurrency(),
            settings.hash_queue,
            Duration::from_millis(settings.hash_wait_ms),
        )
    }

    /// Runs `job` on the blocking pool once a hasher is free; `Busy` when none is
    /// free in time, or too many wait already.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = Waiting(&self.waiting);
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.queue {
                    drop(waiting);
                    return Err(refused("queue full"));
                }
                let acquired =
                    tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
                drop(waiting);
                match acquired {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return Err(refused("closed")),
                    Err(_elapsed) => return Err(refused("wait ran out")),
                }
            }
        };
        // The permit travels with the job: a request that goes away while its hash
        // runs frees nothing early, because the core stays busy until the hash ends.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| AccountError::Hashing(e.to_string()))?
    }

    async fn hash_password(&self, password: SecretString) -> Result<String, AccountError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| AccountError::Hashing(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash (unknown email), checks a
    /// decoy, so that a wrong email costs as much as a wrong password.
    async fn verify_password(
        &self,
        password: SecretString,
        hash: Option<String>,
    ) -> Result<bool, AccountError> {
        self.run(move || {
            // The decoy is made on first use, here on the blocking pool too.
            let hash = hash.as_deref().unwrap_or(DECOY_HASH.as_str());
            let parsed =
                PasswordHash::new(hash).map_err(|e| AccountError::Hashing(e.to_string()))?;
            Ok(Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }
}

fn refused(why: &'static str) -> AccountError {
    metrics::counter!("onsale_password_checks_refused_total").increment(1);
    tracing::debug!(why, "password check refused: hashers busy");
    AccountError::Busy
}

/// A hash no password matches, checked when the email is unknown.
static DECOY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

/// An account as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Account {
    pub user_id: UserId,
    pub email: String,
    pub role: String,
    /// The version its new tokens carry (`gateway.users.token_version`).
    pub token_version: i64,
    /// It confirmed its email address (`gateway.users.email_verified_at`); its new
    /// tokens say so (`evf`).
    pub email_verified: bool,
}

impl Account {
    pub fn role(&self) -> Role {
        // The column's CHECK constraint admits only the three role names.
        Role::parse(&self.role).unwrap_or(Role::Fan)
    }
}

/// Creates an account with `role`; its address counts as unconfirmed and no email
/// is sent (a fan's sign-up is [`sign_up`]).
pub async fn register(
    pool: &PgPool,
    hasher: &Hasher,
    email: &str,
    password: SecretString,
    role: Role,
) -> Result<UserId, AccountError> {
    create(pool, hasher, email, password, role, false).await
}

/// A fan's sign-up. With `confirm` (confirmation required), the account's first
/// confirmation token and the event that emails it are written in the account's
/// own transaction: no account without its email, no email without its account.
pub async fn sign_up(
    pool: &PgPool,
    hasher: &Hasher,
    email: &str,
    password: SecretString,
    confirm: bool,
) -> Result<UserId, AccountError> {
    create(pool, hasher, email, password, Role::Fan, confirm).await
}

async fn create(
    pool: &PgPool,
    hasher: &Hasher,
    email: &str,
    password: SecretString,
    role: Role,
    confirm: bool,
) -> Result<UserId, AccountError> {
    let email = normalize_email(email)?;
    check_password(password.expose_secret())?;
    let hash = hasher.hash_password(password).await?;
    let user_id = UserId::new();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO gateway.users (user_id, email, password_hash, role) VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(&email)
    .bind(&hash)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.is_unique_violation() => AccountError::EmailTaken,
        other => AccountError::Database(other),
    })?;
    if confirm {
        crate::verification::request(&mut tx, user_id, &email).await?;
    }
    tx.commit().await?;
    metrics::counter!("onsale_accounts_registered_total").increment(1);
    tracing::info!(%user_id, role = role.as_str(), confirm, "account registered");
    Ok(user_id)
}

/// The account whose email and password match.
pub async fn authenticate(
    pool: &PgPool,
    hasher: &Hasher,
    email: &str,
    password: SecretString,
) -> Result<Account, AccountError> {
    // What cannot be an address has no account: no query (a NUL would not even
    // reach Postgres), but the same hashing work as a wrong password.
    let email = normalize_email(email).unwrap_or_default();
    let row: Option<(UserId, String, String, i64, bool, String)> = if email.is_empty() {
        None
    } else {
        sqlx::query_as(
            "SELECT user_id, email, role, token_version, email_verified_at IS NOT NULL,
                    password_hash
             FROM gateway.users WHERE email = $1",
        )
        .bind(&email)
        .fetch_optional(pool)
        .await?
    };
    let (account, hash) = match row {
        Some((user_id, email, role, token_version, email_verified, hash)) => (
            Some(Account {
                user_id,
                email,
                role,
                token_version,
                email_verified,
            }),
            Some(hash),
        ),
        None => (None, None),
    };
    match (hasher.verify_password(password, hash).await?, account) {
        (true, Some(account)) => Ok(account),
        _ => Err(AccountError::InvalidCredentials),
    }
}

pub async fn get(pool: &PgPool, user_id: UserId) -> Result<Account, AccountError> {
    sqlx::query_as(
        "SELECT user_id, email, role, token_version, email_verified_at IS NOT NULL AS email_verified
         FROM gateway.users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .ok_or(AccountError::UserNotFound(user_id))
}

/// Gives `user_id` the role `role`, on `by`'s word, and records the change in
/// `gateway.role_changes`. Refused when it would leave nobody with the admin role:
/// the admins are locked first, so two admins demoting each other at once cannot
/// both succeed. A change raises the account's token version (its tokens carrying
/// the old role are refused once the caller publishes it); returns whether the role
/// changed.
pub async fn set_role(
    pool: &PgPool,
    user_id: UserId,
    role: Role,
    by: UserId,
) -> Result<(Account, bool), AccountError> {
    let mut tx = pool.begin().await?;
    let admins: Vec<UserId> = sqlx::query_scalar(
        "SELECT user_id FROM gateway.users WHERE role = 'admin' ORDER BY user_id FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await?;
    if role != Role::Admin && admins == [user_id] {
        return Err(AccountError::LastAdmin);
    }
    let from: String =
        sqlx::query_scalar("SELECT role FROM gateway.users WHERE user_id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(AccountError::UserNotFound(user_id))?;
    let account: Account = sqlx::query_as(
        "WITH logged AS (INSERT INTO gateway.role_changes (user_id, from_role, to_role, changed_by)
                         SELECT $1, $3, $2, $4 WHERE $3 <> $2)
         UPDATE gateway.users
            SET role = $2, token_version = token_version + (CASE WHEN $3 <> $2 THEN 1 ELSE 0 END)
          WHERE user_id = $1
          RETURNING user_id, email, role, token_version, email_verified_at IS NOT NULL AS email_verified",
    )
    .bind(user_id)
    .bind(role.as_str())
    .bind(&from)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let changed = from != role.as_str();
    if changed {
        tracing::info!(target: "audit", %user_id, from, to = role.as_str(), by = %by, "role changed");
    }
    Ok((account, changed))
}

/// Makes sure the bootstrap admin exists with this password and the admin role. Its
/// address counts as confirmed: whoever set `ONSALE_BOOTSTRAP_ADMIN` vouches for it.
pub async fn ensure_admin(
    pool: &PgPool,
    hasher: &Hasher,
    email: &str,
    password: SecretString,
) -> Result<UserId, AccountError> {
    let email = normalize_email(email)?;
    check_password(password.expose_secret())
        .map_err(|e| AccountError::Invalid(format!("ONSALE_BOOTSTRAP_ADMIN: {e}")))?;
    let hash = hasher.hash_password(password).await?;
    let user_id: UserId = sqlx::query_scalar(
        "INSERT INTO gateway.users (user_id, email, password_hash, role, email_verified_at)
         VALUES ($1, $2, $3, 'admin', now())
         ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin',
             email_verified_at = coalesce(gateway.users.email_verified_at, now())
         RETURNING user_id",
    )
    .bind(UserId::new())
    .bind(&email)
    .bind(&hash)
    .fetch_one(pool)
    .await?;
    tracing::info!(%user_id, "bootstrap admin ready");
    Ok(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            normalize_email("  Fan@Example.COM ").ok().as_deref(),
            Some("fan@example.com")
        );
        for bad in [
            "",
            "fan",
            "fan@",
            "@example.com",
            "fan@example",
            "fan@@example.com",
            "f an@example.com",
            "fan@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_have_bounded_length() {
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert!(check_password("long enough pass").is_ok());
    }

    fn hasher() -> Hasher {
        Hasher::new(2, 4, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = hasher();
        let hash = hasher
            .hash_password(SecretString::from("correct horse"))
            .await
            .ok();
        assert!(hash.is_some());
        assert_eq!(
            hasher
                .verify_password(SecretString::from("correct horse"), hash.clone())
                .await
                .ok(),
            Some(true)
        );
        assert_eq!(
            hasher
                .verify_password(SecretString::from("wrong horse!"), hash)
                .await
                .ok(),
            Some(false)
        );
        assert_eq!(
            hasher
                .verify_password(SecretString::from("correct horse"), None)
                .await
                .ok(),
            Some(false),
            "the decoy matches nothing"
        );
    }

    #[tokio::test]
    async fn a_full_hasher_refuses_at_once_and_frees_its_waiters() {
        // One hasher, no queue: while a job runs, another is refused without waiting.
        let hasher = std::sync::Arc::new(Hasher::new(1, 0, Duration::from_secs(5)));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let running = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                hasher
                    .run(move || {
                        let _ = started_tx.send(());
                        let _ = finish_rx.recv();
                        Ok(())
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .expect("join")
            .expect("the job started");
        assert!(matches!(
            hasher.run(|| Ok(())).await,
            Err(AccountError::Busy)
        ));
        assert_eq!(hasher.waiting.load(Ordering::Relaxed), 0);
        let _ = finish_tx.send(());
        assert!(running.await.expect("join").is_ok());
        assert!(
            hasher.run(|| Ok(())).await.is_ok(),
            "the hasher is free again"
        );
    }
}
