//! Sales: the per-event state machine, its mirror in Redis, the draw at the on-sale
//! instant, and the operators' levers with their audit log.
//!
//! Postgres (`waiting_room.sales`) keeps the seed, the state and the admission rate;
//! Redis (`Keys::sale`) carries what the hot path reads: `state`, `max_per_fan`,
//! `hold_ms`, `admission_per_second`, `served`. Events being drawn, open or paused
//! are listed in `Keys::active_events` for the booking workers.

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::queue::{RequestState, SaleState};
use proto::{ErrorCode, EventId, Keys, RequestId, UserId};
use sqlx::PgPool;

use crate::error::Error;
use crate::{journal, lottery};

/// Requests numbered per `draw.lua` call: keeps each script short.
const DRAW_CHUNK: usize = 1_000;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SaleRow {
    pub event_id: EventId,
    pub state: String,
    pub seed: Vec<u8>,
    pub commitment: String,
    pub admission_per_second: i32,
    pub onsale_at: DateTime<Utc>,
    pub max_per_fan: i32,
    pub hold_seconds: i32,
}

impl SaleRow {
    pub fn state(&self) -> SaleState {
        SaleState::parse(&self.state).unwrap_or(SaleState::Closed)
    }
}

/// Sets up the event's sale, with a fresh secret seed and its public commitment,
/// unless it has one; true when this call made it. Takes any executor so that
/// whoever creates an event can make its sale in the same transaction (the event's
/// row, read here for its admission rate, need not be committed yet).
pub async fn create_sale<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event_id: EventId,
) -> Result<bool, sqlx::Error> {
    let seed = lottery::new_seed();
    let created = sqlx::query(
        "INSERT INTO waiting_room.sales (event_id, seed, commitment, admission_per_second)
         SELECT event_id, $2, $3, admission_per_second FROM inventory.events WHERE event_id = $1
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(seed.as_slice())
    .bind(lottery::commitment(&seed))
    .execute(executor)
    .await?
    .rows_affected();
    if created == 1 {
        tracing::info!(%event_id, "sale set up");
    }
    Ok(created == 1)
}

/// The event's sale as recorded, without writing anything: for readers anyone may
/// send (the lottery). `SaleNotFound` for an event whose sale was never set up.
pub async fn get(pool: &PgPool, event_id: EventId) -> Result<SaleRow, Error> {
    let row: Option<MaybeSale> = sqlx::query_as(
        "SELECT e.event_id, s.state, s.seed, s.commitment, s.admission_per_second,
                e.onsale_at, e.max_per_fan, e.hold_seconds
         FROM inventory.events e LEFT JOIN waiting_room.sales s USING (event_id)
         WHERE e.event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    row.ok_or(Error::EventNotFound(event_id))?
        .into_sale()
        .ok_or(Error::SaleNotFound(event_id))
}

/// An event joined with its sale, which it may lack (the sale's columns are then
/// null; `state` is never null in a sale that exists).
#[derive(sqlx::FromRow)]
struct MaybeSale {
    event_id: EventId,
    state: Option<String>,
    seed: Option<Vec<u8>>,
    commitment: Option<String>,
    admission_per_second: Option<i32>,
    onsale_at: DateTime<Utc>,
    max_per_fan: i32,
    hold_seconds: i32,
}

impl MaybeSale {
    fn into_sale(self) -> Option<SaleRow> {
        Some(SaleRow {
            event_id: self.event_id,
            state: self.state?,
            seed: self.seed?,
            commitment: self.commitment?,
            admission_per_second: self.admission_per_second?,
            onsale_at: self.onsale_at,
            max_per_fan: self.max_per_fan,
            hold_seconds: self.hold_seconds,
        })
    }
}

/// The event's sale, set up first if it has none. For writers only (levers, the
/// draw, joins): a sale missing there is one of an event made before sales were
/// set up with their events.
pub async fn ensure_sale(pool: &PgPool, event_id: EventId) -> Result<SaleRow, Error> {
    create_sale(pool, event_id).await?;
    get(pool, event_id).await.map_err(|error| match error {
        // Only an unknown event leaves no sale behind the insert above.
        Error::SaleNotFound(id) => Error::EventNotFound(id),
        other => other,
    })
}

/// Loads the sale into Redis where Redis has none; fields Redis has are kept (they
/// are newer than Postgres's on the hot path).
pub async fn load_into_redis(redis: &mut Redis, keys: &Keys, sale: &SaleRow) -> Result<(), Error> {
    let key = keys.sale(sale.event_id);
    let mut pipe = redis::pipe();
    pipe.hset_nx(&key, "state", sale.state().as_str())
        .ignore()
        .hset_nx(&key, proto::sale_hash::MAX_PER_FAN, sale.max_per_fan)
        .ignore()
        .hset_nx(
            &key,
            proto::sale_hash::HOLD_MS,
            i64::from(sale.hold_seconds) * 1000,
        )
        .ignore()
        .hset_nx(
            &key,
            proto::sale_hash::ADMISSION_PER_SECOND,
            sale.admission_per_second,
        )
        .ignore()
        .hset_nx(&key, proto::sale_hash::SERVED, 0)
        .ignore();
    if matches!(
        sale.state(),
        SaleState::Drawing | SaleState::Open | SaleState::Paused
    ) {
        pipe.sadd(keys.active_events(), sale.event_id.to_string())
            .ignore();
    }
    pipe.query_async::<()>(redis).await?;
    Ok(())
}

/// Writes an entry of the sale's audit log: who did what, with its detail.
pub async fn audit(
    pool: &PgPool,
    event_id: EventId,
    actor: Option<UserId>,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO waiting_room.audit (event_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(event_id)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

async fn record_state(pool: &PgPool, event_id: EventId, state: SaleState) -> Result<(), Error> {
    sqlx::query("UPDATE waiting_room.sales SET state = $2, updated_at = now() WHERE event_id = $1")
        .bind(event_id)
        .bind(state.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs the draw: freezes the pre-queue, orders it with the seed, numbers it, then
/// numbers the latecomers and opens the sale. Safe to run again after a crash or a
/// lost reply: the order is a function of the seed, every step skips what is done, and
/// a sale that Redis opened but the ledger still has as drawing is only recorded.
pub async fn draw(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    actor: Option<UserId>,
) -> Result<usize, Error> {
    let sale = ensure_sale(pool, event_id).await?;
    load_into_redis(redis, keys, &sale).await?;
    let reply: Vec<String> = proto::scripts::BEGIN_DRAW
        .key(keys.sale(event_id))
        .key(keys.prequeue(event_id))
        .invoke_async(redis)
        .await?;
    let (state, members) = reply
        .split_first()
        .ok_or_else(|| Error::Unexpected("empty begin_draw reply".into()))?;
    let state = SaleState::parse(state);
    if state == Some(SaleState::Open) && sale.state() == SaleState::Drawing {
        // Redis finished the draw but the ledger never heard of it: the drawer
        // stopped, or lost finish_draw's reply, before the update at the end. Only
        // the ledger's side is left to do.
        let cohort: Option<usize> = redis::cmd("HGET")
            .arg(keys.sale(event_id))
            .arg(proto::sale_hash::PREQUEUE_SIZE)
            .query_async(redis)
            .await?;
        let cohort =
            cohort.ok_or_else(|| Error::Unexpected("an open sale without prequeue_size".into()))?;
        return record_open(pool, redis, keys, event_id, actor, cohort).await;
    }
    if state != Some(SaleState::Drawing) {
        return Err(Error::refused(
            ErrorCode::InvalidTransition,
            format!(
                "the sale is {}, not scheduled",
                state.map_or("not loaded", SaleState::as_str)
            ),
        ));
    }
    let _: () = redis::cmd("SADD")
        .arg(keys.active_events())
        .arg(event_id.to_string())
        .query_async(redis)
        .await?;
    record_state(pool, event_id, SaleState::Drawing).await?;

    let cohort: Vec<RequestId> = members
        .iter()
        .map(|m| {
            m.parse()
                .map_err(|_| Error::Unexpected(format!("request id {m:?} in the pre-queue")))
        })
        .collect::<Result<_, _>>()?;
    let computed = lottery::draw_order(&sale.seed, &cohort);
    let numbers: Vec<i32> = (1..=computed.len() as i32).collect();
    sqlx::query(
        "INSERT INTO waiting_room.draw_entries (event_id, request_id, queue_number)
         SELECT $1, * FROM UNNEST($2::uuid[], $3::int[]) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(computed.iter().map(RequestId::as_uuid).collect::<Vec<_>>())
    .bind(&numbers)
    .execute(pool)
    .await?;
    // The draw resumes from what was recorded: whoever recorded the order first (a
    // drawer that crashed, or one running beside this one) fixed every number.
    let order: Vec<RequestId> = sqlx::query_scalar(
        "SELECT request_id FROM waiting_room.draw_entries WHERE event_id = $1 ORDER BY queue_number",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    if order != computed {
        return Err(Error::Unexpected(format!(
            "the recorded draw of event {event_id} ({} entries) differs from the pre-queue ({} entries)",
            order.len(),
            computed.len()
        )));
    }

    for (chunk_index, chunk) in order.chunks(DRAW_CHUNK).enumerate() {
        let mut invocation = proto::scripts::DRAW.key(keys.sale(event_id));
        invocation.key(keys.stream(event_id));
        for id in chunk {
            invocation.key(keys.request(event_id, *id));
        }
        invocation.arg(chunk_index * DRAW_CHUNK + 1);
        for id in chunk {
            invocation.arg(id.to_string());
        }
        let numbered: Result<i64, redis::RedisError> = invocation.invoke_async(redis).await;
        if let Err(error) = numbered {
            return finished_by_another(pool, redis, keys, event_id, actor, error).await;
        }
    }

    loop {
        let latecomers: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.latecomers(event_id))
            .arg(0)
            .arg(-1)
            .query_async(redis)
            .await?;
        let mut invocation = proto::scripts::FINISH_DRAW.key(keys.sale(event_id));
        invocation
            .key(keys.stream(event_id))
            .key(keys.latecomers(event_id))
            .key(keys.next_number(event_id))
            .key(keys.prequeue(event_id));
        for id in &latecomers {
            let id: RequestId = id
                .parse()
                .map_err(|_| Error::Unexpected(format!("latecomer {id:?}")))?;
            invocation.key(keys.request(event_id, id));
        }
        invocation.arg(order.len());
        for id in &latecomers {
            invocation.arg(id);
        }
        let outcome: String = match invocation.invoke_async(redis).await {
            Ok(outcome) => outcome,
            Err(error) => {
                return finished_by_another(pool, redis, keys, event_id, actor, error).await;
            }
        };
        if SaleState::parse(&outcome) == Some(SaleState::Open) {
            break;
        }
    }
    record_open(pool, redis, keys, event_id, actor, order.len()).await
}

/// A numbering script refused because the sale is no longer drawing: another drawer
/// (the scheduler beside an operator, two gateways) finished the draw first. Then
/// only the ledger's side may be left; anything else is the error it was.
async fn finished_by_another(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    actor: Option<UserId>,
    error: redis::RedisError,
) -> Result<usize, Error> {
    let (state, cohort): (Option<String>, Option<usize>) = redis::cmd("HMGET")
        .arg(keys.sale(event_id))
        .arg(&[proto::sale_hash::STATE, proto::sale_hash::PREQUEUE_SIZE])
        .query_async(redis)
        .await?;
    match (state.as_deref().and_then(SaleState::parse), cohort) {
        (Some(SaleState::Open), Some(cohort)) => {
            record_open(pool, redis, keys, event_id, actor, cohort).await
        }
        _ => Err(error.into()),
    }
}

/// Journals the numbers the draw gave (the cohort's are in `draw_entries`; the
/// latecomers' only in Redis, read from their request hashes).
async fn journal_numbers(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<(), Error> {
    journal::record_numbers(pool, event_id, &[]).await?;
    let unnumbered: Vec<RequestId> = sqlx::query_scalar(
        "SELECT request_id FROM waiting_room.requests
         WHERE event_id = $1 AND queue_number IS NULL AND ended IS NULL",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    for chunk in unnumbered.chunks(1_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.hget(keys.request(event_id, *id), "number");
        }
        let numbers: Vec<Option<i64>> = pipe.query_async(redis).await?;
        let numbered: Vec<(RequestId, i64)> = chunk
            .iter()
            .zip(numbers)
            .filter_map(|(id, n)| n.map(|n| (*id, n)))
            .collect();
        journal::record_numbers(pool, event_id, &numbered).await?;
    }
    Ok(())
}

/// The ledger's side of a finished draw: the sale is open, with its cohort's size.
/// Recorded (and audited) once, however many drawers finish.
async fn record_open(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    actor: Option<UserId>,
    cohort: usize,
) -> Result<usize, Error> {
    let opened = sqlx::query(
        "UPDATE waiting_room.sales SET state = 'open', drawn_at = now(), cohort_size = $2, updated_at = now()
         WHERE event_id = $1 AND state IN ('scheduled', 'drawing')",
    )
    .bind(event_id)
    .bind(cohort as i32)
    .execute(pool)
    .await?
    .rows_affected();
    if opened == 0 {
        return Ok(cohort);
    }
    journal_numbers(pool, redis, keys, event_id).await?;
    audit(
        pool,
        event_id,
        actor,
        "open",
        serde_json::json!({"cohort": cohort}),
    )
    .await?;
    metrics::counter!("onsale_draws_total").increment(1);
    tracing::info!(%event_id, cohort, "sale open: pre-queue drawn");
    Ok(cohort)
}

/// An operator's lever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lever {
    Open,
    Pause,
    Resume,
    Close,
}

impl Lever {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Lever::Open),
            "pause" => Some(Lever::Pause),
            "resume" => Some(Lever::Resume),
            "close" => Some(Lever::Close),
            _ => None,
        }
    }

    /// Where a lever other than `Open` moves the sale, and from which states.
    pub(crate) fn transition(self) -> (SaleState, &'static [SaleState]) {
        match self {
            Lever::Pause => (SaleState::Paused, &[SaleState::Open]),
            Lever::Resume => (SaleState::Open, &[SaleState::Paused]),
            Lever::Close | Lever::Open => (
                SaleState::Closed,
                &[
                    SaleState::Scheduled,
                    SaleState::Open,
                    SaleState::Paused,
                    SaleState::SoldOut,
                ],
            ),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lever::Open => "open",
            Lever::Pause => "pause",
            Lever::Resume => "resume",
            Lever::Close => "close",
        }
    }
}

/// Pulls a lever; returns the sale's new state. Pause, resume and close are one
/// recorded intent, applied and audited exactly once (`crate::levers`): a pull of
/// the same lever that failed half-way is finished first, and answers this one.
pub async fn pull(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    lever: Lever,
    actor: UserId,
) -> Result<SaleState, Error> {
    let sale = ensure_sale(pool, event_id).await?;
    load_into_redis(redis, keys, &sale).await?;
    if lever == Lever::Open {
        draw(pool, redis, keys, event_id, Some(actor)).await?;
        return Ok(SaleState::Open);
    }
    let guard = crate::levers::lock(pool, event_id, true)
        .await?
        .ok_or_else(|| Error::Unexpected("the lever lock was not taken".into()))?;
    if let Some(finished) = crate::levers::finish_pending(pool, redis, keys, event_id).await?
        && finished.action == lever.as_str()
        && let Some(state) = finished.state
    {
        guard.commit().await?;
        return Ok(state);
    }
    let pull =
        crate::levers::record(pool, redis, keys, event_id, lever.as_str(), actor, None).await?;
    let (to, _) = lever.transition();
    let (changed, previous) = crate::levers::apply_lever(redis, keys, event_id, lever).await?;
    let previous_text = previous.map_or("not loaded", SaleState::as_str);
    if !changed {
        crate::levers::refuse(pool, pull.pull_id).await?;
        guard.commit().await?;
        return Err(Error::refused(
            ErrorCode::InvalidTransition,
            format!("cannot {} a sale that is {previous_text}", lever.as_str()),
        ));
    }
    let mut detail = serde_json::json!({"from": previous, "to": to});
    if lever == Lever::Close && previous == Some(SaleState::Scheduled) {
        // Nobody will draw this pre-queue: every request in it ends, and its fan is
        // told why and is free again.
        let ended = end_prequeue(pool, redis, keys, event_id, "sale_closed").await?;
        detail["prequeue_ended"] = ended.into();
    }
    crate::levers::finish(pool, &pull, Some(to), detail).await?;
    guard.commit().await?;
    tracing::info!(%event_id, %actor, lever = lever.as_str(), from = previous_text, "sale lever pulled");
    Ok(to)
}

/// Ends every request still waiting in the pre-queue as `rejected` with `reason`;
/// returns how many ended. Only for a sale that will not be drawn (closed while
/// scheduled): the set is left in place, as a draw would need it.
pub(crate) async fn end_prequeue(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    reason: &str,
) -> Result<usize, Error> {
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.prequeue(event_id))
        .query_async(redis)
        .await?;
    let ids: Vec<RequestId> = members.iter().filter_map(|m| m.parse().ok()).collect();
    let mut ended = 0;
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        pipe.load_script(&proto::scripts::CANCEL).ignore();
        let invocations: Vec<_> = chunk
            .iter()
            .map(|id| proto::scripts::cancel(keys, event_id, *id, RequestState::Rejected, reason))
            .collect();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let replies: Vec<(i64, String)> = pipe.query_async(redis).await?;
        let these: Vec<RequestId> = chunk
            .iter()
            .zip(&replies)
            .filter(|(_, (changed, _))| *changed == 1)
            .map(|(id, _)| *id)
            .collect();
        journal::record_ended(pool, &these, journal::Ended::Rejected(reason)).await?;
        ended += these.len();
    }
    tracing::info!(%event_id, ended, reason, "pre-queue ended");
    Ok(ended)
}

/// Sets how many requests per second the workers admit.
pub async fn set_admission(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    per_second: u32,
    actor: UserId,
) -> Result<(), Error> {
    let allowed = proto::wire::queue::ADMISSION_PER_SECOND;
    if !allowed.contains(&per_second) {
        return Err(Error::refused(
            ErrorCode::InvalidRequest,
            format!(
                "per_second must be {} to {}",
                allowed.start(),
                allowed.end()
            ),
        ));
    }
    let sale = ensure_sale(pool, event_id).await?;
    load_into_redis(redis, keys, &sale).await?;
    // One recorded intent, as a lever (`crate::levers`): a retry of a change that
    // failed half-way is answered by it, audited once.
    let guard = crate::levers::lock(pool, event_id, true)
        .await?
        .ok_or_else(|| Error::Unexpected("the lever lock was not taken".into()))?;
    if let Some(finished) = crate::levers::finish_pending(pool, redis, keys, event_id).await?
        && finished.per_second == Some(per_second as i32)
    {
        guard.commit().await?;
        return Ok(());
    }
    let previous = get(pool, event_id).await?.admission_per_second;
    let pull = crate::levers::record(
        pool,
        redis,
        keys,
        event_id,
        "admission",
        actor,
        Some(per_second as i32),
    )
    .await?;
    crate::levers::apply_admission(redis, keys, event_id, per_second.into()).await?;
    crate::levers::finish(
        pool,
        &pull,
        None,
        serde_json::json!({"per_second": per_second, "from": previous, "to": per_second}),
    )
    .await?;
    guard.commit().await?;
    Ok(())
}

/// Records in the ledger the moves the farm made in Redis, which the waiting room
/// (owner of `waiting_room.sales`) did not: open or paused to sold out (the booking
/// workers), and sold out to open again (a refund gave seats back, `unsell.lua`;
/// only events yet to start are looked at). Each is audited. Returns how many it
/// recorded.
pub async fn mirror_farm_states(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
) -> Result<usize, Error> {
    let live: Vec<(EventId, String)> = sqlx::query_as(
        "(SELECT event_id, state FROM waiting_room.sales WHERE state IN ('open', 'paused') LIMIT 1000)
         UNION ALL
         (SELECT s.event_id, s.state FROM waiting_room.sales s JOIN inventory.events e USING (event_id)
          WHERE s.state = 'sold_out' AND e.starts_at > now() LIMIT 1000)",
    )
    .fetch_all(pool)
    .await?;
    if live.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (event_id, _) in &live {
        pipe.hget(keys.sale(*event_id), "state");
    }
    let states: Vec<Option<String>> = pipe.query_async(redis).await?;
    let mut recorded = 0;
    for ((event_id, recorded_state), state) in live.into_iter().zip(states) {
        let sold_out = SaleState::SoldOut.as_str();
        let (to, from, action): (SaleState, &[&str], &str) =
            match state.as_deref().and_then(SaleState::parse) {
                Some(SaleState::SoldOut) if recorded_state != sold_out => (
                    SaleState::SoldOut,
                    &[SaleState::Open.as_str(), SaleState::Paused.as_str()],
                    "sold_out",
                ),
                Some(SaleState::Open) if recorded_state == sold_out => {
                    (SaleState::Open, &[sold_out], "reopened")
                }
                _ => continue,
            };
        let changed = sqlx::query(
            "UPDATE waiting_room.sales SET state = $2, updated_at = now()
             WHERE event_id = $1 AND state = ANY($3)",
        )
        .bind(event_id)
        .bind(to.as_str())
        .bind(from)
        .execute(pool)
        .await?
        .rows_affected();
        if changed == 1 {
            let detail = if to == SaleState::Open {
                serde_json::json!({"from": "sold_out", "to": "open", "why": "refunded seats came back"})
            } else {
                serde_json::json!({})
            };
            audit(pool, event_id, None, action, detail).await?;
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// Events whose on-sale time has come and whose sale has not been drawn.
pub async fn due_for_draw(pool: &PgPool) -> Result<Vec<EventId>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT e.event_id FROM inventory.events e
         LEFT JOIN waiting_room.sales s USING (event_id)
         WHERE e.onsale_at <= now() AND e.starts_at > now()
           AND (s.state IS NULL OR s.state IN ('scheduled', 'drawing'))
         ORDER BY e.onsale_at LIMIT 100",
    )
    .fetch_all(pool)
    .await?)
}
