//! Ending sessions at once, on every node: the revocation list.
//!
//! Access tokens are checked without a round trip (a signature and a clock), so
//! ending one before it expires needs every verifying process to know. A
//! revocation is written to Redis (a sorted set, scored by when it may be
//! forgotten: when every token it refuses has expired anyway) and announced on a
//! channel. Each process keeps the list in memory: the channel feeds it, and the
//! whole set is read again whenever the subscription (re)starts, so a message
//! published while a node was disconnected is never missed for good. A check costs
//! a hash lookup and no Redis command.
//!
//! Two kinds of entry:
//! - a session ended (sign-out, a refresh token used twice, an expired login):
//!   every token carrying its `sid` is refused with `session_ended`;
//! - an account's token version raised (every session ended, or its role changed):
//!   every token of that account with an older `ver` is refused, with
//!   `session_ended` or, after a role change, `token_outdated` (refresh to get a
//!   token with the new role).
//!
//! Keys: `{prefix}:auth:revoked` (the sorted set) and the channel of the same name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use proto::{ErrorBody, ErrorCode, UserId};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Claims;
use crate::store::{Redis, Store};

/// Why an account's older tokens stop working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// Every session of the account ended (`logout-all`).
    SignedOut,
    /// The account's role changed: its tokens say the old one.
    RoleChanged,
}

impl UserChange {
    fn as_str(self) -> &'static str {
        match self {
            UserChange::SignedOut => "ended",
            UserChange::RoleChanged => "role",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ended" => Some(UserChange::SignedOut),
            "role" => Some(UserChange::RoleChanged),
            _ => None,
        }
    }
}

/// One revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Tokens of this session are refused.
    Session(Uuid),
    /// Tokens of this account older than `version` are refused.
    User {
        user_id: UserId,
        version: i64,
        why: UserChange,
    },
}

impl Revoked {
    /// The sorted set's member for it.
    fn member(&self) -> String {
        match self {
            Revoked::Session(sid) => format!("s:{sid}"),
            Revoked::User {
                user_id,
                version,
                why,
            } => format!("u:{user_id}:{version}:{}", why.as_str()),
        }
    }

    fn parse(member: &str) -> Option<Self> {
        let mut parts = member.split(':');
        match parts.next()? {
            "s" => Some(Revoked::Session(parts.next()?.parse().ok()?)),
            "u" => Some(Revoked::User {
                user_id: parts.next()?.parse().ok()?,
                version: parts.next()?.parse().ok()?,
                why: UserChange::parse(parts.next()?)?,
            }),
            _ => None,
        }
    }

    /// Whether a token with these claims is refused by this revocation.
    pub fn refuses(&self, claims: &Claims) -> bool {
        match self {
            Revoked::Session(sid) => claims.sid == Some(*sid),
            Revoked::User {
                user_id, version, ..
            } => claims.sub == *user_id && claims.ver < *version,
        }
    }
}

/// The Redis key (and channel) of the list.
pub fn key(prefix: &str) -> String {
    format!("{prefix}:auth:revoked")
}

#[derive(Default)]
struct State {
    /// Ended sessions, with when they may be forgotten (ms since the epoch).
    sessions: HashMap<Uuid, i64>,
    /// Per account: the lowest token version still good, why, and when the entry
    /// may be forgotten.
    users: HashMap<UserId, (i64, UserChange, i64)>,
}

impl State {
    fn insert(&mut self, revoked: Revoked, forget_at: i64) {
        match revoked {
            Revoked::Session(sid) => {
                let at = self.sessions.entry(sid).or_insert(forget_at);
                *at = (*at).max(forget_at);
            }
            Revoked::User {
                user_id,
                version,
                why,
            } => {
                let entry = self
                    .users
                    .entry(user_id)
                    .or_insert((version, why, forget_at));
                if version >= entry.0 {
                    *entry = (version, why, entry.2.max(forget_at));
                }
            }
        }
    }
}

/// The in-memory list a verifier consults, and the changes it saw (for open
/// sockets to close themselves).
pub struct Revocations {
    state: RwLock<State>,
    changes: broadcast::Sender<Revoked>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").finish_non_exhaustive()
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

impl Revocations {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a revocation to this process's list and tells its listeners.
    pub fn apply(&self, revoked: Revoked, forget_at_ms: i64) {
        if let Ok(mut state) = self.state.write() {
            state.insert(revoked, forget_at_ms);
        }
        let _ = self.changes.send(revoked);
    }

    /// Replaces the list with what Redis holds (after a (re)subscription), and
    /// tells listeners about each entry (a socket may have missed one).
    fn replace(&self, entries: Vec<(Revoked, i64)>) {
        let mut fresh = State::default();
        for (revoked, forget_at) in &entries {
            fresh.insert(*revoked, *forget_at);
        }
        if let Ok(mut state) = self.state.write() {
            *state = fresh;
        }
        for (revoked, _) in entries {
            let _ = self.changes.send(revoked);
        }
    }

