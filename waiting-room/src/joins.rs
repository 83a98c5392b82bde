//! Joining the line.
//!
//! One `join.lua` call decides a batch of joins for one event, in order, as if they
//! had come one after another. A [`Joiner`] gathers the joins that arrive while its
//! calls are out and sends them together in the next call, so that under load one
//! Redis round trip, one script start and one read of the sale and of the fans carry
//! many joins instead of one. There is no timer: a join that finds no call out goes
//! at once, alone, so a quiet line pays no added latency, and a busy one waits at
//! most for the call ahead of it (up to [`MAX_BATCH`] joins). Events are spread over
//! a few lanes, each with one call out at a time: an event's joins all take the same
//! lane, so they are numbered in the order they reached the joiner (first come, first
//! served), and a slow event (its Redis master away) holds up only its own lane.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use platform::store::Redis;
use proto::wire::queue::Joined;
use proto::{ErrorCode, EventId, Keys, RequestId, UserId};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::lottery::to_hex;
use crate::requests::{self, Ask};
use crate::{SeatMaps, journal, sale};

/// Most joins one script call decides.
pub const MAX_BATCH: usize = 128;
/// Independent batching tasks of a [`Joiner`]; an event's joins always go to the same
/// one (by its id), so its order of arrival is kept, and events in different lanes do
/// not wait on each other's script calls (on a cluster, on each other's masters).
const LANES: usize = 8;
/// Joins waiting for a call before callers wait to hand theirs over.
const QUEUE: usize = 4 * MAX_BATCH;
/// Decided batches one journal write takes at most (and may wait for it).
const JOURNAL_BATCHES: usize = 32;

/// One join's outcome as `join.lua` gives it: status, request id, queue number (-1
/// if none yet), state, served, detail.
type Reply = (String, String, i64, String, i64, String);

/// A join with its keys and script arguments spelled, ready to go out in any batch.
struct Prepared {
    event_id: EventId,
    request_id: RequestId,
    fan: UserId,
    /// The ask as journaled.
    ask: serde_json::Value,
    request_key: String,
    idempotency_key: Option<String>,
    /// request id, fan, fingerprint, kind, quantity, section, tier, seat count,
    /// correlation id and trace context (`platform::correlation::field`), seats
    args: Vec<String>,
}

impl Prepared {
    fn new(
        keys: &Keys,
        event_id: EventId,
        request_id: RequestId,
        fan: UserId,
        ask: &Ask,
        idempotency: Option<&str>,
    ) -> Self {
        // Without an Idempotency-Key there is no key to check: the script skips it.
        let (fingerprint, idempotency_key) = match idempotency {
            Some(digest) => (
                to_hex(&Sha256::digest(ask.to_json().to_string().as_bytes())),
                Some(keys.idempotency(event_id, fan, digest)),
            ),
            None => (String::new(), None),
        };
        let mut args = vec![request_id.to_string(), fan.to_string(), fingerprint];
        // The call that joins (its x-request-id and its trace context) travels with
        // the request: into its hash and its stream entry, to the worker's outbox
        // rows, to the email.
        let correlation = platform::correlation::field(
            platform::correlation::current().as_deref(),
            platform::telemetry::traceparent().as_deref(),
        );
        tracing::debug!(%event_id, %request_id, %fan, trail = %correlation, "joining");
        match ask {
            Ask::Seats(seats) => {
                let count = seats.len().to_string();
                args.extend([
                    "seats".into(),
                    count.clone(),
                    String::new(),
                    String::new(),
                    count,
                    correlation,
                ]);
                args.extend(seats.iter().map(|s| s.as_str().to_owned()));
            }
            Ask::Best {
                quantity,
                section,
                price_tier,
            } => args.extend([
                "best".into(),
                quantity.to_string(),
                section.clone().unwrap_or_default(),
                price_tier.clone().unwrap_or_default(),
                "0".into(),
                correlation,
            ]),
        }
        Self {
            event_id,
            request_id,
            fan,
            ask: ask.to_json(),
            request_key: keys.request(event_id, request_id),
            idempotency_key,
            args,
        }
    }
}

