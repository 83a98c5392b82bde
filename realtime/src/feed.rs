//! One node's view of the events it has sockets for: a [`Hub`] of [`Feed`]s, each fed
//! by one Redis subscription and one task, shared by every socket of that event.
//!
//! A feed keeps what every socket needs in shared, bounded structures:
//! - the event's [`Line`] (sale state, admission rate, `served`, seats left, the seat
//!   version forwarded so far) in a `watch`: each socket computes its own position
//!   from it, and a slow socket only ever sees the latest value;
//! - seat deltas, coalesced for one tick into one shared message, in a bounded
//!   `broadcast`: a socket that falls behind is told to refetch the map;
//! - one `watch` counter per followed request: a message naming a request bumps
//!   it, and the sockets following that request re-read it from Redis.
//!
//! The feeds share the node's one sharded subscription ([`crate::shards`]).
//! Pub/sub is fire-and-forget, so nothing depends on a message arriving: every tick
//! the feed re-reads the sale and counts hashes (one pipelined round trip), a seat
//! version ahead of the messages for two ticks in a row means a lost message (the
//! sockets are told to refetch), and when the subscription says messages may have
//! been lost every socket re-reads its request and refetches the map.
//!
//! A feed starts only for an event that exists and has a sale (made-up ids are
//! answered from memory, [`Hub::event`]).
//!
//! Keys read (see `proto::keys`): `sale(event)` (`state`, `served`,
//! `admission_per_second`), `seat_counts(event)` (`available`, `version`); channel
//! `live(event)`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use platform::client_address::bucket;

use chrono::{DateTime, Utc};
use platform::store::{Redis, Store};
use proto::sale_hash::SaleHash;
use proto::wire::live::{LiveMessage, Published, SeatChange, SeatsDelta};
use proto::wire::queue::SaleState;
use proto::{EventId, Keys, RequestId};
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::shards::Subscriber;

/// What every socket of an event needs to know about its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sale: SaleState,
    pub admission_per_second: u32,
    /// The last queue number the workers decided; only grows.
    pub served: u64,
    pub seats_left: u64,
    /// The seat version up to which deltas have been sent to the sockets.
    pub seats_version: u64,
    /// Bumped when every socket must re-read its request (after a draw, or after
    /// the subscription was lost and messages may have been missed).
    pub resync: u64,
}

/// An event as the feed needs it from Postgres (read once).
#[derive(Clone, Debug)]
pub struct EventInfo {
    pub onsale_at: DateTime<Utc>,
    /// The sale's state and rate as Postgres has them, for before Redis has the sale.
    pub state: SaleState,
    pub admission_per_second: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("event {0} not found")]
    EventNotFound(EventId),
    #[error("event {0} has no sale")]
    SaleNotFound(EventId),
    #[error("too many events looked up on this node; retry in {0:?}")]
    Busy(Duration),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The node's feeds, by event. Cheap to share behind an `Arc`.
pub struct Hub {
    pub(crate) redis: Redis,
    subscriber: Subscriber,
    pool: PgPool,
    pub(crate) keys: Keys,
    pub(crate) settings: Settings,
    feeds: Mutex<HashMap<EventId, Weak<Feed>>>,
    events: Mutex<HashMap<EventId, EventInfo>>,
    /// Open sockets per account, and per address, on this node.
    sockets: Mutex<HashMap<proto::UserId, usize>>,
    addresses: Mutex<HashMap<IpAddr, usize>>,
    /// Upgrades, tickets and snapshots per address.
    requests: DefaultKeyedRateLimiter<IpAddr>,
    /// Postgres lookups of events this node does not know yet, all addresses
    /// together: ids made up from many addresses cost Postgres a bounded rate.
    lookups: DefaultDirectRateLimiter,
    /// Event ids Postgres did not know (or knew without a sale: `true`), and when
    /// it was asked.
    unknown: Mutex<HashMap<EventId, (std::time::Instant, bool)>>,
    pub(crate) shutdown: CancellationToken,
}

/// One open socket, counted against its account and its address while it lives.
pub struct SocketSlot {
    hub: Arc<Hub>,
    user: proto::UserId,
    address: IpAddr,
}

/// Why a socket was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crowded {
    Account,
    Address,
}

fn give_back<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        give_back(&self.hub.sockets, &self.user);
        give_back(&self.hub.addresses, &self.address);
    }
}

