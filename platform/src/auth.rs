//! Verifying bearer tokens, and the verified caller as an extractor.
//!
//! The gateway issues tokens (HS256, signed with the deployment's secret) and every
//! service that serves HTTP verifies them with the same rules: the algorithm is
//! pinned, and `exp`, `iss` and `aud` are required and checked. A service mounted
//! behind the gateway finds the caller already verified in the request extensions.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use proto::{ErrorBody, ErrorCode, Role, UserId};

/// The only algorithm onsale signs or accepts.
pub const ALGORITHM: Algorithm = Algorithm::HS256;

/// Shortest signing secret accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    /// Seconds since the epoch.
    pub iat: i64,
    pub exp: i64,
    /// The session (a sign-in and its refreshes) the token belongs to; absent in
    /// tokens the tools sign for themselves, which no sign-out can end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<uuid::Uuid>,
    /// The account's token version when the token was issued: raised by a role
    /// change or by ending every session, which refuses every older token.
    #[serde(default)]
    pub ver: i64,
    /// The account had confirmed its email address when the token was issued
    /// (`gateway.users.email_verified_at`), so a join can require it without a
    /// query. Absent (false) in tokens issued before the account confirmed: a
    /// refresh reads the account again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evf: bool,
}

/// The settings a verifier and an issuer must agree on.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenSettings {
    /// The key new tokens are signed with.
    pub jwt_secret: SecretString,
    /// The key before the last rotation: tokens it signed still verify until they
    /// expire, so a rotation signs nobody out (docs/SECURITY.md).
    #[serde(default)]
    pub jwt_previous_secret: Option<SecretString>,
    pub issuer: String,
    pub audience: String,
}

/// A signing key's id (the `kid` of the tokens it signs): the first 8 bytes of the
/// SHA-256 of the secret, in hex. Names the key without revealing it.
pub fn key_id(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(secret.as_bytes())[..8])
}

impl TokenSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt_secret.expose_secret().len() < MIN_SECRET_BYTES {
            return Err(format!(
                "auth.jwt_secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        crate::settings::refuse_published_secret(
            "auth.jwt_secret (ONSALE_AUTH__JWT_SECRET)",
            self.jwt_secret.expose_secret(),
        )?;
        if let Some(previous) = &self.jwt_previous_secret {
            if previous.expose_secret().len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "auth.jwt_previous_secret must be at least {MIN_SECRET_BYTES} bytes"
                ));
            }
            if previous.expose_secret() == self.jwt_secret.expose_secret() {
                return Err("auth.jwt_previous_secret is the current secret".to_owned());
            }
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("auth.issuer and auth.audience must not be empty".to_owned());
        }
        Ok(())
    }
}

/// Signs access tokens: the gateway's logins, and the tools and tests that act as a
/// fan or an operator without one. The only place a token is signed.
pub struct TokenIssuer {
    key: jsonwebtoken::EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
    ttl_seconds: u64,
}

impl TokenIssuer {
    pub fn new(settings: &TokenSettings, ttl_seconds: u64) -> Self {
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(
                settings.jwt_secret.expose_secret().as_bytes(),
            ),
            kid: key_id(settings.jwt_secret.expose_secret()),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl_seconds,
        }
    }

    /// An issuer for onsale's own issuer and audience (`onsale`) with `secret`:
    /// what the tools and tests use.
    pub fn onsale(secret: &str, ttl_seconds: u64) -> Self {
        Self::new(
            &TokenSettings {
                jwt_secret: SecretString::from(secret.to_owned()),
                jwt_previous_secret: None,
                issuer: "onsale".into(),
                audience: "onsale".into(),
            },
            ttl_seconds,
        )
    }

    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    /// A token saying `user_id` holds `role`, valid from now for the issuer's TTL,
    /// outside any session (the tools' and tests' tokens). It says the email is
    /// confirmed: whoever signs with the deployment's secret vouches for the bearer
    /// already, and a tool's user has no address to confirm.
    pub fn issue(
        &self,
        user_id: UserId,
        role: Role,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.issue_in(user_id, role, None, 0, true)
    }

    /// A token of session `sid` at the account's token version `ver`, saying
    /// whether the account's email address is confirmed (`evf`).
    pub fn issue_in(
        &self,
        user_id: UserId,
        role: Role,
        sid: Option<uuid::Uuid>,
        ver: i64,
        email_verified: bool,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_seconds as i64,
            sid,
            ver,
            evf: email_verified,
        };
        let mut header = jsonwebtoken::Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// Checks bearer tokens: the signature (by the key its `kid` names: the current
