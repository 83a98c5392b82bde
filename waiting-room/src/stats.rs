//! What operators watch: a sale's figures, read from counters, never by walking the
//! line; and the audit log of the levers.
//!
//! Rates come from samples: every second the waiting room's scheduler appends
//! `<unix ms> <next> <served> <held> <sold>` for each active event to a capped list
//! (`Keys::samples`, ten minutes); a rate is the difference between the newest sample
//! and the one about [`RATE_WINDOW_MS`] older, over the time between them. The same
//! samples are the history a dashboard draws.
//!
//! Keys read: `sale(event)`, `next_number(event)`, `prequeue(event)`,
//! `seat_counts(event)`, `holds(event)`, `samples(event)`; written: `samples(event)`.

use chrono::{DateTime, Utc};
use platform::store::Redis;
use proto::sale_hash::SaleHash;
use proto::wire::payments::OrderState;
use proto::wire::queue::{AuditEntry, OrderCounts, SaleState, SaleStats, WorkerView};
use proto::{EventId, Keys};
use sqlx::PgPool;

use crate::error::Error;
use crate::sale;

/// Samples kept per event: ten minutes at one a second.
pub const SAMPLES_KEPT: isize = 600;
/// The span a rate is measured over.
pub const RATE_WINDOW_MS: i64 = 10_000;

/// One sample of an event's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub next: u64,
    pub served: u64,
    pub held: u64,
    pub sold: u64,
}

impl Sample {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(' ').map(str::parse::<i64>);
        let mut next = || parts.next()?.ok();
        let at_ms = next()?;
        let mut count = || next().and_then(|n| u64::try_from(n).ok());
        Some(Self {
            at_ms,
            next: count()?,
            served: count()?,
            held: count()?,
            sold: count()?,
        })
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.at_ms, self.next, self.served, self.held, self.sold
        )
    }
}

/// Requests joining and decided per second, from samples newest first.
pub fn rates(samples: &[Sample]) -> (f64, f64) {
    let Some(newest) = samples.first() else {
        return (0.0, 0.0);
    };
    let oldest = samples
        .iter()
        .take_while(|s| newest.at_ms - s.at_ms <= RATE_WINDOW_MS)
        .last()
        .unwrap_or(newest);
    let seconds = (newest.at_ms - oldest.at_ms) as f64 / 1000.0;
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    let per_second = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
    (
        per_second(newest.next, oldest.next),
        per_second(newest.served, oldest.served),
    )
}

/// Appends a sample for every active event (drawing, open or paused); returns how
/// many it took.
pub async fn sample_active(redis: &mut Redis, keys: &Keys) -> Result<usize, Error> {
    let events: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.active_events())
        .query_async(redis)
        .await?;
    let events: Vec<EventId> = events.iter().filter_map(|e| e.parse().ok()).collect();
    for event in &events {
        sample(redis, keys, *event).await?;
    }
    Ok(events.len())
}

/// Appends one sample of `event`'s line.
pub async fn sample(redis: &mut Redis, keys: &Keys, event: EventId) -> Result<Sample, Error> {
    let (next, served, counts): (Option<u64>, Option<u64>, Vec<Option<u64>>) = redis::pipe()
        .get(keys.next_number(event))
        .hget(keys.sale(event), proto::sale_hash::SERVED)
        .cmd("HMGET")
        .arg(keys.seat_counts(event))
        .arg(&["held", "sold"])
        .query_async(redis)
        .await?;
    let sample = Sample {
        at_ms: Utc::now().timestamp_millis(),
        next: next.unwrap_or(0),
        served: served.unwrap_or(0),
        held: counts.first().copied().flatten().unwrap_or(0),
        sold: counts.get(1).copied().flatten().unwrap_or(0),
    };
    // The same figures for Prometheus, per event: the line's length and progress and
    // the seats held and sold, as the dashboard's charts show them.
    let label = [("event_id", event.to_string())];
    metrics::gauge!("onsale_line_waiting", &label)
        .set(sample.next.saturating_sub(sample.served) as f64);
    metrics::gauge!("onsale_line_served", &label).set(sample.served as f64);
    metrics::gauge!("onsale_seats_held", &label).set(sample.held as f64);
    metrics::gauge!("onsale_seats_sold", &label).set(sample.sold as f64);
    let key = keys.samples(event);
    let _: () = redis::pipe()
        .lpush(&key, sample.encode())
        .ignore()
        .ltrim(&key, 0, SAMPLES_KEPT - 1)
        .ignore()
        .query_async(redis)
        .await?;
    Ok(sample)
}

