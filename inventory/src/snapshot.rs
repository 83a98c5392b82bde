//! The seat map anonymous readers get: one shared snapshot per event.
//!
//! Before and during an on-sale every fan refreshes the seat map, and all of them ask
//! for the same bytes. So the map is assembled once and served to everyone:
//!
//! - the **catalog** (the venue's seats in seat-map order, each with its JSON up to
//!   the state) is read from Postgres once per event per process: a venue never
//!   changes once created, and an event never changes venue;
//! - the **states** are read from Redis at most once per refresh interval per event
//!   (default 1 s), by one reader: requests that find the snapshot stale while a read
//!   is in progress wait for that read instead of making their own;
//! - the JSON body is built once per read (and not at all when no seat changed),
//!   with a strong ETag, and sent with `Cache-Control: public, max-age=<interval>`, so
//!   browsers and proxies answer repeats themselves or revalidate for a 304.
//!
//! A snapshot older than the refresh interval is never served: when a read fails,
//! the requests waiting on it, and those arriving within the interval after it, fail
//! too (503) rather than get an older map or queue up for reads of their own; while
//! Redis or Postgres is away, each event still costs them one try per interval.
//!
//! The cache is bounded: at most `max_events` events and, beyond the one just
//! loaded, about `max_seats` seats; events nobody asked for within `idle` are dropped
//! first, then the least recently asked for.
//!
//! Keys read (see `proto::keys`): `seat_states(event)` (one HGETALL per refresh), and
//! `seat_counts(event)` with `layout(event)` (whether Redis has the map at all: a
//! missing map is loaded from Postgres with [`seatmap::rebuild`], by the one reader).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use platform::store::Redis;
use proto::wire::seats::{SeatState, SeatStateName};
use proto::{EventId, Keys, SeatId};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::OnceCell;

use crate::error::Error;
use crate::seatmap::{self, LoadMode};

/// Changes whenever the body's format does, so that an ETag never names two bodies.
const FORMAT: &[u8] = b"seat-map/1";

/// How the cache behaves; [`Settings::default`] is what the services run with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The oldest snapshot served; also the `max-age` sent (in whole seconds, at
    /// least one).
    pub refresh: Duration,
    /// An event nobody asked for this long is dropped.
    pub idle: Duration,
    /// Most events cached at once.
    pub max_events: usize,
    /// Most seats cached at once, over all events (an event bigger than this alone
    /// is still cached, on its own).
    pub max_seats: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(1),
            idle: Duration::from_secs(60),
            max_events: 256,
            // About 200 bytes per seat between catalog and body: ~400 MB at most.
            max_seats: 2_000_000,
        }
    }
}

/// What the cache has done since it was made: for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Catalogs read from Postgres.
    pub catalog_loads: u64,
    /// Seat states read from Redis.
    pub state_reads: u64,
    /// Seat maps missing from Redis and loaded from Postgres by a reader.
    pub rebuilds: u64,
}

/// The shared seat-map snapshots of every event being read.
pub struct SeatMapCache {
    pool: PgPool,
    redis: Redis,
    keys: Keys,
    settings: Settings,
    cache_control: HeaderValue,
    entries: Mutex<HashMap<EventId, Arc<Entry>>>,
    /// Time zero of the `*_ms` clocks below.
    born: Instant,
    next_sweep_ms: AtomicU64,
    catalog_loads: AtomicU64,
    state_reads: AtomicU64,
    rebuilds: AtomicU64,
}

/// One event's catalog and latest snapshot.
struct Entry {
    catalog: OnceCell<Arc<Catalog>>,
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Held by the one request reading the states; the others wait on it.
    reading: tokio::sync::Mutex<()>,
    last_used_ms: AtomicU64,
    /// When the last read failed, if the read after it has not succeeded (ms + 1).
    failed_ms: AtomicU64,
    /// Seats in the catalog; 0 until it is loaded.
    seats: AtomicUsize,
}

