//! Events: validation against their venue, and their rows in `inventory.events` and
//! `inventory.event_prices`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use proto::wire::inventory::CreateEvent;
use proto::{ErrorCode, EventId, VenueId};
use sqlx::PgPool;

use crate::OnEventCreated;
use crate::error::Error;

pub const MAX_PER_FAN: u32 = 50;
pub const HOLD_SECONDS: std::ops::RangeInclusive<u32> = 60..=3_600;
pub use proto::wire::queue::ADMISSION_PER_SECOND;
/// A price above this (one million in the currency's units) is a typo.
pub const MAX_PRICE_CENTS: u64 = 100_000_000;

/// An event as stored, without seat counts.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: EventId,
    pub venue_id: VenueId,
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub onsale_at: DateTime<Utc>,
    pub max_per_fan: i32,
    pub hold_seconds: i32,
    pub admission_per_second: i32,
    pub seat_count: i32,
    pub refund_until: Option<DateTime<Utc>>,
    pub refund_fee_percent: Option<i16>,
    pub tax_rate_bp: i32,
    pub tax_included: bool,
    /// An operator cancelled it (`payments.cancellations`).
    pub cancelled: bool,
}

impl EventRow {
    pub fn refund_policy(&self) -> Option<proto::wire::inventory::RefundPolicy> {
        Some(proto::wire::inventory::RefundPolicy {
            until: self.refund_until?,
            fee_percent: u8::try_from(self.refund_fee_percent?).ok()?,
        })
    }

    pub fn tax(&self) -> proto::wire::inventory::Tax {
        proto::wire::inventory::Tax::from_bp(self.tax_rate_bp, self.tax_included)
    }
}

/// Checks an event on its own; [`create`] checks it against its venue.
pub fn validate(event: &CreateEvent) -> Result<(), Error> {
    let longest = crate::venues::MAX_NAME_CHARS;
    if !crate::venues::is_display_name(&event.name) {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!(
                "event name must be 1 to {longest} characters, not only spaces, no control characters"
            ),
        ));
    }
    if event.onsale_at >= event.starts_at {
        return Err(Error::invalid(
            ErrorCode::OnsaleAfterStart,
            "onsale_at must be before starts_at",
        ));
    }
    if event.max_per_fan == 0 || event.max_per_fan > MAX_PER_FAN {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!("max_per_fan must be 1 to {MAX_PER_FAN}"),
        ));
    }
    if !HOLD_SECONDS.contains(&event.hold_seconds) {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!(
                "hold_seconds must be {} to {}",
                HOLD_SECONDS.start(),
                HOLD_SECONDS.end()
            ),
        ));
    }
    if !ADMISSION_PER_SECOND.contains(&event.admission_per_second) {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!(
                "admission_per_second must be {} to {}",
                ADMISSION_PER_SECOND.start(),
                ADMISSION_PER_SECOND.end()
            ),
        ));
    }
    if let Some((tier, _)) = event
        .prices
        .iter()
        .find(|(_, cents)| **cents > MAX_PRICE_CENTS)
    {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!("price of tier {tier:?} is above {MAX_PRICE_CENTS} cents"),
        ));
    }
    if let Some(policy) = &event.refund_policy
        && policy.fee_percent > 100
    {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            "refund_policy.fee_percent must be 0 to 100",
        ));
    }
    if let Some(tax) = &event.tax
        && tax.rate_bp().is_none()
    {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            "tax.rate_percent must be 0 to 100, with at most two decimals",
        ));
    }
    Ok(())
}

/// Compares an event's prices with the tiers its venue uses.
pub fn check_prices(
    prices: &BTreeMap<String, u64>,
    venue_tiers: &BTreeSet<String>,
) -> Result<(), Error> {
    if let Some(missing) = venue_tiers.iter().find(|tier| !prices.contains_key(*tier)) {
        return Err(Error::invalid(
            ErrorCode::MissingPrice,
            format!("no price for tier {missing:?}, which the venue uses"),
        ));
    }
    if let Some(unknown) = prices.keys().find(|tier| !venue_tiers.contains(*tier)) {
        return Err(Error::invalid(
            ErrorCode::UnknownPriceTier,
            format!("the venue has no seats in price tier {unknown:?}"),
        ));
    }
    Ok(())
}

/// Stores an event after checking it against its venue.
pub async fn create(pool: &PgPool, event: &CreateEvent) -> Result<EventId, Error> {
    create_with(pool, event, None).await
}