/// Decides `batch` (every join for `event_id`) in one script call; one reply per
/// join, in order.
async fn decide(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    batch: &[&Prepared],
) -> Result<Vec<Reply>, Error> {
    let mut invocation = proto::scripts::JOIN.key(keys.sale(event_id));
    invocation
        .key(keys.fans(event_id))
        .key(keys.fan_seats(event_id))
        .key(keys.prequeue(event_id))
        .key(keys.latecomers(event_id))
        .key(keys.next_number(event_id))
        .key(keys.stream(event_id))
        .key(keys.seat_states(event_id))
        .key(keys.layout(event_id))
        .key(keys.lease(event_id))
        .arg(Utc::now().timestamp_millis())
        .arg(batch.len());
    for join in batch {
        invocation.key(&join.request_key);
        if let Some(key) = &join.idempotency_key {
            invocation.key(key);
        }
        invocation.arg(&join.args);
    }
    // The request-to-event index lives outside the event's slot. On one server it is
    // written beside the script call, in the same round trip (an index entry of a
    // refused join names a request that does not exist, which reads as "not found").
    // After a Redis restart the script cache is empty: the pipeline fails with
    // NOSCRIPT, the script is loaded, and the pipeline (whose index writes are
    // idempotent) runs again.
    let event = event_id.to_string();
    let mut pipe = redis::pipe();
    for join in batch {
        pipe.set(keys.request_index(join.request_id), &event)
            .ignore();
    }
    let replies = if redis.is_cluster() {
        // On a cluster the index entries fall on every master and the script on the
        // event's alone. A master that is down must stall only its own events: the
        // index goes beside the script, and its failure is logged, not the join's
        // (readers then find the event in the journal).
        let mut index = redis.clone();
        let (replies, indexed) = tokio::join!(
            invocation.invoke_async::<Vec<Reply>>(redis),
            pipe.query_async::<()>(&mut index)
        );
        if let Err(error) = indexed {
            metrics::counter!("onsale_request_index_failures_total").increment(1);
            tracing::warn!(%error, %event_id, joins = batch.len(), "request index not written");
        }
        replies?
    } else {
        pipe.invoke_script(&invocation);
        match pipe.query_async::<(Vec<Reply>,)>(redis).await {
            Ok((replies,)) => replies,
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let _: String = proto::scripts::JOIN
                    .prepare_invoke()
                    .load_async(redis)
                    .await?;
                pipe.query_async::<(Vec<Reply>,)>(redis).await?.0
            }
            Err(error) => return Err(error.into()),
        }
    };
    let replies = check_replies(replies, batch.len())?;
    // A refused join's index entry names a request that does not exist: it goes,
    // off the join's path (a flood of refusals must not fill Redis).
    let refused: Vec<String> = batch
        .iter()
        .zip(&replies)
        .filter(|(_, reply)| reply.0 != "ok")
        .map(|(join, _)| keys.request_index(join.request_id))
        .collect();
    if !refused.is_empty() {
        let mut redis = redis.clone();
        tokio::spawn(async move {
            if let Err(error) = redis::cmd("UNLINK")
                .arg(&refused)
                .query_async::<i64>(&mut redis)
                .await
            {
                tracing::warn!(%error, "removing refused joins' index entries failed");
            }
        });
    }
    Ok(replies)
}

/// `replies`, when there is one per join.
fn check_replies(replies: Vec<Reply>, joins: usize) -> Result<Vec<Reply>, Error> {
    if replies.len() != joins {
        return Err(Error::Unexpected(format!(
            "join gave {} replies for {joins} requests",
            replies.len()
        )));
    }
    Ok(replies)
}

/// Journals the joins of `batch` that `replies` accepted, before anyone is told.
async fn journal_accepted(
    pool: &PgPool,
    event_id: EventId,
    batch: &[&Prepared],
    replies: &[Reply],
) -> Result<(), Error> {
    let accepted: Vec<journal::Accepted> = accepted(batch.iter().copied(), replies).collect();
    journal::record(pool, event_id, &accepted).await?;
    Ok(())
}