impl Entry {
    fn new(now_ms: u64) -> Self {
        Self {
            catalog: OnceCell::new(),
            current: RwLock::new(None),
            reading: tokio::sync::Mutex::new(()),
            last_used_ms: AtomicU64::new(now_ms),
            failed_ms: AtomicU64::new(0),
            seats: AtomicUsize::new(0),
        }
    }

    /// The current snapshot, if it is younger than `refresh`.
    fn fresh(&self, refresh: Duration) -> Option<Arc<Snapshot>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|snapshot| snapshot.taken_at.elapsed() < refresh)
            .cloned()
    }

    fn last_used(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }
}

/// An event's seat map as served, with what it is served with.
pub struct Snapshot {
    body: Bytes,
    etag: HeaderValue,
    cache_control: HeaderValue,
    /// Each seat's state in catalog order, to tell whether anything changed.
    names: Arc<[SeatStateName]>,
    /// The seat map's version these states are (`Onsale-Seats-Version`): a live
    /// client applies only seat deltas newer than it.
    version: HeaderValue,
    /// The sale's state when the states were read (`Onsale-Sale-State`), so a
    /// page that is not signed in learns it from the map it polls anyway.
    sale_state: Option<HeaderValue>,
    /// When the read of the states began: the map is at least this recent.
    taken_at: Instant,
}

impl Snapshot {
    /// The JSON array of `SeatView`s.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }

    /// 200 with the body, or 304 when `if_none_match` names this snapshot.
    pub fn response(&self, if_none_match: Option<&HeaderValue>) -> Response {
        let headers = [
            (ETAG, self.etag.clone()),
            (CACHE_CONTROL, self.cache_control.clone()),
            (SEATS_VERSION, self.version.clone()),
        ];
        let mut response = if if_none_match.is_some_and(|tags| etag_listed(tags, &self.etag)) {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (
                headers,
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                self.body.clone(),
            )
                .into_response()
        };
        if let Some(state) = &self.sale_state {
            response.headers_mut().insert(SALE_STATE, state.clone());
        }
        response
    }
}

/// The header naming the seat map's version a body shows (also on a 304, so a cache
/// that revalidates learns the newer version of the same states).
pub const SEATS_VERSION: HeaderName = HeaderName::from_static("onsale-seats-version");

/// The header naming the sale's state when the map was read (absent while Redis
/// has no sale for the event).
pub const SALE_STATE: HeaderName = HeaderName::from_static("onsale-sale-state");

