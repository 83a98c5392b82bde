//! Each event's signing keys (`tickets.keys`): made on the event's first sale, one
//! active at a time; a retired key still verifies the codes it signed. The ring
//! caches them in the process (a key never changes once written).
//!
//! The secret keys live in the ledger: whoever can read `tickets.keys` can mint
//! tickets for its events (docs/TICKETS.md says how to rotate one).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use proto::EventId;
use proto::wire::tickets::CheckinKey;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};

/// An event's active signing key.
pub struct Signer {
    pub kid: String,
    pub key: SigningKey,
}

/// A key that verifies codes, and the event it belongs to.
#[derive(Clone, Copy)]
pub struct Verifier {
    pub event_id: EventId,
    pub key: VerifyingKey,
}

/// The keys this process has read, by event (signing) and by `kid` (verifying).
#[derive(Default)]
pub struct KeyRing {
    signers: RwLock<HashMap<EventId, Arc<Signer>>>,
    verifiers: RwLock<HashMap<String, Verifier>>,
}

/// A key's id: `ed25519-` and the start of its public key's SHA-256, so two keys
/// never share one.
fn kid_of(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    format!("ed25519-{}", B64.encode(&digest[..12]))
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// The event's active signing key, made on first use. Not in a caller's
    /// transaction: two first sales of an event race on the unique index, and the
    /// loser reads the winner's key.
    pub async fn signer(&self, pool: &PgPool, event: EventId) -> Result<Arc<Signer>, sqlx::Error> {
        if let Some(signer) = self.signers.read().expect("key ring").get(&event) {
            return Ok(signer.clone());
        }
        let existing: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT kid, secret_key FROM tickets.keys WHERE event_id = $1 AND retired_at IS NULL",
        )
        .bind(event)
        .fetch_optional(pool)
        .await?;
        let (kid, secret) = match existing {
            Some(found) => found,
            None => {
                let mut secret = [0u8; 32];
                rand::fill(&mut secret);
                let key = SigningKey::from_bytes(&secret);
                let public = key.verifying_key();
                let kid = kid_of(&public);
                sqlx::query(
                    "INSERT INTO tickets.keys (kid, event_id, secret_key, public_key)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(&kid)
                .bind(event)
                .bind(secret.as_slice())
                .bind(public.as_bytes().as_slice())
                .execute(pool)
                .await?;
                // Ours, or the one a concurrent first sale wrote.
                sqlx::query_as(
                    "SELECT kid, secret_key FROM tickets.keys WHERE event_id = $1 AND retired_at IS NULL",
                )
                .bind(event)
                .fetch_one(pool)
                .await?
            }
        };
        let bytes: [u8; 32] = secret
            .try_into()
            .map_err(|_| sqlx::Error::Decode("a ticket key is not 32 bytes".into()))?;
        let signer = Arc::new(Signer {
            kid,
            key: SigningKey::from_bytes(&bytes),
        });
        self.signers
            .write()
            .expect("key ring")
            .insert(event, signer.clone());
        Ok(signer)
    }

    /// The key named `kid`, if onsale made it.
    pub async fn verifier(
        &self,
        db: impl PgExecutor<'_>,
        kid: &str,
    ) -> Result<Option<Verifier>, sqlx::Error> {
        if let Some(verifier) = self.verifiers.read().expect("key ring").get(kid) {
            return Ok(Some(*verifier));
        }
        let row: Option<(EventId, Vec<u8>)> =
            sqlx::query_as("SELECT event_id, public_key FROM tickets.keys WHERE kid = $1")
                .bind(kid)
                .fetch_optional(db)
                .await?;
        let Some((event_id, public)) = row else {
            return Ok(None);
        };
        let key = <[u8; 32]>::try_from(public)
            .ok()
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
            .ok_or_else(|| sqlx::Error::Decode("a ticket public key is not valid".into()))?;
        let verifier = Verifier { event_id, key };
        self.verifiers
            .write()
            .expect("key ring")
            .insert(kid.to_owned(), verifier);
        Ok(Some(verifier))
    }
}

/// The public keys of `event`'s codes, active first (none before its first sale).
pub async fn public_keys(
    db: impl PgExecutor<'_>,
    event: EventId,
) -> Result<Vec<CheckinKey>, sqlx::Error> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT kid, public_key FROM tickets.keys WHERE event_id = $1
         ORDER BY retired_at IS NULL DESC, created_at DESC",
    )
    .bind(event)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kid, public)| CheckinKey {
            kid,
            alg: "EdDSA".into(),
            public_key: B64.encode(public),
        })
        .collect())
}