/// one or the one before the last rotation), the claims, and the revocation list.
/// Cheap to clone behind an `Arc`.
#[derive(Clone)]
pub struct TokenVerifier {
    /// The current key first; a token without `kid` is tried with it.
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
    revocations: Arc<crate::sessions::Revocations>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(settings: &TokenSettings) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Clocks of one deployment agree to within seconds, not a minute.
        validation.leeway = 5;
        let keys = std::iter::once(&settings.jwt_secret)
            .chain(settings.jwt_previous_secret.as_ref())
            .map(|secret| {
                (
                    key_id(secret.expose_secret()),
                    DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                )
            })
            .collect();
        Self {
            keys,
            validation,
            revocations: Arc::default(),
        }
    }

    /// This verifier, refusing what `revocations` lists (kept current by
    /// [`crate::sessions::spawn_listener`]).
    pub fn with_revocations(mut self, revocations: Arc<crate::sessions::Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    pub fn revocations(&self) -> &Arc<crate::sessions::Revocations> {
        &self.revocations
    }

    /// The claims of a token that verifies and is not revoked.
    pub fn verify(&self, token: &str) -> Result<Claims, ErrorBody> {
        let claims = self.verify_signed(token)?;
        self.revocations.check(&claims)?;
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, ErrorBody> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|_| ErrorBody::new(ErrorCode::InvalidToken, "token is malformed"))?
            .kid;
        let key = match kid {
            None => &self.keys[0].1,
            Some(kid) => {
                &self
                    .keys
                    .iter()
                    .find(|(id, _)| *id == kid)
                    .ok_or_else(|| {
                        ErrorBody::new(
                            ErrorCode::InvalidToken,
                            "token is signed with a key this server does not know",
                        )
                    })?
                    .1
            }
        };
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token has expired",
                    ErrorKind::InvalidSignature => "token signature does not verify",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "token algorithm is not accepted"
                    }
                    ErrorKind::InvalidIssuer => "token issuer is not accepted",
                    ErrorKind::InvalidAudience => "token audience is not accepted",
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                    _ => "token is malformed",
                };
                ErrorBody::new(ErrorCode::InvalidToken, why)
            })
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer_token(parts: &Parts) -> Result<Option<&str>, ErrorBody> {
    bearer_token_in(&parts.headers)
}

/// The bearer token in `headers`, if there is one.
pub fn bearer_token_in(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ErrorBody> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ErrorBody::new(ErrorCode::InvalidToken, "authorization header is not ASCII")
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(ErrorBody::new(
            ErrorCode::InvalidToken,
            "authorization header must be `Bearer <token>`",
        )),
    }
}

/// A caller whose token verified. As an extractor it rejects requests without a
/// valid token (401); [`Caller::require`] then checks the role (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub role: Role,
    /// The session its token belongs to, if any (see [`Claims::sid`]).
    pub session: Option<uuid::Uuid>,
    /// Its token says the account's email address is confirmed ([`Claims::evf`]).
    pub email_verified: bool,
}

impl Caller {
    pub fn require(self, role: Role) -> Result<Self, ErrorBody> {
        if self.role.includes(role) {
            Ok(self)
        } else {
            Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("this needs the {} role", role.as_str()),
            ))
        }
    }
}

impl From<Claims> for Caller {
    fn from(claims: Claims) -> Self {
        Self {
            user_id: claims.sub,
            role: claims.role,
            session: claims.sid,
            email_verified: claims.evf,
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<TokenVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ErrorBody;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        let token = bearer_token(parts)?.ok_or_else(|| {
            ErrorBody::new(ErrorCode::Unauthenticated, "this needs a bearer token")
        })?;
        let caller = Caller::from(Arc::<TokenVerifier>::from_ref(state).verify(token)?);
        parts.extensions.insert(caller);
        Ok(caller)
    }
}

/// A caller whose token verified and whose role is at least the one the type
/// names, as an extractor: the role a route needs is in the handler's signature,
/// beside the `security(("bearer" = ["<role>"]))` its OpenAPI entry declares (the
/// gateway's contract test calls every such operation with a lesser role).
macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(pub Caller);

        impl<S> FromRequestParts<S> for $name
        where
            Arc<TokenVerifier>: FromRef<S>,
            S: Send + Sync,
        {
            type Rejection = ErrorBody;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                Caller::from_request_parts(parts, state)
                    .await?
                    .require($role)
                    .map(Self)
            }
        }
    };
}

role_extractor!(
    Operator,
    Role::Operator,
    "A caller with the operator role or above (401 without a token, 403 below it)."
);
role_extractor!(
    Admin,
    Role::Admin,
    "A caller with the admin role (401 without a token, 403 below it)."
);