/// The event's samples, newest first (at most `limit`).
pub async fn samples(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
    limit: isize,
) -> Result<Vec<Sample>, Error> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.samples(event))
        .arg(0)
        .arg(limit.max(1) - 1)
        .query_async(redis)
        .await?;
    Ok(raw.iter().filter_map(|s| Sample::parse(s)).collect())
}

/// The sale hash's fields, `next`, the pre-queue's size, the counts, the holds.
type LineRead = (Vec<Option<String>>, Option<u64>, u64, Vec<Option<u64>>, u64);

/// `at, actor, the actor's email, action, detail`.
type AuditRow = (
    DateTime<Utc>,
    Option<proto::UserId>,
    Option<String>,
    String,
    serde_json::Value,
);

/// The sale's figures now.
pub async fn read(
    pool: &PgPool,
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
) -> Result<SaleStats, Error> {
    let row = sale::get(pool, event).await?;
    let (fields, next, prequeue, counts, holds): LineRead = redis::pipe()
        .cmd("HMGET")
        .arg(keys.sale(event))
        .arg(&SaleHash::FIELDS)
        .get(keys.next_number(event))
        .scard(keys.prequeue(event))
        .cmd("HMGET")
        .arg(keys.seat_counts(event))
        .arg(&["available", "held", "sold"])
        .zcard(keys.holds(event))
        .query_async(redis)
        .await?;
    let sale = SaleHash::from_values(&fields);
    let state = sale.state.unwrap_or_else(|| row.state());
    let served = sale.served.unwrap_or(0);
    let admission_per_second = sale
        .admission_per_second
        .unwrap_or(u32::try_from(row.admission_per_second).unwrap_or(0));
    let queue_length = match state {
        SaleState::Scheduled | SaleState::Drawing => prequeue,
        _ => next.unwrap_or(0).saturating_sub(served),
    };
    let recent = samples(redis, keys, event, 64).await?;
    let (arrivals_per_second, admitted_per_second) = rates(&recent);
    let count = |i: usize| counts.get(i).copied().flatten().unwrap_or(0);
    let line = line_consumers(redis, keys, event).await?;
    let dead_letters: u64 = redis::cmd("XLEN")
        .arg(keys.dead_letters(event))
        .query_async(redis)
        .await?;
    let money = money(pool, event).await?;
    Ok(SaleStats {
        event_id: event,
        state,
        queue_length,
        served,
        arrivals_per_second,
        admitted_per_second,
        admission_per_second,
        eta_seconds: (state == SaleState::Open && admission_per_second > 0)
            .then(|| queue_length.div_ceil(u64::from(admission_per_second))),
        holds_active: holds,
        available: count(0),
        held: count(1),
        sold: count(2),
        sampled_at: recent
            .first()
            .and_then(|s| DateTime::<Utc>::from_timestamp_millis(s.at_ms)),
        workers: line.workers,
        line_lag: line.lag,
        line_pending: line.pending,
        dead_letters,
        orders: money.orders,
        revenue_cents: money.revenue_cents,
        currency: money.currency,
        outbox_unpublished: money.outbox_unpublished,
        outbox_lag_seconds: money.outbox_lag_seconds,
        checked_in: money.checked_in,
    })
}

/// The line's consumer group: its workers, what waits for delivery, what is in flight.
struct LineConsumers {
    workers: Vec<WorkerView>,
    lag: Option<u64>,
    pending: u64,
}

async fn line_consumers(
    redis: &mut Redis,
    keys: &Keys,
    event: EventId,
) -> Result<LineConsumers, Error> {
    use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};
    let stream = keys.stream(event);
    let groups: StreamInfoGroupsReply = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(redis)
        .await
    {
        Ok(groups) => groups,
        // No line yet (nobody has been numbered): no workers, nothing waits.
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
        {
            return Ok(LineConsumers {
                workers: vec![],
                lag: Some(0),
                pending: 0,
            });
        }
        Err(error) => return Err(error.into()),
    };
    let Some(group) = groups
        .groups
        .into_iter()
        .find(|g| g.name == proto::keys::WORKER_GROUP)
    else {
        return Ok(LineConsumers {
            workers: vec![],
            lag: None,
            pending: 0,
        });
    };
    let consumers: StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg(proto::keys::WORKER_GROUP)
        .query_async(redis)
        .await?;
    Ok(LineConsumers {
        workers: consumers
            .consumers
            .into_iter()
            .map(|c| WorkerView {
                name: c.name,
                pending: c.pending as u64,
                idle_ms: c.idle as u64,
            })
            .collect(),
        lag: group.lag.map(|l| l as u64),
        pending: group.pending as u64,
    })
}

