//! A ticket's code: a compact JWS (RFC 7515) signed with Ed25519 (`alg: EdDSA`,
//! RFC 8037), the event key's `kid` in its header, [`TicketClaims`] as its payload.
//! Anyone with the event's public key verifies it, offline; only onsale signs.
//!
//! Ed25519 signatures are deterministic, so a ticket's code is the same every time
//! it is drawn, until its version changes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use proto::wire::tickets::TicketClaims;
use serde::{Deserialize, Serialize};

/// The longest code accepted for verification: a real one is about 330 bytes.
pub const MAX_CODE_BYTES: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

/// Signs `claims` under `kid`.
pub fn sign(key: &SigningKey, kid: &str, claims: &TicketClaims) -> String {
    let header = B64.encode(
        serde_json::to_vec(&Header {
            alg: "EdDSA".into(),
            kid: kid.into(),
        })
        .expect("a header serializes"),
    );
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
}

/// Why a code is refused before any ledger is read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("not a ticket code")]
    Malformed,
    #[error("signed with an algorithm other than EdDSA")]
    Algorithm,
    #[error("signed with a key onsale does not know")]
    UnknownKey,
    #[error("the signature does not verify (forged or altered)")]
    Signature,
}

/// A code taken apart, its signature not yet checked.
pub struct Parsed<'a> {
    pub kid: String,
    signing_input: &'a str,
    signature: Signature,
    payload: Vec<u8>,
}

/// Takes a code apart: header, payload, signature.
pub fn parse(code: &str) -> Result<Parsed<'_>, CodeError> {
    let code = code.trim();
    if code.len() > MAX_CODE_BYTES {
        return Err(CodeError::Malformed);
    }
    let (signing_input, signature) = code.rsplit_once('.').ok_or(CodeError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(CodeError::Malformed)?;
    let header: Header = B64
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(CodeError::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(CodeError::Algorithm);
    }
    let signature: [u8; 64] = B64
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(CodeError::Malformed)?;
    let payload = B64.decode(payload).map_err(|_| CodeError::Malformed)?;
    Ok(Parsed {
        kid: header.kid,
        signing_input,
        signature: Signature::from_bytes(&signature),
        payload,
    })
}

impl Parsed<'_> {
    /// The claims, if `key` made the signature.
    pub fn verify(&self, key: &VerifyingKey) -> Result<TicketClaims, CodeError> {
        key.verify_strict(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| CodeError::Signature)?;
        serde_json::from_slice(&self.payload).map_err(|_| CodeError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{EventId, TicketId};

    fn claims() -> TicketClaims {
        TicketClaims {
            tid: TicketId::new(),
            v: 1,
            ev: EventId::new(),
            seat: "Floor-A-1".into(),
            nbf: 1_800_000_000,
            exp: 1_800_086_400,
        }
    }

    #[test]
    fn a_signed_code_verifies_with_its_key_and_not_with_another() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let claims = claims();
        let code = sign(&key, "k1", &claims);
        let parsed = parse(&code).expect("parses");
        assert_eq!(parsed.kid, "k1");
        assert_eq!(parsed.verify(&key.verifying_key()), Ok(claims.clone()));
        assert_eq!(
            parsed.verify(&other.verifying_key()),
            Err(CodeError::Signature)
        );
        // Deterministic: the same ticket draws the same code.
        assert_eq!(sign(&key, "k1", &claims), code);
        assert!(code.len() < 400, "compact enough for a QR: {}", code.len());
    }

    #[test]
    fn an_altered_payload_or_header_does_not_verify() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let code = sign(&key, "k1", &claims());
        let mut forged = claims();
        forged.seat = "Floor-A-2".into();
        let forged_payload = B64.encode(serde_json::to_vec(&forged).expect("json"));
        let parts: Vec<&str> = code.split('.').collect();
        let altered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            parse(&altered)
                .expect("parses")
                .verify(&key.verifying_key()),
            Err(CodeError::Signature)
        );
        let none = format!(
            "{}.{}.{}",
            B64.encode(br#"{"alg":"none","kid":"k1"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(parse(&none).err(), Some(CodeError::Algorithm));
        for junk in ["", "abc", "a.b", "a.b.c", &"x".repeat(2000)] {
            assert_eq!(parse(junk).err(), Some(CodeError::Malformed), "{junk:.20}");
        }
    }
}
