//! The webhook signature: `Onsale-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<raw body>">` under the shared secret. The check is constant-time
//! (`Mac::verify_slice`), and a `t` more than [`TOLERANCE_SECONDS`] from now is
//! refused, so a captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use proto::ErrorCode;
use sha2::Sha256;

pub const HEADER: &str = "onsale-signature";
/// How far a signature's timestamp may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 300;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Onsale-Signature header is missing or not t=...,v1=...")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signature's timestamp is more than 300 s from now")]
    Expired,
}

impl SignatureError {
    pub fn code(self) -> ErrorCode {
        match self {
            SignatureError::Malformed | SignatureError::Mismatch => ErrorCode::InvalidSignature,
            SignatureError::Expired => ErrorCode::SignatureExpired,
        }
    }
}

/// Verifies `header` for `body` at `now` (unix seconds). Any `v1` that matches
/// verifies (a provider rotating secrets sends one per secret).
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => {
                signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // Checked before the timestamp, so a forged header learns nothing about the clock.
    let matched = signatures
        .iter()
        .any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test";
    const BODY: &[u8] = br#"{"id":"wh_1","type":"payment.succeeded","order_id":"x"}"#;

    #[test]
    fn a_signed_body_verifies() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_000), Ok(()));
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_300), Ok(()));
        assert_eq!(verify(SECRET, Some(&header), BODY, 700), Ok(()));
    }

    #[test]
    fn a_known_vector() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn tampering_and_age_are_refused() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(
            verify(b"other", Some(&header), BODY, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&header), b"{}", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&header), BODY, 1_301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(SECRET, Some(&header), BODY, 699),
            Err(SignatureError::Expired)
        );
        let moved = header.replace("t=1000", "t=1001");
        assert_eq!(
            verify(SECRET, Some(&moved), BODY, 1_000),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz"] {
            assert!(verify(SECRET, Some(bad), BODY, 1_000).is_err(), "{bad}");
        }
        assert_eq!(
            verify(SECRET, None, BODY, 1_000),
            Err(SignatureError::Malformed)
        );
    }
}
