//! Rate limits: one GCRA bucket per client address and one per signed-in account.
//!
//! A keyed limiter remembers every key it has seen until told to forget, so a flood
//! of distinct addresses would grow it without bound: [`RateLimits::housekeep`]
//! drops keys whose buckets are full again, and runs on an interval. Addresses are
//! the TCP peer's, or, behind trusted proxies, the hop they vouch for
//! ([`crate::client_address`]); never whatever a client writes in `X-Forwarded-For`.
//! IPv6 clients are keyed by their /64.
//!
//! Two layers: this node's own buckets ([`KeyedLimiter`], in memory, checked first:
//! a flood from one client is refused without asking anyone), then, with
//! `limits.shared` on (the default), the tier's buckets in Redis
//! ([`crate::shared_limits`]), so that N gateways behind a load balancer let a client
//! through at its rate once, not N times.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use platform::auth::Caller;
use proto::UserId;

use crate::client_address::{TrustedProxies, bucket};
use crate::config::LimitSettings;
use crate::shared_limits::{Bucket, SharedLimits};

/// A keyed GCRA limiter with its clock, so waits can be told in seconds.
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedLimiter<K, C> {
    pub fn new(per_second: u32, burst: u32, clock: C) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// `Err(wait)` when `key` must wait before its next request.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose buckets have refilled; returns how many remain.
    pub fn housekeep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// The gateway's limiters.
pub struct RateLimits {
    pub per_ip: KeyedLimiter<IpAddr>,
    pub per_user: KeyedLimiter<UserId>,
    pub trusted: TrustedProxies,
    /// The tier's buckets, when shared.
    pub shared: Option<SharedLimits>,
    settings: LimitSettings,
}

/// The client's address bucket, as `per_ip` found it (for `per_user`, which asks
/// the tier for both at once).
#[derive(Clone, Copy, Debug)]
struct ClientBucket(IpAddr);

impl RateLimits {
    pub fn new(settings: &LimitSettings, shared: Option<SharedLimits>) -> Self {
        Self {
            shared,
            settings: settings.clone(),
            per_ip: KeyedLimiter::new(
                settings.per_ip_per_second,
                settings.per_ip_burst,
                DefaultClock::default(),
            ),
            per_user: KeyedLimiter::new(
                settings.per_user_per_second,
                settings.per_user_burst,
                DefaultClock::default(),
            ),
            // Checked by `Config::validate`; a bad list trusts no one.
            trusted: TrustedProxies::from_settings(
                &settings.trusted_proxies,
                &settings.forwarded_header,
            )
            .unwrap_or_default(),
        }
    }

    pub async fn housekeep(&self) {
        let ips = self.per_ip.housekeep();
        let users = self.per_user.housekeep();
        metrics::gauge!("onsale_rate_limiter_keys", "limiter" => "ip").set(ips as f64);
        metrics::gauge!("onsale_rate_limiter_keys", "limiter" => "user").set(users as f64);
        if let Some(shared) = &self.shared
            && let Err(error) = shared.housekeep().await
        {
            tracing::warn!(%error, "forgetting full shared rate-limit buckets failed");
        }
    }

    /// The tier's buckets for this request: its address, and its account if signed in.
    fn shared_buckets(&self, address: Option<IpAddr>, user: Option<UserId>) -> Vec<Bucket> {
        let s = &self.settings;
        let mut buckets = Vec::with_capacity(2);
        if let Some(address) = address {
            buckets.push(Bucket::new(
                format!("ip:{address}"),
                s.per_ip_per_second,
                s.per_ip_burst,
            ));
        }
        if let Some(user) = user {
            buckets.push(Bucket::new(
                format!("user:{user}"),
                s.per_user_per_second,
                s.per_user_burst,
            ));
        }
        buckets
    }
}

pub use platform::http::too_many;

/// Middleware: one bucket per client address (IPv6: per /64).
pub async fn per_ip(
    State(limits): State<Arc<RateLimits>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = bucket(limits.trusted.client(peer.ip(), request.headers()));
    match limits.per_ip.check(&client) {
        Ok(()) => {
            request.extensions_mut().insert(ClientBucket(client));
            next.run(request).await
        }
        Err(wait) => too_many(wait, "address"),
    }
}

/// Middleware: one bucket per verified account (requests without a token pass;
/// they are limited by address alone); then the tier's buckets of the address and
/// the account, in one check. Runs after authentication.
pub async fn per_user(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let user = request.extensions().get::<Caller>().map(|c| c.user_id);
    if let Some(user) = user
        && let Err(wait) = limits.per_user.check(&user)
    {
        return too_many(wait, "account");
    }
    if let Some(shared) = &limits.shared {
        let address = request.extensions().get::<ClientBucket>().map(|b| b.0);
        let buckets = limits.shared_buckets(address, user);
        let whose: Vec<&'static str> = [address.map(|_| "address"), user.map(|_| "account")]
            .into_iter()
            .flatten()
            .collect();
        if !buckets.is_empty() {
            let waits = shared.check(buckets).await;
            if let Some((wait, whose)) = waits
                .into_iter()
                .zip(whose)
                .find(|(wait, _)| !wait.is_zero())
            {
                return too_many(wait, whose);
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn a_key_past_its_burst_is_told_how_long_to_wait() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::new(2, 3, clock.clone());
        for _ in 0..3 {
            assert!(limiter.check(&"fan").is_ok());
        }
        let wait = limiter.check(&"fan").err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        // Another key has a bucket of its own.
        assert!(limiter.check(&"other").is_ok());
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(&"fan").is_ok());
    }

    #[test]
    fn many_distinct_keys_are_forgotten_once_their_buckets_refill() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::new(10, 5, clock.clone());
        for key in 0..100_000u32 {
            assert!(limiter.check(&key).is_ok());
        }
        assert_eq!(limiter.len(), 100_000);
        // Still within the refill period: the buckets are not full, nothing goes.
        assert_eq!(limiter.housekeep(), 100_000);
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.housekeep(), 0);
        assert!(limiter.is_empty());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let response = too_many(Duration::from_millis(1_200), "address");
        assert_eq!(response.status(), 429);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        let response = too_many(Duration::from_millis(10), "address");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
}
