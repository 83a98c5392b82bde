//! Accounts and tokens.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Role, UserId};

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "fan@example.com")]
    pub email: String,
    /// 10 to 128 characters.
    #[schema(example = "correct horse battery")]
    pub password: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Registered {
    pub user_id: UserId,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// Spent by `POST /v1/auth/refresh` for a new pair; single use.
    pub refresh_token: String,
    /// Seconds until the session can no longer be refreshed (sign in again then).
    pub refresh_expires_in: u64,
}

/// The body of `POST /v1/auth/refresh`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: Role,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct User {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    /// Whether the account confirmed its email address (by the link emailed to it).
    #[serde(default)]
    pub email_verified: bool,
}

/// The body of `POST /v1/auth/verify-email`: the token from the confirmation link.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    /// As the link's fragment has it (`/verify#token=...`).
    #[schema(max_length = 128)]
    pub token: String,
}

/// Where an account's email confirmation stands.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EmailVerification {
    /// The address is confirmed. Tokens issued before the confirmation do not say
    /// so: `POST /v1/auth/refresh` gives one that does.
    pub email_verified: bool,
}
