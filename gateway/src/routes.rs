//! The gateway's own routes: accounts and tokens, health.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::auth::{Admin, Caller};
use platform::http::{Json, Path};
use proto::wire::auth::{
    AccessToken, Credentials, EmailVerification, RefreshRequest, Registered, SetRole, User,
    VerifyEmail,
};
use proto::{ErrorBody, ErrorCode, UserId};
use secrecy::SecretString;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::GatewayState;
use crate::accounts::{self, Account, AccountError};
use crate::sessions;
use crate::tokens::TokenIssuer;
use crate::verification::{self, Resent};

pub fn router() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
        .routes(routes!(me))
        .routes(routes!(set_role))
}

impl From<Account> for User {
    fn from(account: Account) -> Self {
        User {
            user_id: account.user_id,
            role: account.role(),
            email: account.email,
            email_verified: account.email_verified,
        }
    }
}

/// Create a fan account.
///
/// While joining a line needs a confirmed address (`ONSALE_AUTH__REQUIRE_VERIFIED_EMAIL`),
/// a confirmation link is emailed to it.
#[utoipa::path(
    post, path = "/v1/auth/register", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, body = Registered),
        (status = 409, body = ErrorBody, description = "`email_taken`"),
        (status = 422, body = ErrorBody, description = "`invalid_request`: not an email, or a password of the wrong length"),
        (status = 503, body = ErrorBody, description = "`overloaded`: too many password checks at once; `Retry-After` says when to come back"),
    )
)]
async fn register(
    State(state): State<GatewayState>,
    Json(credentials): Json<Credentials>,
) -> Result<(StatusCode, Json<Registered>), ErrorBody> {
    let password = SecretString::from(credentials.password);
    let user_id = accounts::sign_up(
        &state.pool,
        &state.hasher,
        &credentials.email,
        password,
        state.require_verified_email,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Registered { user_id })))
}

/// Exchange email and password for a bearer token.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, body = AccessToken),
        (status = 401, body = ErrorBody, description = "`invalid_credentials`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: too many failed sign-ins for this account (from any address) or from this address; `Retry-After` says when to come back"),
        (status = 503, body = ErrorBody, description = "`overloaded`: too many password checks at once; `Retry-After` says when to come back"),
    )
)]
async fn login(
    State(state): State<GatewayState>,
    State(issuer): State<Arc<TokenIssuer>>,
    Json(credentials): Json<Credentials>,
) -> Result<Json<AccessToken>, Response> {
    state
        .signin
        .attempt(&credentials.email)
        .await
        .map_err(|throttled| {
            metrics::counter!("onsale_logins_total", "outcome" => "throttled").increment(1);
            throttled.into_response()
        })?;
    let account = match accounts::authenticate(
        &state.pool,
        &state.hasher,
        &credentials.email,
        SecretString::from(credentials.password),
    )
    .await
    {
        Ok(account) => account,
        Err(error) => {
            let outcome = match error {
                AccountError::Busy => "overloaded",
                _ => "refused",
            };
            metrics::counter!("onsale_logins_total", "outcome" => outcome).increment(1);
            // A wrong password stays counted; an attempt the hashers never
            // checked is given back.
            if !matches!(error, AccountError::InvalidCredentials) {
                state.signin.not_tried(&credentials.email).await;
            }
            return Err(ErrorBody::from(error).into_response());
        }
    };
    state.signin.succeeded(&credentials.email).await;
    let expires_at = chrono::Utc::now()
        + chrono::Duration::from_std(state.refresh_ttl).unwrap_or(chrono::Duration::days(14));
    let (session_id, refresh_token) = sessions::open(&state.pool, account.user_id, expires_at)
        .await
        .map_err(|e| ErrorBody::from(AccountError::from(e)).into_response())?;
    metrics::counter!("onsale_logins_total", "outcome" => "ok").increment(1);
    pair(&issuer, &account, session_id, refresh_token, expires_at)
        .map(Json)
        .map_err(IntoResponse::into_response)
}