impl Hub {
    pub fn new(
        store: Store,
        redis: Redis,
        pool: PgPool,
        keys: Keys,
        settings: Settings,
    ) -> Arc<Self> {
        let shutdown = CancellationToken::new();
        let per_second =
            NonZeroU32::new(settings.requests_per_second_per_address.max(1)).expect("at least one");
        let burst =
            NonZeroU32::new(settings.requests_burst_per_address.max(1)).expect("at least one");
        let lookups =
            NonZeroU32::new(settings.event_lookups_per_second.max(1)).expect("at least one");
        Arc::new(Self {
            requests: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            lookups: RateLimiter::direct(Quota::per_second(lookups).allow_burst(lookups)),
            addresses: Mutex::default(),
            redis,
            subscriber: Subscriber::start(store, shutdown.clone()),
            pool,
            keys,
            settings,
            feeds: Mutex::default(),
            events: Mutex::default(),
            sockets: Mutex::default(),
            unknown: Mutex::default(),
            shutdown,
        })
    }

    /// A socket for `user` at `address` (a [`bucket`]), unless the account holds
    /// `max_sockets_per_account` or the address `max_sockets_per_address` on this
    /// node already.
    pub fn take_socket(
        self: &Arc<Self>,
        user: proto::UserId,
        address: IpAddr,
    ) -> Result<SocketSlot, Crowded> {
        let address = bucket(address);
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let by_account = sockets.get(&user).copied().unwrap_or(0);
        let by_address = addresses.get(&address).copied().unwrap_or(0);
        if by_account >= self.settings.max_sockets_per_account {
            return Err(Crowded::Account);
        }
        if by_address >= self.settings.max_sockets_per_address {
            return Err(Crowded::Address);
        }
        *sockets.entry(user).or_default() += 1;
        *addresses.entry(address).or_default() += 1;
        Ok(SocketSlot {
            hub: self.clone(),
            user,
            address,
        })
    }