/// Orders, revenue and the outbox, as the ledger has them.
struct Money {
    orders: OrderCounts,
    revenue_cents: i64,
    currency: Option<String>,
    outbox_unpublished: i64,
    outbox_lag_seconds: Option<f64>,
    checked_in: i64,
}

async fn money(pool: &PgPool, event: EventId) -> Result<Money, Error> {
    let rows: Vec<(OrderState, i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT state, count(*), COALESCE(sum(amount_cents - refunded_cents), 0)::bigint, max(currency)
         FROM payments.orders WHERE event_id = $1 GROUP BY state",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let mut money = Money {
        orders: OrderCounts::default(),
        revenue_cents: 0,
        currency: None,
        outbox_unpublished: 0,
        outbox_lag_seconds: None,
        checked_in: 0,
    };
    for (state, count, cents, currency) in rows {
        money.currency = money.currency.or(currency);
        match state {
            OrderState::Pending => money.orders.pending = count,
            // Revenue is what was kept: a partly refunded order counts as paid.
            OrderState::Paid | OrderState::PartiallyRefunded => {
                money.orders.paid += count;
                money.revenue_cents += cents;
            }
            OrderState::Declined => money.orders.declined = count,
            OrderState::Refunded => money.orders.refunded = count,
            OrderState::Cancelled => money.orders.cancelled = count,
        }
    }
    // The door's figure rides along: tickets inside now (the door's ledger).
    let (unpublished, lag, checked_in): (i64, Option<f64>, i64) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(occurred_at))::float8,
                (SELECT count(*) FROM tickets.entries WHERE event_id = $1 AND exited_at IS NULL)
         FROM outbox.messages WHERE published_at IS NULL",
    )
    .bind(event)
    .fetch_one(pool)
    .await?;
    money.outbox_unpublished = unpublished;
    money.outbox_lag_seconds = lag;
    money.checked_in = checked_in;
    Ok(money)
}

/// The levers pulled on the event, newest first (at most `limit`).
pub async fn audit_log(
    pool: &PgPool,
    event: EventId,
    limit: i64,
) -> Result<Vec<AuditEntry>, Error> {
    sale::get(pool, event).await?;
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT a.at, a.actor, u.email, a.action, a.detail
         FROM waiting_room.audit a LEFT JOIN gateway.users u ON u.user_id = a.actor
         WHERE a.event_id = $1 ORDER BY a.at DESC, a.audit_id DESC LIMIT $2",
    )
    .bind(event)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, actor, actor_email, action, detail)| AuditEntry {
            at,
            actor,
            actor_email,
            action,
            from: detail.get("from").cloned(),
            to: detail.get("to").cloned(),
            detail,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, next: u64, served: u64) -> Sample {
        Sample {
            at_ms,
            next,
            served,
            held: 0,
            sold: 0,
        }
    }

    #[test]
    fn a_sample_round_trips() {
        let s = Sample {
            at_ms: 1_764_500_000_000,
            next: 10,
            served: 4,
            held: 3,
            sold: 1,
        };
        assert_eq!(Sample::parse(&s.encode()), Some(s));
        assert_eq!(Sample::parse("12 nope 1 1 1"), None);
    }

    #[test]
    fn rates_span_the_window_and_no_further() {
        // Newest first: 100 joins and 40 decisions over the last 10 s; an older
        // sample outside the window does not count.
        let samples = [
            sample(30_000, 1_300, 540),
            sample(25_000, 1_250, 520),
            sample(20_000, 1_200, 500),
            sample(5_000, 0, 0),
        ];
        let (arrivals, admitted) = rates(&samples);
        assert!((arrivals - 10.0).abs() < 1e-9, "{arrivals}");
        assert!((admitted - 4.0).abs() < 1e-9, "{admitted}");
    }

    #[test]
    fn one_sample_or_none_is_no_rate() {
        assert_eq!(rates(&[]), (0.0, 0.0));
        assert_eq!(rates(&[sample(1, 5, 5)]), (0.0, 0.0));
    }
}