    /// Forgets entries whose tokens have all expired.
    pub fn purge(&self, now_ms: i64) {
        if let Ok(mut state) = self.state.write() {
            state.sessions.retain(|_, at| *at > now_ms);
            state.users.retain(|_, (_, _, at)| *at > now_ms);
        }
    }

    /// Entries held (for the gauge).
    pub fn len(&self) -> usize {
        self.state
            .read()
            .map(|s| s.sessions.len() + s.users.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses a token whose session ended or whose account moved on.
    pub fn check(&self, claims: &Claims) -> Result<(), ErrorBody> {
        let Ok(state) = self.state.read() else {
            return Ok(());
        };
        if let Some(sid) = claims.sid
            && state.sessions.contains_key(&sid)
        {
            return Err(ErrorBody::new(
                ErrorCode::SessionEnded,
                "this session has ended: sign in again",
            ));
        }
        if let Some((version, why, _)) = state.users.get(&claims.sub)
            && claims.ver < *version
        {
            return Err(match why {
                UserChange::SignedOut => ErrorBody::new(
                    ErrorCode::SessionEnded,
                    "every session of this account has ended: sign in again",
                ),
                UserChange::RoleChanged => ErrorBody::new(
                    ErrorCode::TokenOutdated,
                    "this account's role changed: refresh the token",
                ),
            });
        }
        Ok(())
    }

    /// Revocations as they arrive (open sockets close on one that refuses them).
    pub fn subscribe(&self) -> broadcast::Receiver<Revoked> {
        self.changes.subscribe()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Ends what `revoked` names: in this process's list at once (its next check
/// already refuses), then in Redis with an announcement to every other node.
/// `forget_after` is how long tokens it refuses can still be alive (the access
/// tokens' lifetime and leeway). Entries past their time are swept in the same
/// round trip.
pub async fn revoke(
    revocations: &Revocations,
    redis: &mut Redis,
    prefix: &str,
    revoked: Revoked,
    forget_after: Duration,
) -> redis::RedisResult<()> {
    let now = now_ms();
    let forget_at = now + i64::try_from(forget_after.as_millis()).unwrap_or(i64::MAX / 2);
    revocations.apply(revoked, forget_at);
    let key = key(prefix);
    let member = revoked.member();
    redis::pipe()
        .zrembyscore(&key, "-inf", now)
        .ignore()
        .zadd(&key, &member, forget_at)
        .ignore()
        .publish(&key, format!("{member}|{forget_at}"))
        .ignore()
        .query_async::<()>(redis)
        .await
}

/// Every live entry in Redis.
async fn read_all(redis: &mut Redis, prefix: &str) -> redis::RedisResult<Vec<(Revoked, i64)>> {
    let rows: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(key(prefix))
        .arg(now_ms())
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .query_async(redis)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(member, at)| Revoked::parse(&member).map(|r| (r, at)))
        .collect())
}

/// Keeps `revocations` in step with Redis until `stop`: subscribes to the channel,
/// reads the whole list after each (re)subscription, and forgets expired entries
/// every minute.
pub fn spawn_listener(
    store: Store,
    mut redis: Redis,
    prefix: String,
    revocations: Arc<Revocations>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let channel = key(&prefix);
        let mut backoff = Duration::from_millis(100);
        let mut purge = tokio::time::interval(Duration::from_secs(60));
        'connect: loop {
            let subscribed = async {
                let mut pubsub = store.pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            let pubsub = match subscribed {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    tracing::warn!(%error, "revocation channel subscription failed, retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'connect;
                }
            };
            // Subscribed first, then read: nothing published in between is lost.
            match read_all(&mut redis, &prefix).await {
                Ok(entries) => revocations.replace(entries),
                Err(error) => {
                    tracing::warn!(%error, "reading the revocation list failed, retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'connect;
                }
            }
            backoff = Duration::from_millis(100);
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = purge.tick() => {
                        revocations.purge(now_ms());
                        metrics::gauge!("onsale_revocations").set(revocations.len() as f64);
                    }
                    message = messages.next() => {
                        let Some(message) = message else {
                            tracing::warn!("revocation channel lost, resubscribing");
                            continue 'connect;
                        };
                        let payload: String = message.get_payload().unwrap_or_default();
                        let parsed = payload
                            .rsplit_once('|')
                            .and_then(|(member, at)| Some((Revoked::parse(member)?, at.parse().ok()?)));
                        match parsed {
                            Some((revoked, at)) => revocations.apply(revoked, at),
                            None => tracing::warn!(payload, "unreadable revocation"),
                        }
                    }
                }
            }
        }
    })
}

/// How long a socket ticket may wait for its socket.
pub const TICKET_SECONDS: u64 = 30;