/// The journal rows of the joins `replies` accepted, in order.
fn accepted<'a>(
    joins: impl Iterator<Item = &'a Prepared> + 'a,
    replies: &'a [Reply],
) -> impl Iterator<Item = journal::Accepted> + 'a {
    joins
        .zip(replies)
        .filter(|(_, reply)| reply.0 == "ok")
        .map(|(join, reply)| journal::Accepted {
            request_id: join.request_id,
            fan: join.fan,
            queue_number: (reply.2 >= 0).then_some(reply.2),
            ask: join.ask.clone(),
        })
}

/// A join handed to the [`Joiner`]'s task, with where its outcome goes.
struct Pending {
    join: Prepared,
    reply: oneshot::Sender<Result<Reply, Error>>,
}

/// The line's entrance for concurrent callers: batches their joins (see the module
/// docs). Cheap to clone (one pointer: handlers' state carries one, cloned per
/// request); its task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Joiner(Arc<Entrance>);

struct Entrance {
    pool: PgPool,
    redis: Redis,
    keys: Keys,
    seat_maps: Option<Arc<dyn SeatMaps>>,
    /// One queue per lane.
    lanes: Vec<mpsc::Sender<Pending>>,
    calls: Arc<AtomicU64>,
}

/// How a batch of joins is made to survive a failover before its fans are told.
#[derive(Clone, Default)]
pub struct Durability {
    /// Replicas that must hold the batch's writes (`WAIT`); 0: none (one server).
    pub replicas: u32,
    pub timeout: std::time::Duration,
    /// Where each lane opens a connection of its own (a `WAIT` holds up the
    /// connection it is sent on); needed when `replicas` > 0.
    pub store: Option<platform::store::Store>,
}

impl Joiner {
    /// Starts the batching tasks on the current Tokio runtime. `seat_maps` loads an
    /// event's seat map when a join finds none in Redis.
    pub fn start(
        pool: PgPool,
        redis: Redis,
        keys: Keys,
        seat_maps: Option<Arc<dyn SeatMaps>>,
    ) -> Self {
        Self::start_with(pool, redis, keys, seat_maps, Durability::default())
    }

    /// [`Joiner::start`], with each batch's writes on `durability.replicas`
    /// replicas before its fans are told: a failover to a replica that had not
    /// received them would roll the event's `next` counter back and hand the same
    /// queue numbers out again (and lose the requests). A batch not replicated
    /// within the timeout is answered 503 `service_unavailable`; its joins stay in
    /// the line, and asked again (the lane's connection waits for its earlier
    /// writes too) are answered once replicated.
    pub fn start_with(
        pool: PgPool,
        redis: Redis,
        keys: Keys,
        seat_maps: Option<Arc<dyn SeatMaps>>,
        durability: Durability,
    ) -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let lanes = (0..LANES)
            .map(|_| {
                let (queue, pending) = mpsc::channel(QUEUE);
                tokio::spawn(batch_joins(
                    pending,
                    pool.clone(),
                    redis.clone(),
                    keys.clone(),
                    calls.clone(),
                    durability.clone(),
                ));
                queue
            })
            .collect();
        Self(Arc::new(Entrance {
            pool,
            redis,
            keys,
            seat_maps,
            lanes,
            calls,
        }))
    }

    /// Script calls made so far (each decides one or more joins).
    pub fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::Relaxed)
    }

    /// Puts a fan's request in the event's line.
    pub async fn join(
        &self,
        event_id: EventId,
        fan: UserId,
        ask: &Ask,
        idempotency: Option<&str>,
    ) -> Result<Joined, Error> {
        let this = &*self.0;
        let request_id = RequestId::new();
        let lane = &this.lanes[lane_of(event_id)];
        let submit = |join| async move {
            let (reply, outcome) = oneshot::channel();
            lane.send(Pending { join, reply })
                .await
                .map_err(|_| Error::Unexpected("the join queue has stopped".into()))?;
            outcome
                .await
                .map_err(|_| Error::Unexpected("a join batch was dropped".into()))?
        };
        let prepare = || Prepared::new(&this.keys, event_id, request_id, fan, ask, idempotency);
        let mut reply = submit(prepare()).await?;
        if let ("seat_map_not_loaded", Some(seat_maps)) = (reply.0.as_str(), &this.seat_maps) {
            seat_maps.ensure_loaded(event_id).await.map_err(|why| {
                tracing::error!(%event_id, why, "loading the seat map failed");
                Error::SeatMapNotLoaded(event_id)
            })?;
            reply = submit(prepare()).await?;
        }
        if reply.0 == "sale_not_loaded" {
            load_sale(&this.pool, &mut this.redis.clone(), &this.keys, event_id).await?;
            reply = submit(prepare()).await?;
        }
        outcome(&this.pool, &this.redis, &this.keys, &prepare(), reply).await
    }
}

