//! The gateway's own routes: accounts and tokens, health.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::auth::{Admin, Caller};
use platform::http::{Json, Path};
use proto::wire::auth::{AccessToken, Credentials, Registered, SetRole, User};
use proto::{ErrorBody, ErrorCode, Role, UserId};
use secrecy::SecretString;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::GatewayState;
use crate::accounts::{self, Account, AccountError};
use crate::tokens::TokenIssuer;

pub fn router() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(set_role))
}

impl From<Account> for User {
    fn from(account: Account) -> Self {
        User {
            user_id: account.user_id,
            role: account.role(),
            email: account.email,
        }
    }
}

/// Create a fan account.
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
    let user_id = accounts::register(
        &state.pool,
        &state.hasher,
        &credentials.email,
        password,
        Role::Fan,
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
        .check(&credentials.email)
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
            if matches!(error, AccountError::InvalidCredentials) {
                state.signin.failed(&credentials.email).await;
            }
            return Err(ErrorBody::from(error).into_response());
        }
    };
    state.signin.succeeded(&credentials.email).await;
    let access_token = issuer.issue(account.user_id, account.role()).map_err(|e| {
        tracing::error!(error = %e, "signing a token failed");
        ErrorBody::new(ErrorCode::Internal, "internal error").into_response()
    })?;
    metrics::counter!("onsale_logins_total", "outcome" => "ok").increment(1);
    Ok(Json(AccessToken {
        access_token,
        token_type: "Bearer".into(),
        expires_in: issuer.ttl_seconds(),
    }))
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

/// Grant an account a role (admin only). The account's next token carries it.
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
    Admin(caller): Admin,
    Path(user_id): Path<UserId>,
    Json(SetRole { role }): Json<SetRole>,
) -> Result<Json<User>, ErrorBody> {
    let account = accounts::set_role(&state.pool, user_id, role, caller.user_id).await?;
    Ok(Json(account.into()))
}
