//! Issuing access tokens. Verification is `platform::auth::TokenVerifier`, shared with
//! every service; this is the only place tokens are signed.

use jsonwebtoken::{EncodingKey, Header};
use platform::auth::{ALGORITHM, Claims};
use proto::{Role, UserId};
use secrecy::ExposeSecret;

use crate::config::AuthSettings;

pub struct TokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl_seconds: u64,
}

impl TokenIssuer {
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            key: EncodingKey::from_secret(settings.token.jwt_secret.expose_secret().as_bytes()),
            issuer: settings.token.issuer.clone(),
            audience: settings.token.audience.clone(),
            ttl_seconds: settings.token_ttl_seconds,
        }
    }

    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    pub fn issue(
        &self,
        user_id: UserId,
        role: Role,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_seconds as i64,
        };
        jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &self.key)
    }
}