/// The lane of `event`'s joins: the same for every join of it.
fn lane_of(event: EventId) -> usize {
    (event.as_uuid().as_u128() % LANES as u128) as usize
}

/// A lane of the [`Joiner`]: one script call at a time, each taking every join that
/// waited for it (up to [`MAX_BATCH`]). One call at a time is what makes the order of
/// arrival the order of the queue numbers; while a call is out, the next batch forms.
///
/// Each batch runs in a task of its own, awaited before the next: should it panic,
/// its callers get an error (their answers are dropped) and the joiner goes on.
async fn batch_joins(
    mut pending: mpsc::Receiver<Pending>,
    pool: PgPool,
    redis: Redis,
    keys: Keys,
    calls: Arc<AtomicU64>,
    durability: Durability,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let (journal_tx, journal_rx) = mpsc::channel(JOURNAL_BATCHES);
    tokio::spawn(journal_writer(pool.clone(), journal_rx));
    // Waiting for replicas: the lane's scripts and its WAITs go on a connection of
    // its own, so a WAIT holds up this lane only, and covers the scripts before it.
    let redis = match (&durability.store, durability.replicas) {
        (Some(store), 1..) => own_connection(store).await.unwrap_or(redis),
        _ => redis,
    };
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        metrics::histogram!("onsale_join_batch_size").record(batch.len() as f64);
        let run = tokio::spawn(send_batch(
            redis.clone(),
            keys.clone(),
            std::mem::take(&mut batch),
            calls.clone(),
            journal_tx.clone(),
            durability.clone(),
        ));
        if let Err(error) = run.await {
            tracing::error!(%error, "a join batch failed; its joins were answered with an error");
        }
    }
}

