//! Issuing access tokens: `platform::auth::TokenIssuer` (beside the verifier every
//! service shares) with the gateway's settings.

pub use platform::auth::TokenIssuer;

use crate::config::AuthSettings;

/// The issuer of the gateway's logins.
pub fn issuer(settings: &AuthSettings) -> TokenIssuer {
    TokenIssuer::new(&settings.token, settings.token_ttl_seconds)
}
