//! An event's seat state in Redis, and its rebuild from the Postgres ledger.
//!
//! Redis is the fast allocator the booking workers hold seats in; Postgres is the
//! record. [`rebuild`] reconstructs the Redis seat map from Postgres: every seat of
//! the venue is available unless `booking.seat_claims` holds a claim on it.
//!
//! Keys (see `proto::keys`):
//! - `seat_states(event)`: hash seat id → encoded `SeatState`
//! - `seat_states_staging(event, generation)`: hash written by one rebuild, then
//!   renamed over `seat_states` by the `commit_seat_map` script
//! - `seat_counts(event)`: hash `available`, `held`, `sold`, `generation`
//! - `row_free(event)`: hash `<section>-<row>` → free seats in the row, and
//!   `sec:<section>` → free seats in the section
//! - `layout(event)`: hash `section:<name>` → `row:seats,...` front to back,
//!   `_sections` → section names in order, `tier:<tier>` → its sections
//!
//! The rebuild stages all three maps under keys of its own generation and swaps them
//! in with one script, so the hold script always sees them agree.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::wire::seats::{SeatState, SeatStateName, SeatView};
use proto::{EventId, Keys, RequestId, SeatId, VenueId};
use sqlx::PgPool;

use crate::error::Error;

/// Fields per `HSET` while staging a rebuild: large enough to be few round trips,
/// small enough not to block Redis for long on a 200,000-seat venue.
const STAGING_CHUNK: usize = 2_000;
/// A staging map left behind by a crashed rebuild disappears after this long.
const STAGING_TTL_SECONDS: u64 = 600;

/// Whether a rebuild replaces a live seat map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Replace whatever Redis holds: the operator's repair after Redis was lost or
    /// diverged, while the event's sale is paused.
    Force,
    /// Load only an event Redis knows nothing of (new event, or Redis restarted).
    IfAbsent,
}

impl LoadMode {
    fn as_str(self) -> &'static str {
        match self {
            LoadMode::Force => "force",
            LoadMode::IfAbsent => "if_absent",
        }
    }
}

/// Seat counters of an event as Redis has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counts {
    pub available: u32,
    pub held: u32,
    pub sold: u32,
}

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub event_id: EventId,
    pub generation: String,
    /// False when `IfAbsent` found a live map and left it alone.
    pub committed: bool,
    pub counts: Counts,
}

/// A seat of the venue, and the event's claim on it in the ledger, if any.
#[derive(sqlx::FromRow)]
struct LedgerSeat {
    seat_id: String,
    state: Option<String>,
    request_id: Option<RequestId>,
    expires_at: Option<DateTime<Utc>>,
}

async fn venue_of(pool: &PgPool, event_id: EventId) -> Result<VenueId, Error> {
    sqlx::query_scalar("SELECT venue_id FROM inventory.events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::EventNotFound(event_id))
}

/// Every seat's state according to the Postgres ledger, in seat-map order.
pub async fn ledger_states(
    pool: &PgPool,
    event_id: EventId,
) -> Result<Vec<(SeatId, SeatState)>, Error> {
    let venue_id = venue_of(pool, event_id).await?;
    let rows: Vec<LedgerSeat> = sqlx::query_as(
        "SELECT s.seat_id, c.state, c.request_id, c.expires_at
         FROM inventory.seats s
         LEFT JOIN booking.seat_claims c ON c.event_id = $2 AND c.seat_id = s.seat_id
         WHERE s.venue_id = $1
         ORDER BY s.section_index, s.row_index, s.number",
    )
    .bind(venue_id)
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let seat = SeatId::parse(&row.seat_id).ok_or_else(|| {
                Error::Inconsistent(format!("seat id {:?} in inventory.seats", row.seat_id))
            })?;
            let state = match (row.state.as_deref(), row.request_id, row.expires_at) {
                (None, _, _) => SeatState::Available,
                (Some("held"), Some(request), Some(expires)) => SeatState::Held {
                    request,
                    expires_at_ms: expires.timestamp_millis(),
                },
                (Some("sold"), Some(request), _) => SeatState::Sold { request },
                (other, _, _) => {
                    return Err(Error::Inconsistent(format!(
                        "claim state {other:?} on seat {seat}"
                    )));
                }
            };
            Ok((seat, state))
        })
        .collect()
}