/// A lane's own connection, tried until it opens (a lane without one would WAIT on
/// the shared connection and hold up every other command on it).
async fn own_connection(store: &platform::store::Store) -> Option<Redis> {
    let mut delay = std::time::Duration::from_millis(100);
    for _ in 0..20 {
        match store.blocking().await {
            Ok(redis) => return Some(redis),
            Err(error) => {
                tracing::warn!(%error, "a join lane cannot open its own connection; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
    tracing::error!("a join lane shares the connection: its WAITs hold up other commands");
    None
}

/// Decides one batch, a script call per event in order of each event's first join,
/// waits for its replicas if asked to, journals what was accepted, and answers
/// every join in it.
async fn send_batch(
    mut redis: Redis,
    keys: Keys,
    mut batch: Vec<Pending>,
    calls: Arc<AtomicU64>,
    journal: mpsc::Sender<Decided>,
    durability: Durability,
) {
    while let Some(event_id) = batch.first().map(|p: &Pending| p.join.event_id) {
        let (these, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut batch)
            .into_iter()
            .partition(|p| p.join.event_id == event_id);
        batch = rest;
        let joins: Vec<&Prepared> = these.iter().map(|p| &p.join).collect();
        calls.fetch_add(1, Ordering::Relaxed);
        let replies = match decide(&mut redis, &keys, event_id, &joins).await {
            Ok(replies) => replies,
            Err(error) => {
                for pending in these {
                    let _ = pending.reply.send(Err(shared(&error)));
                }
                continue;
            }
        };
        if durability.replicas > 0 {
            // Bounded here too: the lane's own connection has no response timeout.
            let held = tokio::time::timeout(
                durability.timeout + std::time::Duration::from_secs(1),
                redis.wait_for_replicas(
                    &keys.sale(event_id),
                    durability.replicas,
                    durability.timeout,
                ),
            )
            .await;
            if !matches!(held, Ok(Ok(n)) if n >= durability.replicas) {
                metrics::counter!("onsale_join_batches_unreplicated_total").increment(1);
                tracing::warn!(%event_id, joins = these.len(), replicas = ?held,
                    "a join batch did not reach its replicas in time; its fans are asked to retry");
                for pending in these {
                    let _ = pending.reply.send(Err(Error::Unavailable(
                        "the line could not be copied to a replica in time; ask again".into(),
                    )));
                }
                continue;
            }
        }
        // The numbers are given: the journal writer records them (overlapping the
        // next batches' scripts) and answers this batch's fans once it has.
        if let Err(unsent) = journal
            .send(Decided {
                event_id,
                these,
                replies,
            })
            .await
        {
            for pending in unsent.0.these {
                let _ = pending.reply.send(Err(Error::Unexpected(
                    "the journal writer has stopped".into(),
                )));
            }
        }
    }
}

/// A batch the script decided, waiting for its journal write before its fans are
/// answered.
struct Decided {
    event_id: EventId,
    these: Vec<Pending>,
    replies: Vec<Reply>,
}

/// The journal writer: one write at a time, each taking every decided batch that
/// waited for it (so a busy line journals hundreds of joins per insert), then
/// answers their fans. A join the journal could not record is in Redis's line but
/// its fan is told it failed; asked again with its Idempotency-Key, the replay
/// journals it.
async fn journal_writer(pool: PgPool, mut decided: mpsc::Receiver<Decided>) {
    let mut batches = Vec::new();
    while decided.recv_many(&mut batches, JOURNAL_BATCHES).await > 0 {
        let mut by_event: Vec<(EventId, Vec<journal::Accepted>)> = Vec::new();
        for batch in &batches {
            let accepted = accepted(batch.these.iter().map(|p| &p.join), &batch.replies);
            match by_event
                .iter_mut()
                .find(|(event, _)| *event == batch.event_id)
            {
                Some((_, rows)) => rows.extend(accepted),
                None => by_event.push((batch.event_id, accepted.collect())),
            }
        }
        let mut failed = None;
        for (event_id, rows) in &by_event {
            if let Err(error) = journal::record(&pool, *event_id, rows).await {
                failed = Some(Error::from(error));
                break;
            }
        }
        metrics::histogram!("onsale_join_journal_rows")
            .record(by_event.iter().map(|(_, rows)| rows.len()).sum::<usize>() as f64);
        for batch in batches.drain(..) {
            match &failed {
                None => {
                    for (pending, reply) in batch.these.into_iter().zip(batch.replies) {
                        // A caller that went away no longer wants its answer; its
                        // request stands, as it would had the answer been lost.
                        let _ = pending.reply.send(Ok(reply));
                    }
                }
                Some(error) => {
                    for pending in batch.these {
                        let _ = pending.reply.send(Err(shared(error)));
                    }
                }
            }
        }
    }
}

/// One failure of a whole batch, as each of its joins reports it.
fn shared(error: &Error) -> Error {
    match error {
        Error::Redis(cause) => Error::Redis(cause.clone()),
        // Postgres away (a crash, a failover): the join was not journaled, so it
        // was not answered; the fan asks again.
        Error::Database(cause) => Error::Unavailable(format!("postgres: {cause}")),
        other => Error::Unexpected(other.to_string()),
    }
}

/// Puts a fan's request in the event's line with a script call of its own. For
/// tools and tests; the HTTP API goes through a [`Joiner`].
pub async fn join(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    fan: UserId,
    ask: &Ask,
    idempotency: Option<&str>,
) -> Result<Joined, Error> {
    let request_id = RequestId::new();
    let join = Prepared::new(keys, event_id, request_id, fan, ask, idempotency);
    let once = |redis: &mut Redis| {
        let mut redis = redis.clone();
        let join = &join;
        async move {
            let replies = decide(&mut redis, keys, event_id, &[join]).await?;
            journal_accepted(pool, event_id, &[join], &replies).await?;
            Ok::<_, Error>(replies.into_iter().next().unwrap_or_default())
        }
    };
    let mut reply = once(redis).await?;
    if reply.0 == "sale_not_loaded" {
        load_sale(pool, redis, keys, event_id).await?;
        reply = once(redis).await?;
    }
    outcome(pool, redis, keys, &join, reply).await
}

/// Loads a sale Redis does not have, for a join. A sale that never opened is simply
/// loaded (a new event, or a Redis restart before its on-sale); one that opened had
/// a line Redis lost, and joining now would number requests again from one and let
/// the farm serve newcomers before the fans already in line: the join waits for the
/// restore instead.
async fn load_sale(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<(), Error> {
    let sale = sale::ensure_sale(pool, event_id).await?;
    if sale.state() != proto::wire::queue::SaleState::Scheduled {
        return Err(Error::LineLost(event_id));
    }
    sale::load_into_redis(redis, keys, &sale).await
}

/// What a join's reply means to the fan.
async fn outcome(
    pool: &PgPool,
    redis: &Redis,
    keys: &Keys,
    join: &Prepared,
    reply: Reply,
) -> Result<Joined, Error> {
    let (event_id, request_id) = (join.event_id, join.request_id);
    let (status, id, number, _state, served, detail) = reply;
    let refused = |code, message: String| Err(Error::refused(code, message));
    let earlier = |id: &str| {
        id.parse::<RequestId>()
            .map_err(|_| Error::Unexpected(format!("request id {id:?}")))
    };
    match status.as_str() {
        "ok" => {
            metrics::counter!("onsale_requests_joined_total").increment(1);
            let queue_number = u64::try_from(number).ok();
            Ok(Joined {
                request_id,
                queue_number,
                position: queue_number.map(|n| n.saturating_sub(served.max(0) as u64)),
            })
        }
        "replay" => {
            let prior = earlier(&id)?;
            let status = requests::status_of(&mut redis.clone(), keys, event_id, prior).await?;
            // The first answer may have been lost because the journal failed: the
            // replay makes sure the request is journaled (same key, same ask).
            let accepted = journal::Accepted {
                request_id: prior,
                fan: join.fan,
                queue_number: status.queue_number.map(|n| n as i64),
                ask: join.ask.clone(),
            };
            journal::record(pool, event_id, &[accepted]).await?;
            Ok(Joined {
                request_id: prior,
                queue_number: status.queue_number,
                position: status.position,
            })
        }
        "seat_map_not_loaded" => Err(Error::SeatMapNotLoaded(event_id)),
        "restoring" => Err(Error::LineLost(event_id)),
        "sale_closed" => refused(ErrorCode::SaleClosed, "the sale is closed".into()),
        "sold_out" => refused(ErrorCode::SoldOut, "the event is sold out".into()),
        "already_in_line" => Err(Error::Refused {
            code: ErrorCode::AlreadyInLine,
            message: format!("you already have request {id} for this event"),
            request_id: Some(earlier(&id)?),
        }),
        "idempotency_key_reused" => Err(Error::Refused {
            code: ErrorCode::IdempotencyKeyReused,
            message: format!(
                "this Idempotency-Key was used for request {id} with a different body"
            ),
            request_id: Some(earlier(&id)?),
        }),
        "over_limit" => refused(
            ErrorCode::OverLimit,
            format!("you may ask for {detail} more seats for this event"),
        ),
        "unknown_seat" => refused(
            ErrorCode::UnknownSeat,
            format!("the venue has no seat {detail}"),
        ),
        "unknown_section" => refused(
            ErrorCode::UnknownSection,
            format!("the venue has no section {detail}"),
        ),
        "unknown_price_tier" => refused(
            ErrorCode::UnknownPriceTier,
            format!("the venue has no price tier {detail}"),
        ),
        other => Err(Error::Unexpected(format!("join replied {other}"))),
    }
}