/// An access token for `account` in `session_id`, with the session's next refresh
/// token.
fn pair(
    issuer: &TokenIssuer,
    account: &accounts::Account,
    session_id: uuid::Uuid,
    refresh_token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<AccessToken, ErrorBody> {
    let access_token = issuer
        .issue_in(
            account.user_id,
            account.role(),
            Some(session_id),
            account.token_version,
            account.email_verified,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "signing a token failed");
            ErrorBody::new(ErrorCode::Internal, "internal error")
        })?;
    Ok(AccessToken {
        access_token,
        token_type: "Bearer".into(),
        expires_in: issuer.ttl_seconds(),
        refresh_token,
        refresh_expires_in: (expires_at - chrono::Utc::now()).num_seconds().max(0) as u64,
    })
}

/// Applies a revocation here at once (this gateway's next request already sees it)
/// and publishes it to every other node, remembered as long as a token it refuses
/// can live, with the verifiers' leeway.
async fn revoke(
    state: &GatewayState,
    issuer: &TokenIssuer,
    revoked: platform::sessions::Revoked,
) -> Result<(), ErrorBody> {
    platform::sessions::revoke(
        state.verifier.revocations(),
        &mut state.redis.clone(),
        &state.key_prefix,
        revoked,
        std::time::Duration::from_secs(issuer.ttl_seconds() + 60),
    )
    .await
    .map_err(|error| {
        tracing::error!(%error, "publishing a revocation failed");
        ErrorBody::new(
            ErrorCode::ServiceUnavailable,
            "the session could not be ended everywhere; try again shortly",
        )
    })
}

/// Spend a refresh token for a new access token and refresh token.
///
/// The refresh token is single use: the answer carries the next one. A spent one
/// presented again ends its session (`refresh_token_reused`): two parties held it.
#[utoipa::path(
    post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = AccessToken),
        (status = 401, body = ErrorBody, description = "`invalid_token`: not a refresh token of ours; `session_ended`: signed out, or too old to refresh; `refresh_token_reused`: already spent, and the session is now ended"),
    )
)]
async fn refresh(
    State(state): State<GatewayState>,
    State(issuer): State<Arc<TokenIssuer>>,
    Json(RefreshRequest { refresh_token }): Json<RefreshRequest>,
) -> Result<Json<AccessToken>, ErrorBody> {
    match sessions::refresh(&state.pool, &refresh_token).await {
        Ok(refreshed) => {
            metrics::counter!("onsale_refreshes_total", "outcome" => "ok").increment(1);
            pair(
                &issuer,
                &refreshed.account,
                refreshed.session_id,
                refreshed.refresh_token,
                refreshed.expires_at,
            )
            .map(Json)
        }
        Err(sessions::RefreshError::Reused(session_id)) => {
            metrics::counter!("onsale_refreshes_total", "outcome" => "reused").increment(1);
            revoke(
                &state,
                &issuer,
                platform::sessions::Revoked::Session(session_id),
            )
            .await?;
            Err(sessions::RefreshError::Reused(session_id).into())
        }
        Err(error) => {
            metrics::counter!("onsale_refreshes_total", "outcome" => "refused").increment(1);
            Err(error.into())
        }
    }
}