    /// Whether `address` may ask for another upgrade, ticket or snapshot now; if
    /// not, how long until it may.
    pub fn admit_request(&self, address: IpAddr) -> Result<(), Duration> {
        let address = bucket(address);
        let checked = self.requests.check_key(&address);
        // Keys are kept until forgotten: forget idle ones now and then.
        if self.requests.len() > 10_000 {
            self.requests.retain_recent();
        }
        checked.map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The key names of this node's Redis.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Cancelled when the node shuts down: for tasks that live as long as it.
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Closes every socket (with a Close frame) and ends every feed.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Sockets open on this node.
    pub fn sockets(&self) -> u64 {
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(Weak::upgrade)
            .map(|feed| Arc::strong_count(&feed).saturating_sub(1) as u64)
            .sum()
    }

    /// The event as Postgres has it, cached (an event's on-sale time does not move
    /// during its sale; the state read here is only a fallback for Redis's).
    pub async fn event(&self, event_id: EventId) -> Result<EventInfo, FeedError> {
        if let Some(info) = self.lock_events().get(&event_id) {
            return Ok(info.clone());
        }
        let forget_after = Duration::from_secs(self.settings.unknown_event_seconds);
        {
            let unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((asked, exists)) = unknown.get(&event_id)
                && asked.elapsed() < forget_after
            {
                metrics::counter!("onsale_realtime_unknown_events_total", "from" => "memory")
                    .increment(1);
                return Err(if *exists {
                    FeedError::SaleNotFound(event_id)
                } else {
                    FeedError::EventNotFound(event_id)
                });
            }
        }
        if let Err(not_until) = self.lookups.check() {
            metrics::counter!("onsale_realtime_unknown_events_total", "from" => "refused")
                .increment(1);
            return Err(FeedError::Busy(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        let row: Option<(DateTime<Utc>, Option<String>, i32)> = sqlx::query_as(
            "SELECT e.onsale_at, s.state, COALESCE(s.admission_per_second, e.admission_per_second)
             FROM inventory.events e LEFT JOIN waiting_room.sales s USING (event_id)
             WHERE e.event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        // An event with no sale has no line to follow: no feed for it either.
        let (onsale_at, state, rate) = match row {
            Some((onsale_at, Some(state), rate)) => (onsale_at, state, rate),
            found => {
                let exists = found.is_some();
                metrics::counter!("onsale_realtime_unknown_events_total", "from" => "postgres")
                    .increment(1);
                let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
                // Bounded: made-up ids are forgotten wholesale when there are many.
                if unknown.len() >= 10_000 {
                    unknown.retain(|_, (asked, _)| asked.elapsed() < forget_after);
                    if unknown.len() >= 10_000 {
                        unknown.clear();
                    }
                }
                unknown.insert(event_id, (std::time::Instant::now(), exists));
                return Err(if exists {
                    FeedError::SaleNotFound(event_id)
                } else {
                    FeedError::EventNotFound(event_id)
                });
            }
        };
        let info = EventInfo {
            onsale_at,
            state: SaleState::parse(&state).unwrap_or(SaleState::Scheduled),
            admission_per_second: u32::try_from(rate).unwrap_or(0),
        };
        let mut events = self.lock_events();
        // Bounded: a node serves a handful of events; forgetting costs one query.
        if events.len() >= 10_000 {
            events.clear();
        }
        events.insert(event_id, info.clone());
        Ok(info)
    }

    fn lock_events(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, EventInfo>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The event's feed, started (subscribed, first state read) if this node has
    /// none yet.
    pub async fn feed(self: &Arc<Self>, event_id: EventId) -> Result<Arc<Feed>, FeedError> {
        let info = self.event(event_id).await?;
        if let Some(feed) = self.live_feed(event_id) {
            return Ok(feed);
        }
        let mut redis = self.redis.clone();
        let (first, _) = read_line(&mut redis, &self.keys, event_id, &info, None).await?;
        let feed = {
            let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(feed) = feeds.get(&event_id).and_then(Weak::upgrade) {
                return Ok(feed);
            }
            feeds.retain(|_, feed| feed.strong_count() > 0);
            let feed = Arc::new(Feed::new(event_id, info.clone(), first, &self.settings));
            feeds.insert(event_id, Arc::downgrade(&feed));
            feed
        };
        tokio::spawn(run(Arc::downgrade(&feed), self.clone(), info));
        metrics::gauge!("onsale_realtime_feeds").increment(1);
        Ok(feed)
    }

    fn live_feed(&self, event_id: EventId) -> Option<Arc<Feed>> {
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&event_id)
            .and_then(Weak::upgrade)
    }
}

/// One event on one node.
pub struct Feed {
    pub event_id: EventId,
    pub info: EventInfo,
    line: watch::Sender<Line>,
    seats: broadcast::Sender<Arc<str>>,
    requests: Mutex<HashMap<RequestId, watch::Sender<u64>>>,
}

impl Feed {
    fn new(event_id: EventId, info: EventInfo, line: Line, settings: &Settings) -> Self {
        Self {
            event_id,
            info,
            line: watch::channel(line).0,
            seats: broadcast::channel(settings.seat_buffer).0,
            requests: Mutex::default(),
        }
    }

    pub fn line(&self) -> watch::Receiver<Line> {
        self.line.subscribe()
    }

    pub fn seats(&self) -> broadcast::Receiver<Arc<str>> {
        self.seats.subscribe()
    }

    /// A counter that grows whenever `request` may have changed.
    pub fn follow(&self, request: RequestId) -> watch::Receiver<u64> {
        let mut requests = self.lock_requests();
        match requests.get(&request) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                requests.insert(request, sender);
                receiver
            }
        }
    }

    /// Forgets requests nobody follows any more.
    pub fn unfollow(&self, request: RequestId) {
        let mut requests = self.lock_requests();
        if requests
            .get(&request)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            requests.remove(&request);
        }
    }

    fn touch(&self, ids: &[RequestId]) {
        let requests = self.lock_requests();
        for id in ids {
            if let Some(sender) = requests.get(id) {
                sender.send_modify(|n| *n += 1);
            }
        }
    }

    fn lock_requests(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, watch::Sender<u64>>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the event's line in one round trip, with the seat version Redis has.
/// `previous` keeps `served` from going back (a restore that rebuilds the sale hash
/// may lag behind the line for a moment) and the version forwarded so far.
async fn read_line(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    info: &EventInfo,
    previous: Option<&Line>,
) -> Result<(Line, u64), FeedError> {
    let (sale, counts): (Vec<Option<String>>, Vec<Option<u64>>) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.sale(event_id))
        .arg(&SaleHash::FIELDS)
        .cmd("HMGET")
        .arg(keys.seat_counts(event_id))
        .arg(&["available", "version"])
        .query_async(redis)
        .await?;
    let sale = SaleHash::from_values(&sale);
    let served = sale.served.unwrap_or(0);
    let redis_version = counts.get(1).copied().flatten().unwrap_or(0);
    let line = Line {
        sale: sale.state.unwrap_or(info.state),
        admission_per_second: sale
            .admission_per_second
            .unwrap_or(info.admission_per_second),
        served: previous.map_or(served, |p| p.served.max(served)),
        seats_left: counts.first().copied().flatten().unwrap_or(0),
        seats_version: previous.map_or(redis_version, |p| p.seats_version),
        resync: previous.map_or(0, |p| p.resync),
    };
    Ok((line, redis_version))
}

/// Seat deltas received since the last tick.
#[derive(Default)]
struct Pending {
    changes: Vec<SeatChange>,
    /// The newest version received (and so the version the next delta carries).
    version: u64,
    /// Messages were missed: the sockets must refetch the whole map.
    reset: bool,
    /// A version Redis had at the last tick that no message has brought yet.
    suspect: Option<u64>,
}

impl Pending {
    fn receive(&mut self, version: Option<u64>, reset: bool, seats: Vec<SeatChange>) {
        let Some(version) = version else { return };
        if version <= self.version {
            return; // already forwarded (or older than the map the sockets have)
        }
        if reset || version > self.version + 1 {
            // A whole new map, or a gap: deltas would leave holes.
            self.reset = true;
            self.changes.clear();
        } else if !self.reset {
            self.changes.extend(seats);
        }
        self.version = version;
    }

    /// Whether Redis's version shows a message that never came (seen on two ticks).
    fn check(&mut self, redis_version: u64) {
        if redis_version <= self.version {
            self.suspect = None;
        } else if self.suspect.is_some_and(|s| s <= redis_version) {
            self.reset = true;
            self.changes.clear();
            self.version = redis_version;
            self.suspect = None;
        } else {
            self.suspect = Some(redis_version);
        }
    }

    /// The message for the sockets, if anything changed.
    fn take(&mut self) -> Option<LiveMessage> {
        if !self.reset && self.changes.is_empty() {
            return None;
        }
        let message = LiveMessage::Seats(SeatsDelta {
            version: self.version,
            reset: self.reset,
            changes: std::mem::take(&mut self.changes),
        });
        self.reset = false;
        Some(message)
    }
}

/// The feed's task: the subscription, and the tick that re-reads the line and sends
/// the coalesced seat deltas. Ends when no socket holds the feed any more.
async fn run(feed: Weak<Feed>, hub: Arc<Hub>, info: EventInfo) {
    let event_id = match feed.upgrade() {
        Some(feed) => feed.event_id,
        None => return,
    };
    let channel = hub.keys.live(event_id);
    let mut redis = hub.redis.clone();
    let mut pending = Pending {
        version: feed.upgrade().map_or(0, |f| f.line.borrow().seats_version),
        ..Pending::default()
    };
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    'connect: loop {
        let mut subscription = match hub.subscriber.join(&channel).await {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(%event_id, %error, "live channel subscription failed, retrying");
                tokio::select! {
                    _ = hub.shutdown.cancelled() => break 'connect,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if feed.strong_count() == 0 {
                    break 'connect;
                }
                continue 'connect;
            }
        };
        backoff = Duration::from_millis(100);
        if !first {
            // Messages may have been missed while unsubscribed: every socket
            // re-reads its request, and the map is fetched again.
            let Some(live) = feed.upgrade() else {
                break 'connect;
            };
            pending.reset = true;
            live.line.send_modify(|line| line.resync += 1);
        }
        first = false;
        let mut tick = tokio::time::interval(hub.settings.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hub.shutdown.cancelled() => break 'connect,
                message = subscription.messages.recv() => {
                    let Some(payload) = message else {
                        tracing::warn!(%event_id, "live channel subscription lost, resubscribing");
                        continue 'connect;
                    };
                    let Some(live) = feed.upgrade() else { break 'connect };
                    match serde_json::from_str::<Published>(&payload) {
                        Ok(published) => on_published(&live, &mut pending, published),
                        Err(error) => tracing::debug!(%event_id, %error, "unreadable live message"),
                    }
                }
                Ok(()) = subscription.lost.changed() => {
                    // Messages may have been missed: every socket re-reads its
                    // request, and the map is fetched again.
                    let Some(live) = feed.upgrade() else { break 'connect };
                    pending.reset = true;
                    live.line.send_modify(|line| line.resync += 1);
                }
                _ = tick.tick() => {
                    let Some(live) = feed.upgrade() else { break 'connect };
                    on_tick(&live, &mut redis, &hub.keys, &info, &mut pending).await;
                }
            }
        }
    }
    metrics::gauge!("onsale_realtime_feeds").decrement(1);
    tracing::debug!(%event_id, "feed ended");
}

fn on_published(feed: &Feed, pending: &mut Pending, published: Published) {
    match published {
        Published::Batch { served, decided } => {
            feed.line.send_if_modified(|line| {
                let moved = served > line.served;
                line.served = line.served.max(served);
                moved
            });
            let ids: Vec<RequestId> = decided.into_iter().map(|d| d.request_id).collect();
            feed.touch(&ids);
        }
        Published::Expired { request_ids } => feed.touch(&request_ids),
        Published::Sale { state } => {
            if let Some(state) = state {
                feed.line.send_if_modified(|line| {
                    let changed = line.sale != state;
                    line.sale = state;
                    changed
                });
            }
        }
        Published::Changes {
            version,
            reset,
            seats,
            request_ids,
        } => {
            pending.receive(version, reset, seats);
            feed.touch(&request_ids);
        }
    }
}

async fn on_tick(
    feed: &Feed,
    redis: &mut Redis,
    keys: &Keys,
    info: &EventInfo,
    pending: &mut Pending,
) {
    let previous = feed.line.borrow().clone();
    match read_line(redis, keys, feed.event_id, info, Some(&previous)).await {
        Ok((mut line, redis_version)) => {
            pending.check(redis_version);
            if let Some(message) = pending.take() {
                if let Ok(text) = serde_json::to_string(&message) {
                    // No receiver is not an error: nobody is looking at the map.
                    let _ = feed.seats.send(Arc::from(text));
                }
                line.seats_version = pending.version;
            }
            let drawn = previous.sale != line.sale;
            if drawn {
                // Requests change on a draw (numbers) or an ending sale without a
                // message per request: everyone re-reads theirs.
                line.resync += 1;
            }
            feed.line.send_if_modified(|current| {
                let changed = *current != line;
                *current = line;
                changed
            });
        }
        Err(error) => tracing::warn!(event_id = %feed.event_id, %error, "reading the line failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seat: &str, state: &str) -> SeatChange {
        SeatChange {
            seat_id: seat.to_owned(),
            state: state.to_owned(),
        }
    }

    #[test]
    fn consecutive_versions_coalesce_into_one_delta() {
        let mut pending = Pending {
            version: 10,
            ..Pending::default()
        };
        pending.receive(Some(11), false, vec![change("A-1-1", "held")]);
        pending.receive(Some(12), false, vec![change("A-1-2", "held")]);
        let Some(LiveMessage::Seats(delta)) = pending.take() else {
            panic!("no delta");
        };
        assert_eq!(delta.version, 12);
        assert!(!delta.reset);
        assert_eq!(delta.changes.len(), 2);
        assert!(pending.take().is_none(), "sent once");
    }

    #[test]
    fn a_gap_in_versions_asks_for_a_refetch() {
        let mut pending = Pending {
            version: 10,
            ..Pending::default()
        };
        pending.receive(Some(13), false, vec![change("A-1-1", "held")]);
        let Some(LiveMessage::Seats(delta)) = pending.take() else {
            panic!("no delta");
        };
        assert!(delta.reset);
        assert!(delta.changes.is_empty());
        assert_eq!(delta.version, 13);
    }

    #[test]
    fn old_and_duplicate_versions_are_ignored() {
        let mut pending = Pending {
            version: 10,
            ..Pending::default()
        };
        pending.receive(Some(10), false, vec![change("A-1-1", "held")]);
        pending.receive(Some(3), false, vec![change("A-1-1", "held")]);
        assert!(pending.take().is_none());
    }

    #[test]
    fn a_version_redis_has_but_no_message_brought_is_a_loss_on_the_second_tick() {
        let mut pending = Pending {
            version: 10,
            ..Pending::default()
        };
        pending.check(11);
        assert!(
            pending.take().is_none(),
            "the message may still be on its way"
        );
        pending.check(11);
        let Some(LiveMessage::Seats(delta)) = pending.take() else {
            panic!("no reset");
        };
        assert!(delta.reset);
        assert_eq!(delta.version, 11);
    }

    #[test]
    fn a_message_arriving_after_the_first_suspicion_clears_it() {
        let mut pending = Pending {
            version: 10,
            ..Pending::default()
        };
        pending.check(11);
        pending.receive(Some(11), false, vec![change("A-1-1", "sold")]);
        pending.check(11);
        let Some(LiveMessage::Seats(delta)) = pending.take() else {
            panic!("no delta");
        };
        assert!(!delta.reset);
        assert_eq!(delta.changes.len(), 1);
    }
}