fn version_header(version: u64) -> HeaderValue {
    HeaderValue::from(version)
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, as RFC 9110 has
/// it for this header).
fn etag_listed(tags: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(tags), Ok(etag)) = (tags.to_str(), etag.to_str()) else {
        return false;
    };
    tags.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A seat as the catalog query gives it.
#[derive(sqlx::FromRow)]
struct CatalogRow {
    seat_id: String,
    section: String,
    row_label: String,
    number: i32,
    price_tier: String,
}

/// A seat of the catalog: its id, and its JSON object up to the state's value.
struct CatalogSeat {
    seat_id: String,
    prefix: String,
}

/// The venue's seats in seat-map order, ready to be joined with their states.
struct Catalog {
    seats: Vec<CatalogSeat>,
    /// Bytes of every prefix together, to size a body in one allocation.
    prefix_bytes: usize,
}

impl Catalog {
    fn new(rows: Vec<CatalogRow>, event_id: EventId) -> Result<Self, Error> {
        let json = |s: &str| serde_json::Value::from(s).to_string();
        let seats = rows
            .into_iter()
            .map(|row| {
                SeatId::parse(&row.seat_id).ok_or_else(|| {
                    Error::Inconsistent(format!(
                        "seat id {:?} of event {event_id} in inventory.seats",
                        row.seat_id
                    ))
                })?;
                // The field order of `SeatView`, whose serde form this must equal.
                let prefix = format!(
                    r#"{{"seat_id":{},"section":{},"row":{},"number":{},"price_tier":{},"state":""#,
                    json(&row.seat_id),
                    json(&row.section),
                    json(&row.row_label),
                    row.number,
                    json(&row.price_tier),
                );
                Ok(CatalogSeat {
                    seat_id: row.seat_id,
                    prefix,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let prefix_bytes = seats.iter().map(|seat| seat.prefix.len()).sum();
        Ok(Self {
            seats,
            prefix_bytes,
        })
    }

    /// Each seat's state, in catalog order, from the Redis seat hash.
    fn names(
        &self,
        states: &HashMap<String, String>,
        event_id: EventId,
    ) -> Result<Vec<SeatStateName>, Error> {
        self.seats
            .iter()
            .map(|seat| {
                states
                    .get(&seat.seat_id)
                    .and_then(|encoded| SeatState::decode(encoded))
                    .map(|state| state.name())
                    .ok_or_else(|| {
                        Error::Inconsistent(format!(
                            "seat {} of event {event_id} has no valid state in redis",
                            seat.seat_id
                        ))
                    })
            })
            .collect()
    }

    /// The JSON array of the seats with these states.
    fn body(&self, names: &[SeatStateName]) -> Bytes {
        // `"available"}` is the longest tail, plus the comma.
        let mut body = Vec::with_capacity(self.prefix_bytes + names.len() * 13 + 2);
        body.push(b'[');
        for (i, (seat, name)) in self.seats.iter().zip(names).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(seat.prefix.as_bytes());
            body.extend_from_slice(name.as_str().as_bytes());
            body.extend_from_slice(b"\"}");
        }
        body.push(b']');
        Bytes::from(body)
    }
}

/// A strong ETag for the body of `event_id` with these states: the catalog is fixed
/// per event, so the states decide the body.
fn etag(event_id: EventId, names: &[SeatStateName]) -> HeaderValue {
    let mut hash = Sha256::new();
    hash.update(FORMAT);
    hash.update(event_id.to_string().as_bytes());
    for name in names {
        hash.update(&name.as_str().as_bytes()[..1]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::try_from(format!("\"{hex}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

impl SeatMapCache {
    pub fn new(pool: PgPool, redis: Redis, keys: Keys, settings: Settings) -> Self {
        let max_age = settings.refresh.as_secs()
            + u64::from(settings.refresh.subsec_nanos() > 0 || settings.refresh.is_zero());
        let cache_control = HeaderValue::try_from(format!("public, max-age={max_age}"))
            .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=1"));
        Self {
            pool,
            redis,
            keys,
            settings,
            cache_control,
            entries: Mutex::new(HashMap::new()),
            born: Instant::now(),
            next_sweep_ms: AtomicU64::new(0),
            catalog_loads: AtomicU64::new(0),
            state_reads: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        }
    }

    /// The event's seat map, no older than the refresh interval.
    pub async fn get(&self, event_id: EventId) -> Result<Arc<Snapshot>, Error> {
        let entry = self.entry(event_id);
        if let Some(snapshot) = entry.fresh(self.settings.refresh) {
            return Ok(snapshot);
        }
        let _reading = entry.reading.lock().await;
        // Whoever held the lock before may have just read the states for everyone,
        // or failed to for everyone.
        if let Some(snapshot) = entry.fresh(self.settings.refresh) {
            return Ok(snapshot);
        }
        let failed = entry.failed_ms.load(Ordering::Relaxed);
        let refresh_ms = self.settings.refresh.as_millis() as u64;
        if failed > 0 && self.now_ms() < failed - 1 + refresh_ms {
            return Err(Error::Unavailable(format!(
                "the seat map of event {event_id} could not be read just now"
            )));
        }
        let read = self.read(event_id, &entry).await;
        match &read {
            Ok(_) => entry.failed_ms.store(0, Ordering::Relaxed),
            // Unknown ids must not take places in the cache from real events.
            Err(Error::EventNotFound(_)) => self.forget(event_id, &entry),
            Err(_) => entry.failed_ms.store(self.now_ms() + 1, Ordering::Relaxed),
        }
        read
    }

    pub fn stats(&self) -> Stats {
        Stats {
            catalog_loads: self.catalog_loads.load(Ordering::Relaxed),
            state_reads: self.state_reads.load(Ordering::Relaxed),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Events cached now.
    pub fn len(&self) -> usize {
        self.lock_entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Arc<Entry>>> {
        // A panic while the map was held leaves it consistent: every change is one
        // insert or remove.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The event's entry, made (and room made for it) if it has none.
    fn entry(&self, event_id: EventId) -> Arc<Entry> {
        let now = self.now_ms();
        let mut entries = self.lock_entries();
        let idle = self.settings.idle.as_millis() as u64;
        let drop_idle = |entries: &mut HashMap<EventId, Arc<Entry>>| {
            entries.retain(|_, entry| now.saturating_sub(entry.last_used()) < idle);
            self.next_sweep_ms
                .store(now + (idle / 4).max(1), Ordering::Relaxed);
        };
        if let Some(entry) = entries.get(&event_id) {
            entry.last_used_ms.store(now, Ordering::Relaxed);
            let entry = entry.clone();
            // Idle events go even while no new event arrives to push them out.
            if now >= self.next_sweep_ms.load(Ordering::Relaxed) {
                drop_idle(&mut entries);
            }
            return entry;
        }
        drop_idle(&mut entries);
        let entry = Arc::new(Entry::new(now));
        entries.insert(event_id, entry.clone());
        self.evict(&mut entries, event_id);
        metrics::gauge!("onsale_seat_map_cache_events").set(entries.len() as f64);
        entry
    }

    /// Drops the least recently used events other than `keep` until the cache is
    /// within its bounds.
    fn evict(&self, entries: &mut HashMap<EventId, Arc<Entry>>, keep: EventId) {
        loop {
            let seats: usize = entries
                .iter()
                .filter(|(id, _)| **id != keep)
                .map(|(_, entry)| entry.seats.load(Ordering::Relaxed))
                .sum();
            if entries.len() <= self.settings.max_events && seats <= self.settings.max_seats {
                return;
            }
            let oldest = entries
                .iter()
                .filter(|(id, _)| **id != keep)
                .min_by_key(|(_, entry)| entry.last_used())
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    entries.remove(&id);
                }
                None => return,
            }
        }
    }

    fn forget(&self, event_id: EventId, entry: &Arc<Entry>) {
        let mut entries = self.lock_entries();
        if entries
            .get(&event_id)
            .is_some_and(|cached| Arc::ptr_eq(cached, entry))
        {
            entries.remove(&event_id);
        }
    }

    /// Reads the states (loading the catalog first, and the seat map into Redis if
    /// Redis has none), and makes them the event's snapshot.
    async fn read(&self, event_id: EventId, entry: &Entry) -> Result<Arc<Snapshot>, Error> {
        let catalog = entry
            .catalog
            .get_or_try_init(|| self.load_catalog(event_id))
            .await?
            .clone();
        if entry.seats.swap(catalog.seats.len(), Ordering::Relaxed) == 0 {
            let mut entries = self.lock_entries();
            self.evict(&mut entries, event_id);
        }

        let taken_at = Instant::now();
        let mut redis = self.redis.clone();
        if seatmap::counts(&mut redis, &self.keys, event_id)
            .await?
            .is_none()
        {
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%event_id, "no seat map in redis, loading it from postgres");
            seatmap::rebuild(
                &self.pool,
                &mut redis,
                &self.keys,
                event_id,
                LoadMode::IfAbsent,
            )
            .await?;
        }
        let (version, states, sale) =
            seatmap::redis_states_versioned(&mut redis, &self.keys, event_id).await?;
        let sale_state = sale
            .as_deref()
            .and_then(proto::wire::queue::SaleState::parse)
            .map(|state| HeaderValue::from_static(state.as_str()));
        self.state_reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("onsale_seat_map_state_reads_total").increment(1);

        let names = catalog.names(&states, event_id)?;
        let previous = entry
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let snapshot = Arc::new(match previous {
            // Nothing moved: the same bytes, younger.
            Some(previous) if *previous.names == *names => Snapshot {
                body: previous.body.clone(),
                etag: previous.etag.clone(),
                cache_control: self.cache_control.clone(),
                names: previous.names.clone(),
                version: version_header(version),
                sale_state: sale_state.clone(),
                taken_at,
            },
            _ => Snapshot {
                body: catalog.body(&names),
                etag: etag(event_id, &names),
                cache_control: self.cache_control.clone(),
                names: names.into(),
                version: version_header(version),
                sale_state,
                taken_at,
            },
        });
        *entry
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(snapshot.clone());
        Ok(snapshot)
    }

    async fn load_catalog(&self, event_id: EventId) -> Result<Arc<Catalog>, Error> {
        let rows: Vec<CatalogRow> = sqlx::query_as(
            "SELECT s.seat_id, sec.name AS section, r.label AS row_label, s.number, sec.price_tier
             FROM inventory.events e
             JOIN inventory.seats s ON s.venue_id = e.venue_id
             JOIN inventory.sections sec
               ON sec.venue_id = s.venue_id AND sec.section_index = s.section_index
             JOIN inventory.rows r ON r.venue_id = s.venue_id
               AND r.section_index = s.section_index AND r.row_index = s.row_index
             WHERE e.event_id = $1
             ORDER BY s.section_index, s.row_index, s.number",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        // A venue has at least one seat, so no rows means no such event.
        if rows.is_empty() {
            return Err(Error::EventNotFound(event_id));
        }
        self.catalog_loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("onsale_seat_map_catalog_loads_total").increment(1);
        Ok(Arc::new(Catalog::new(rows, event_id)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::wire::seats::SeatView;

    fn rows() -> Vec<CatalogRow> {
        [("Floor", "A", 1), ("Floor", "A", 2), ("Balcony", "B", 7)]
            .into_iter()
            .map(|(section, row, number)| CatalogRow {
                seat_id: format!("{section}-{row}-{number}"),
                section: section.into(),
                row_label: row.into(),
                number,
                price_tier: "standard".into(),
            })
            .collect()
    }

    #[test]
    fn the_body_equals_the_serde_form_of_the_seat_views() {
        let event_id = EventId::new();
        let catalog = Catalog::new(rows(), event_id).expect("catalog");
        let names = [
            SeatStateName::Available,
            SeatStateName::Held,
            SeatStateName::Sold,
        ];
        let views: Vec<SeatView> = rows()
            .into_iter()
            .zip(names)
            .map(|(row, state)| SeatView {
                seat_id: SeatId::parse(&row.seat_id).expect("seat id"),
                section: row.section,
                row: row.row_label,
                number: row.number as u32,
                price_tier: row.price_tier,
                state,
            })
            .collect();
        assert_eq!(
            catalog.body(&names).as_ref(),
            serde_json::to_vec(&views).expect("json").as_slice()
        );
    }

    #[test]
    fn the_etag_follows_the_states() {
        let event_id = EventId::new();
        let all_free = [SeatStateName::Available; 3];
        let one_held = [
            SeatStateName::Available,
            SeatStateName::Held,
            SeatStateName::Available,
        ];
        assert_eq!(etag(event_id, &all_free), etag(event_id, &all_free));
        assert_ne!(etag(event_id, &all_free), etag(event_id, &one_held));
        assert_ne!(etag(event_id, &all_free), etag(EventId::new(), &all_free));
    }

    #[test]
    fn if_none_match_lists_are_read_weakly() {
        let etag = HeaderValue::from_static("\"abc\"");
        for listed in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert!(
                etag_listed(&HeaderValue::from_static(listed), &etag),
                "{listed}"
            );
        }
        for other in ["\"abcd\"", "abc", ""] {
            assert!(
                !etag_listed(&HeaderValue::from_static(other), &etag),
                "{other}"
            );
        }
    }
}