/// End this session: its refresh token stops working and its access tokens are
/// refused at once (`session_ended`), here, on every gateway and on open sockets.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "the session has ended"),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn logout(
    State(state): State<GatewayState>,
    State(issuer): State<Arc<TokenIssuer>>,
    caller: Caller,
) -> Result<StatusCode, ErrorBody> {
    let Some(session_id) = caller.session else {
        return Err(ErrorBody::new(
            ErrorCode::InvalidToken,
            "this token belongs to no session; POST /v1/auth/logout-all ends every token of the account",
        ));
    };
    sessions::end(&state.pool, caller.user_id, session_id)
        .await
        .map_err(AccountError::from)?;
    revoke(
        &state,
        &issuer,
        platform::sessions::Revoked::Session(session_id),
    )
    .await?;
    tracing::info!(target: "audit", user_id = %caller.user_id, %session_id, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the account, on every device: every refresh token and
/// every access token issued so far stops working at once.
#[utoipa::path(
    post, path = "/v1/auth/logout-all", tag = "auth",
    responses(
        (status = 204, description = "every session has ended"),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn logout_all(
    State(state): State<GatewayState>,
    State(issuer): State<Arc<TokenIssuer>>,
    caller: Caller,
) -> Result<StatusCode, ErrorBody> {
    let version = sessions::end_all(&state.pool, caller.user_id)
        .await
        .map_err(AccountError::from)?;
    revoke(
        &state,
        &issuer,
        platform::sessions::Revoked::User {
            user_id: caller.user_id,
            version,
            why: platform::sessions::UserChange::SignedOut,
        },
    )
    .await?;
    tracing::info!(target: "audit", user_id = %caller.user_id, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}

/// Confirm an email address with the token from the confirmation link.
///
/// The account's tokens issued before do not say the address is confirmed: refresh
/// (`POST /v1/auth/refresh`) to get one that does. A second link of a confirmed
/// account succeeds too; a link used before is refused.
#[utoipa::path(
    post, path = "/v1/auth/verify-email", tag = "auth",
    request_body = VerifyEmail,
    responses(
        (status = 200, body = EmailVerification, description = "the address is confirmed"),
        (status = 400, body = ErrorBody, description = "`verification_token_invalid`: not a token of ours"),
        (status = 409, body = ErrorBody, description = "`verification_token_used`: used before (the address it confirmed stays confirmed)"),
        (status = 410, body = ErrorBody, description = "`verification_token_expired`: older than 24 hours; ask for another"),
    )
)]
async fn verify_email(
    State(state): State<GatewayState>,
    Json(VerifyEmail { token }): Json<VerifyEmail>,
) -> Result<Json<EmailVerification>, ErrorBody> {
    verification::verify(&state.pool, &token).await?;
    Ok(Json(EmailVerification {
        email_verified: true,
    }))
}

/// Email the signed-in account another confirmation link.
///
/// 202 when one is on its way; 200, sending nothing, when the address is already
/// confirmed. At most 3 links an hour per account (sign-up's included), then 429
/// with `Retry-After`. Earlier links keep working.
#[utoipa::path(
    post, path = "/v1/auth/verify-email/resend", tag = "auth",
    responses(
        (status = 202, body = EmailVerification, description = "a new link is on its way (`email_verified: false`)"),
        (status = 200, body = EmailVerification, description = "already confirmed: nothing sent (`email_verified: true`)"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`user_not_found`: a token of no account (a tool's)"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: 3 links within the hour; `Retry-After` says when the next may go"),
    ),
    security(("bearer" = []))
)]
async fn resend_verification(
    State(state): State<GatewayState>,
    caller: Caller,
) -> Result<(StatusCode, Json<EmailVerification>), Response> {
    match verification::resend(&state.pool, caller.user_id).await {
        Ok(Resent::Sent) => Ok((
            StatusCode::ACCEPTED,
            Json(EmailVerification {
                email_verified: false,
            }),
        )),
        Ok(Resent::AlreadyVerified) => Ok((
            StatusCode::OK,
            Json(EmailVerification {
                email_verified: true,
            }),
        )),
        Err(error) => Err(error.into_response()),
    }
}

/// The signed-in account.
#[utoipa::path(
    get, path = "/v1/auth/me", tag = "auth",
    responses((status = 200, body = User), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn me(State(state): State<GatewayState>, caller: Caller) -> Result<Json<User>, ErrorBody> {
    Ok(Json(
        accounts::get(&state.pool, caller.user_id).await?.into(),
    ))
}

/// Grant an account a role (admin only). It applies at once: the account's tokens
/// carrying the old role are refused (`token_outdated`) and a refresh carries the new one.
#[utoipa::path(
    put, path = "/v1/users/{user_id}/role", tag = "auth",
    params(("user_id" = UserId, Path)),
    request_body = SetRole,
    responses(
        (status = 200, body = User),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`user_not_found`"),
        (status = 409, body = ErrorBody, description = "`last_admin`: the only admin keeps the role"),
    ),
    security(("bearer" = ["admin"]))
)]
async fn set_role(
    State(state): State<GatewayState>,
    State(issuer): State<Arc<TokenIssuer>>,
    Admin(caller): Admin,
    Path(user_id): Path<UserId>,
    Json(SetRole { role }): Json<SetRole>,
) -> Result<Json<User>, ErrorBody> {
    let (account, changed) = accounts::set_role(&state.pool, user_id, role, caller.user_id).await?;
    if changed {
        // Its tokens say the old role: refused from now on (`token_outdated`); a
        // refresh gives one with the new role.
        revoke(
            &state,
            &issuer,
            platform::sessions::Revoked::User {
                user_id,
                version: account.token_version,
                why: platform::sessions::UserChange::RoleChanged,
            },
        )
        .await?;
    }
    Ok(Json(account.into()))
}