/// A ticket's Redis key: its SHA-256, so a copy of Redis opens no socket.
fn ticket_key(prefix: &str, ticket: &str) -> String {
    use sha2::Digest;
    format!(
        "{prefix}:live:ticket:{}",
        hex::encode(sha2::Sha256::digest(ticket.as_bytes()))
    )
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TicketBody {
    event: proto::EventId,
    claims: Claims,
}

/// A single-use ticket that opens one socket on `event` as the bearer of
/// `claims`, within [`TICKET_SECONDS`]: what a browser puts in the socket's URL
/// instead of its access token.
pub async fn issue_ticket(
    redis: &mut Redis,
    prefix: &str,
    event: proto::EventId,
    claims: &Claims,
) -> redis::RedisResult<String> {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let ticket = hex::encode(bytes);
    let body = serde_json::to_string(&TicketBody {
        event,
        claims: claims.clone(),
    })
    .unwrap_or_default();
    redis::cmd("SET")
        .arg(ticket_key(prefix, &ticket))
        .arg(body)
        .arg("EX")
        .arg(TICKET_SECONDS)
        .query_async::<()>(redis)
        .await?;
    Ok(ticket)
}

/// The claims a ticket was issued for, spending it (`GETDEL`: a second use finds
/// nothing). Refused when unknown, spent, expired, for another event, or when its
/// session ended since.
pub async fn redeem_ticket(
    redis: &mut Redis,
    prefix: &str,
    event: proto::EventId,
    ticket: &str,
    revocations: &Revocations,
) -> Result<Claims, ErrorBody> {
    let refused = || {
        ErrorBody::new(
            ErrorCode::InvalidToken,
            "this socket ticket is unknown, spent or expired: ask for another",
        )
    };
    if ticket.is_empty() || ticket.len() > 128 {
        return Err(refused());
    }
    let body: Option<String> = redis::cmd("GETDEL")
        .arg(ticket_key(prefix, ticket))
        .query_async(redis)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "redeeming a socket ticket failed");
            ErrorBody::new(ErrorCode::ServiceUnavailable, "try again shortly")
        })?;
    let body: TicketBody = body
        .and_then(|b| serde_json::from_str(&b).ok())
        .ok_or_else(refused)?;
    if body.event != event {
        return Err(ErrorBody::new(
            ErrorCode::InvalidToken,
            "this socket ticket is for another event",
        ));
    }
    revocations.check(&body.claims)?;
    Ok(body.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user: UserId, sid: Option<Uuid>, ver: i64) -> Claims {
        Claims {
            sub: user,
            role: proto::Role::Fan,
            iss: "onsale".into(),
            aud: "onsale".into(),
            iat: 0,
            exp: 0,
            sid,
            ver,
            evf: false,
        }
    }

    #[test]
    fn members_read_back_as_written() {
        for revoked in [
            Revoked::Session(Uuid::now_v7()),
            Revoked::User {
                user_id: UserId::new(),
                version: 7,
                why: UserChange::RoleChanged,
            },
            Revoked::User {
                user_id: UserId::new(),
                version: 1,
                why: UserChange::SignedOut,
            },
        ] {
            assert_eq!(Revoked::parse(&revoked.member()), Some(revoked));
        }
        assert_eq!(Revoked::parse("x:1"), None);
        assert_eq!(Revoked::parse("u:not-a-uuid:1:ended"), None);
    }

    #[test]
    fn an_ended_session_refuses_its_tokens_only() {
        let list = Revocations::default();
        let (user, sid, other) = (UserId::new(), Uuid::now_v7(), Uuid::now_v7());
        list.apply(Revoked::Session(sid), i64::MAX);
        let refused = list.check(&claims(user, Some(sid), 0)).expect_err("ended");
        assert_eq!(refused.code, ErrorCode::SessionEnded);
        assert!(list.check(&claims(user, Some(other), 0)).is_ok());
        assert!(list.check(&claims(user, None, 0)).is_ok());
    }

    #[test]
    fn a_raised_version_refuses_older_tokens_and_says_why() {
        let list = Revocations::default();
        let user = UserId::new();
        list.apply(
            Revoked::User {
                user_id: user,
                version: 2,
                why: UserChange::RoleChanged,
            },
            i64::MAX,
        );
        let refused = list.check(&claims(user, None, 1)).expect_err("older");
        assert_eq!(refused.code, ErrorCode::TokenOutdated);
        assert!(list.check(&claims(user, None, 2)).is_ok());
        assert!(list.check(&claims(UserId::new(), None, 0)).is_ok());
        // An older entry arriving late does not lower the bar.
        list.apply(
            Revoked::User {
                user_id: user,
                version: 1,
                why: UserChange::SignedOut,
            },
            i64::MAX,
        );
        assert_eq!(
            list.check(&claims(user, None, 1)).map_err(|e| e.code),
            Err(ErrorCode::TokenOutdated)
        );
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let list = Revocations::default();
        let sid = Uuid::now_v7();
        list.apply(Revoked::Session(sid), 1_000);
        assert_eq!(list.len(), 1);
        list.purge(999);
        assert_eq!(list.len(), 1);
        list.purge(1_000);
        assert!(list.is_empty());
    }
}
