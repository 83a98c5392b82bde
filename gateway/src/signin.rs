//! Per-account sign-in throttling, across every gateway: after `failures` wrong
//! passwords for one account within `window`, whatever the addresses they came
//! from, its sign-ins are refused (429 `rate_limited`, with `Retry-After`) until the
//! window ends, the right password included. The per-address limit stops one
//! machine; this stops credential stuffing spread over many, at the speed of a
//! few guesses a minute per account instead of the speed of the cores.
//!
//! Every attempt is counted before its password is checked, so a burst of guesses
//! sent at once is bounded too: only the first `failures` of it reach the hasher.
//! The count lives in Redis under a hash of the normalized email (no address in a
//! key name), so every gateway behind the load balancer shares it. A sign-in that
//! succeeds clears it; an attempt the hashers were too busy to check is given back. When Redis does not answer, sign-in is not blocked: the
//! per-address limit and the hashing cap still hold, and the failure is logged.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use platform::store::Redis;
use sha2::{Digest, Sha256};

pub struct SignInThrottle {
    redis: Redis,
    prefix: String,
    failures: u32,
    window: Duration,
}

/// Why a sign-in may not be tried now: how long until it may.
pub struct Throttled(pub Duration);

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        crate::limits::too_many(self.0, "account")
    }
}

impl SignInThrottle {
    pub fn new(redis: Redis, prefix: &str, failures: u32, window: Duration) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            failures,
            window,
        }
    }

    fn key(&self, email: &str) -> String {
        let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
        format!("{}:signin:{}", self.prefix, hex::encode(&digest[..16]))
    }

    /// Counts a sign-in attempt before its password is checked, and refuses it
    /// (`Err`, with how long until the window ends) when it is past the account's
    /// failures for the window; the window starts at the first attempt. Counting
    /// first is what bounds a burst: a thousand guesses sent at once are counted
    /// before any is checked, so only the first `failures` reach the hasher.
    pub async fn attempt(&self, email: &str) -> Result<(), Throttled> {
        let mut redis = self.redis.clone();
        let key = self.key(email);
        let reply: redis::RedisResult<(u32, i64)> = redis::pipe()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.window.as_secs().max(1))
            .arg("NX")
            .ignore()
            .pttl(&key)
            .query_async(&mut redis)
            .await;
        match reply {
            Ok((count, pttl)) if count > self.failures => {
                let left = u64::try_from(pttl).map_or(self.window, Duration::from_millis);
                Err(Throttled(left))
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "sign-in throttle unavailable; not throttling");
                Ok(())
            }
        }
    }

    /// An attempt whose password was never checked (the hashers were busy) is given
    /// back.
    pub async fn not_tried(&self, email: &str) {
        let mut redis = self.redis.clone();
        let given: redis::RedisResult<()> = redis::cmd("DECR")
            .arg(self.key(email))
            .query_async(&mut redis)
            .await;
        if let Err(error) = given {
            tracing::warn!(%error, "giving back a sign-in attempt failed");
        }
    }

    /// A right password clears the count.
    pub async fn succeeded(&self, email: &str) {
        let mut redis = self.redis.clone();
        let cleared: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(email))
            .query_async(&mut redis)
            .await;
        if let Err(error) = cleared {
            tracing::warn!(%error, "clearing the sign-in count failed");
        }
    }
}