/// The venue's sections and rows in seat-map order: `(section, tier, row, seats)`.
async fn layout_rows(
    pool: &PgPool,
    event_id: EventId,
) -> Result<Vec<(String, String, String, i32)>, Error> {
    Ok(sqlx::query_as(
        "SELECT sec.name, sec.price_tier, r.label, r.seats
         FROM inventory.events e
         JOIN inventory.sections sec ON sec.venue_id = e.venue_id
         JOIN inventory.rows r ON r.venue_id = sec.venue_id AND r.section_index = sec.section_index
         WHERE e.event_id = $1
         ORDER BY sec.section_index, r.row_index",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?)
}

/// The layout hash's fields (see the module docs).
fn layout_fields(rows: &[(String, String, String, i32)]) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String, Vec<String>)> = Vec::new();
    for (section, tier, row, seats) in rows {
        match sections.last_mut() {
            Some((name, _, list)) if name == section => list.push(format!("{row}:{seats}")),
            _ => sections.push((
                section.clone(),
                tier.clone(),
                vec![format!("{row}:{seats}")],
            )),
        }
    }
    let mut tiers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (section, tier, _) in &sections {
        tiers
            .entry(tier.as_str())
            .or_default()
            .push(section.as_str());
    }
    let mut fields = vec![(
        "_sections".to_owned(),
        sections
            .iter()
            .map(|(name, _, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )];
    fields.extend(
        tiers
            .into_iter()
            .map(|(tier, list)| (format!("tier:{tier}"), list.join(","))),
    );
    fields.extend(
        sections
            .iter()
            .map(|(name, _, list)| (format!("section:{name}"), list.join(","))),
    );
    fields
}

/// The row key of a seat id: `"Floor-A-12"` → `"Floor-A"`.
fn row_key(seat: &SeatId) -> &str {
    seat.as_str()
        .rsplit_once('-')
        .map(|(row, _)| row)
        .unwrap_or_default()
}

/// Rebuilds the event's Redis seat map from Postgres.
pub async fn rebuild(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    mode: LoadMode,
) -> Result<RebuildReport, Error> {
    let seats = ledger_states(pool, event_id).await?;
    let mut counts = Counts::default();
    for (_, state) in &seats {
        match state.name() {
            SeatStateName::Available => counts.available += 1,
            SeatStateName::Held => counts.held += 1,
            SeatStateName::Sold => counts.sold += 1,
        }
    }

    // Free seats per row ("Floor-A") and per section ("sec:Floor"), for the hold
    // script to skip full rows and sections without reading their seats.
    let mut free_per_row: BTreeMap<String, u32> = BTreeMap::new();
    for (seat, state) in &seats {
        if *state == SeatState::Available {
            let row = row_key(seat);
            *free_per_row.entry(row.to_owned()).or_default() += 1;
            let section = row.split('-').next().unwrap_or_default();
            *free_per_row.entry(format!("sec:{section}")).or_default() += 1;
        }
    }
    let layout = layout_fields(&layout_rows(pool, event_id).await?);

    let generation = uuid::Uuid::now_v7().to_string();
    let staging = keys.seat_states_staging(event_id, &generation);
    let staging_rows = keys.row_free_staging(event_id, &generation);
    let staging_layout = keys.layout_staging(event_id, &generation);
    let mut pipe = redis::pipe();
    for chunk in seats.chunks(STAGING_CHUNK) {
        let fields: Vec<(&str, String)> = chunk
            .iter()
            .map(|(seat, state)| (seat.as_str(), state.encode()))
            .collect();
        pipe.hset_multiple(&staging, &fields).ignore();
    }
    let rows: Vec<(String, u32)> = free_per_row.into_iter().collect();
    for chunk in rows.chunks(STAGING_CHUNK) {
        pipe.hset_multiple(&staging_rows, chunk).ignore();
    }
    pipe.hset_multiple(&staging_layout, &layout).ignore();
    for key in [&staging, &staging_rows, &staging_layout] {
        pipe.expire(key, STAGING_TTL_SECONDS as i64).ignore();
    }
    pipe.query_async::<()>(redis).await?;

    let committed: i64 = proto::scripts::COMMIT_SEAT_MAP
        .key(&staging)
        .key(keys.seat_states(event_id))
        .key(keys.seat_counts(event_id))
        .key(&staging_rows)
        .key(keys.row_free(event_id))
        .key(&staging_layout)
        .key(keys.layout(event_id))
        .arg(mode.as_str())
        .arg(&generation)
        .arg(counts.available)
        .arg(counts.held)
        .arg(counts.sold)
        .invoke_async(redis)
        .await?;
    let committed = committed == 1;
    if committed {
        metrics::counter!("onsale_seat_map_rebuilds_total", "mode" => mode.as_str()).increment(1);
        tracing::info!(%event_id, %generation, mode = mode.as_str(), available = counts.available,
            held = counts.held, sold = counts.sold, "seat map loaded from postgres");
    }
    Ok(RebuildReport {
        event_id,
        generation,
        committed,
        counts,
    })
}

/// The event's counters, or `None` when Redis has no seat map for it.
pub async fn counts(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Option<Counts>, Error> {
    type Fields = (Option<u32>, Option<u32>, Option<u32>, Option<String>);
    let (fields, layout, seats): (Fields, bool, bool) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.seat_counts(event_id))
        .arg(&["available", "held", "sold", "generation"])
        .exists(keys.layout(event_id))
        .exists(keys.seat_states(event_id))
        .query_async(redis)
        .await?;
    // A map without its layout (written by an older version) or without its seats
    // (keys evicted one by one) counts as absent.
    Ok(match (fields, layout && seats) {
        ((Some(available), Some(held), Some(sold), Some(_)), true) => Some(Counts {
            available,
            held,
            sold,
        }),
        _ => None,
    })
}

/// The event's counters, loading its seat map from Postgres first if Redis has none.
pub async fn ensure_loaded(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Counts, Error> {
    if let Some(counts) = counts(redis, keys, event_id).await? {
        return Ok(counts);
    }
    tracing::warn!(%event_id, "no seat map in redis, loading it from postgres");
    let report = rebuild(pool, redis, keys, event_id, LoadMode::IfAbsent).await?;
    if report.committed {
        return Ok(report.counts);
    }
    // Someone else loaded it between our read and our commit: theirs is live.
    counts(redis, keys, event_id).await?.ok_or_else(|| {
        Error::Inconsistent(format!("seat map of event {event_id} vanished during load"))
    })
}

/// Every seat's state as Redis has it.
pub async fn redis_states(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<HashMap<String, String>, Error> {
    Ok(redis::cmd("HGETALL")
        .arg(keys.seat_states(event_id))
        .query_async(redis)
        .await?)
}

/// Every seat's state with the seat map's version (`counts.version`, which every
/// script that changes a seat bumps in the same step), read in one transaction: the
/// states are exactly those of that version.
pub async fn redis_states_versioned(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<(u64, HashMap<String, String>, Option<String>), Error> {
    let (version, states, sale): (Option<u64>, HashMap<String, String>, Option<String>) =
        redis::pipe()
            .atomic()
            .hget(keys.seat_counts(event_id), "version")
            .hgetall(keys.seat_states(event_id))
            .hget(keys.sale(event_id), "state")
            .query_async(redis)
            .await?;
    Ok((version.unwrap_or(0), states, sale))
}

/// A seat of the venue as the seat map shows it, before state is added.
#[derive(sqlx::FromRow)]
struct CatalogSeat {
    seat_id: String,
    section: String,
    row_label: String,
    number: i32,
    price_tier: String,
}

/// The event's seat map: the venue's seats from Postgres, their states from Redis.
pub async fn seat_map(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Vec<SeatView>, Error> {
    let venue_id = venue_of(pool, event_id).await?;
    ensure_loaded(pool, redis, keys, event_id).await?;
    let catalog: Vec<CatalogSeat> = sqlx::query_as(
        "SELECT s.seat_id, sec.name AS section, r.label AS row_label, s.number, sec.price_tier
         FROM inventory.seats s
         JOIN inventory.sections sec USING (venue_id, section_index)
         JOIN inventory.rows r USING (venue_id, section_index, row_index)
         WHERE s.venue_id = $1
         ORDER BY s.section_index, s.row_index, s.number",
    )
    .bind(venue_id)
    .fetch_all(pool)
    .await?;
    let states = redis_states(redis, keys, event_id).await?;
    catalog
        .into_iter()
        .map(|seat| {
            let state = states
                .get(&seat.seat_id)
                .and_then(|encoded| SeatState::decode(encoded))
                .ok_or_else(|| {
                    Error::Inconsistent(format!(
                        "seat {} of event {event_id} has no valid state in redis",
                        seat.seat_id
                    ))
                })?;
            let seat_id = SeatId::parse(&seat.seat_id).ok_or_else(|| {
                Error::Inconsistent(format!("seat id {:?} in inventory.seats", seat.seat_id))
            })?;
            Ok(SeatView {
                seat_id,
                section: seat.section,
                row: seat.row_label,
                number: seat.number as u32,
                price_tier: seat.price_tier,
                state: state.name(),
            })
        })
        .collect()
}

/// A seat on which Redis and the Postgres ledger disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatDiff {
    pub seat_id: String,
    /// The raw Redis value; `None` when Redis has no entry for the seat.
    pub redis: Option<String>,
    /// The ledger's state; `None` when the venue has no such seat.
    pub ledger: Option<SeatState>,
}

/// Every seat whose Redis state differs from the ledger's; empty when Redis agrees
/// with Postgres seat for seat.
pub async fn diff_against_ledger(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
) -> Result<Vec<SeatDiff>, Error> {
    let ledger = ledger_states(pool, event_id).await?;
    let mut live = redis_states(redis, keys, event_id).await?;
    let mut diff = Vec::new();
    for (seat, state) in ledger {
        let in_redis = live.remove(seat.as_str());
        if in_redis.as_deref().and_then(SeatState::decode) != Some(state) {
            diff.push(SeatDiff {
                seat_id: seat.as_str().to_owned(),
                redis: in_redis,
                ledger: Some(state),
            });
        }
    }
    let extra: BTreeMap<String, String> = live.into_iter().collect();
    diff.extend(extra.into_iter().map(|(seat_id, value)| SeatDiff {
        seat_id,
        redis: Some(value),
        ledger: None,
    }));
    Ok(diff)
}