/// Stores an event after checking it against its venue, and runs `hook` in the
/// same transaction: the event exists with what the hook makes, or not at all.
pub async fn create_with(
    pool: &PgPool,
    event: &CreateEvent,
    hook: Option<&dyn OnEventCreated>,
) -> Result<EventId, Error> {
    validate(event)?;
    let tiers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT price_tier FROM inventory.sections WHERE venue_id = $1",
    )
    .bind(event.venue_id)
    .fetch_all(pool)
    .await?;
    if tiers.is_empty() {
        return Err(Error::VenueNotFound(event.venue_id));
    }
    check_prices(&event.prices, &tiers.into_iter().collect())?;

    let event_id = EventId::new();
    let (tiers, cents): (Vec<&str>, Vec<i64>) = event
        .prices
        .iter()
        .map(|(tier, cents)| (tier.as_str(), *cents as i64))
        .unzip();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO inventory.events
             (event_id, venue_id, name, starts_at, onsale_at, max_per_fan, hold_seconds, admission_per_second,
              refund_until, refund_fee_percent, tax_rate_bp, tax_included)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(event_id)
    .bind(event.venue_id)
    .bind(event.name.trim())
    .bind(event.starts_at)
    .bind(event.onsale_at)
    .bind(event.max_per_fan as i32)
    .bind(event.hold_seconds as i32)
    .bind(event.admission_per_second as i32)
    .bind(event.refund_policy.as_ref().map(|p| p.until))
    .bind(event.refund_policy.as_ref().map(|p| i16::from(p.fee_percent)))
    .bind(event.tax.as_ref().and_then(|t| t.rate_bp()).unwrap_or(0))
    .bind(event.tax.as_ref().is_none_or(|t| t.included))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inventory.event_prices (event_id, price_tier, cents)
         SELECT $1, * FROM UNNEST($2::text[], $3::bigint[])",
    )
    .bind(event_id)
    .bind(&tiers)
    .bind(&cents)
    .execute(&mut *tx)
    .await?;
    if let Some(hook) = hook {
        hook.event_created(&mut tx, event_id).await?;
    }
    tx.commit().await?;
    metrics::counter!("onsale_events_created_total").increment(1);
    tracing::info!(%event_id, venue_id = %event.venue_id, "event created");
    Ok(event_id)
}

const EVENT_COLUMNS: &str =
    "e.event_id, e.venue_id, e.name, e.starts_at, e.onsale_at, e.max_per_fan,
     e.hold_seconds, e.admission_per_second, v.seat_count, e.refund_until,
     e.refund_fee_percent, e.tax_rate_bp, e.tax_included,
     EXISTS (SELECT 1 FROM payments.cancellations c WHERE c.event_id = e.event_id) AS cancelled";

pub async fn get(pool: &PgPool, event_id: EventId) -> Result<EventRow, Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM inventory.events e JOIN inventory.venues v USING (venue_id)
         WHERE e.event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::EventNotFound(event_id))
}

pub async fn prices(pool: &PgPool, event_id: EventId) -> Result<BTreeMap<String, u64>, Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT price_tier, cents FROM inventory.event_prices WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(tier, cents)| (tier, cents as u64))
        .collect())
}

/// Events whose show has not started, soonest on-sale first.
pub async fn upcoming(pool: &PgPool, limit: i64) -> Result<Vec<EventRow>, Error> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM inventory.events e JOIN inventory.venues v USING (venue_id)
         WHERE e.starts_at > now() ORDER BY e.onsale_at, e.event_id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn event() -> CreateEvent {
        let now = Utc::now();
        CreateEvent {
            venue_id: VenueId::new(),
            name: "Show".into(),
            starts_at: now + Duration::days(30),
            onsale_at: now + Duration::days(1),
            max_per_fan: 4,
            hold_seconds: 600,
            prices: BTreeMap::from([("standard".into(), 4500)]),
            admission_per_second: 100,
            refund_policy: None,
            tax: None,
        }
    }

    fn code(result: Result<(), Error>) -> Option<ErrorCode> {
        match result {
            Err(Error::Invalid { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn a_sensible_event_passes() {
        assert!(validate(&event()).is_ok());
    }

    #[test]
    fn onsale_must_come_before_the_start() {
        let mut e = event();
        e.onsale_at = e.starts_at;
        assert_eq!(code(validate(&e)), Some(ErrorCode::OnsaleAfterStart));
        e.onsale_at = e.starts_at + Duration::seconds(1);
        assert_eq!(code(validate(&e)), Some(ErrorCode::OnsaleAfterStart));
    }

    #[test]
    fn limits_are_enforced() {
        for change in [
            (|e: &mut CreateEvent| e.max_per_fan = 0) as fn(&mut CreateEvent),
            |e| e.max_per_fan = MAX_PER_FAN + 1,
            |e| e.hold_seconds = 59,
            |e| e.hold_seconds = 3_601,
            |e| e.admission_per_second = 0,
            |e| e.name = "  ".into(),
            |e| {
                e.prices.insert("standard".into(), MAX_PRICE_CENTS + 1);
            },
        ] {
            let mut e = event();
            change(&mut e);
            assert_eq!(code(validate(&e)), Some(ErrorCode::InvalidRequest));
        }
    }

    #[test]
    fn prices_must_cover_exactly_the_venue_tiers() {
        let tiers: BTreeSet<String> = ["standard".to_owned(), "premium".to_owned()].into();
        let mut prices = BTreeMap::from([("standard".to_owned(), 100)]);
        assert_eq!(
            code(check_prices(&prices, &tiers)),
            Some(ErrorCode::MissingPrice)
        );
        prices.insert("premium".into(), 200);
        assert!(check_prices(&prices, &tiers).is_ok());
        prices.insert("vip".into(), 300);
        assert_eq!(
            code(check_prices(&prices, &tiers)),
            Some(ErrorCode::UnknownPriceTier)
        );
    }
}
