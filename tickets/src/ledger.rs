//! The tickets in Postgres (`tickets.tickets`): issued in the transaction that
//! settles an order, read with their codes, reissued with a new version (which
//! revokes the old code).

use chrono::{DateTime, Duration, Utc};
use proto::wire::tickets::{Revocations, Revoked, Ticket, TicketClaims, TicketState};
use proto::{EventId, OrderId, RequestId, TicketId, UserId};
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::code;
use crate::keys::{KeyRing, Signer};

/// How long after the show starts a ticket still admits.
const VALID_AFTER_START: Duration = Duration::days(1);

/// A ticket as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TicketRow {
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub seat_id: String,
    pub order_id: OrderId,
    pub fan_id: UserId,
    pub version: i32,
    pub state: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// Whether it has come in through the door (an entry recorded).
    pub checked_in: bool,
}

const COLUMNS: &str =
    "t.ticket_id, t.event_id, t.seat_id, t.order_id, t.fan_id, t.version, t.state,
     t.valid_from, t.valid_until,
     EXISTS (SELECT 1 FROM tickets.entries e WHERE e.ticket_id = t.ticket_id) AS checked_in";

impl TicketRow {
    pub fn state(&self) -> TicketState {
        if self.state == "void" {
            TicketState::Void
        } else if self.checked_in {
            TicketState::CheckedIn
        } else {
            TicketState::Valid
        }
    }

    pub fn claims(&self) -> TicketClaims {
        TicketClaims {
            tid: self.ticket_id,
            v: self.version,
            ev: self.event_id,
            seat: self.seat_id.clone(),
            nbf: self.valid_from.timestamp(),
            exp: self.valid_until.timestamp(),
        }
    }

    /// The ticket with its code, signed by `signer` (its event's key).
    pub fn to_wire(&self, signer: &Signer) -> Ticket {
        Ticket {
            ticket_id: self.ticket_id,
            seat_id: self.seat_id.clone(),
            version: self.version,
            state: self.state(),
            code: code::sign(&signer.key, &signer.kid, &self.claims()),
        }
    }
}

/// What an order that is being paid needs to issue its tickets.
pub struct Sale<'a> {
    pub order_id: OrderId,
    pub request_id: RequestId,
    pub event_id: EventId,
    pub fan_id: UserId,
    pub seats: &'a [String],
}

/// Issues a ticket per seat of `sale`, in the caller's transaction (the one that
/// marks the order paid): the unique seat index refuses a seat sold twice. The
/// event's key is made beforehand, outside the transaction.
pub async fn issue(
    tx: &mut PgConnection,
    signer: &Signer,
    sale: &Sale<'_>,
) -> Result<Vec<Ticket>, sqlx::Error> {
    let rows: Vec<TicketRow> = sqlx::query_as(&format!(
        "WITH issued AS (
             INSERT INTO tickets.tickets (ticket_id, event_id, seat_id, order_id, request_id,
                                          fan_id, valid_from, valid_until)
             SELECT gen_random_uuid(), $1, s.seat_id, $2, $3, $4, now(),
                    greatest(e.starts_at, now()) + $6
             FROM unnest($5::text[]) AS s(seat_id)
             JOIN inventory.events e ON e.event_id = $1
             RETURNING *
         )
         SELECT {} FROM issued t ORDER BY t.seat_id",
        COLUMNS.replace(
            "EXISTS (SELECT 1 FROM tickets.entries e WHERE e.ticket_id = t.ticket_id)",
            "false"
        )
    ))
    .bind(sale.event_id)
    .bind(sale.order_id)
    .bind(sale.request_id)
    .bind(sale.fan_id)
    .bind(sale.seats)
    .bind(VALID_AFTER_START)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(|row| row.to_wire(signer)).collect())
}

/// The tickets of `orders`, by order, each ordered by seat.
pub async fn of_orders(
    pool: &PgPool,
    ring: &KeyRing,
    orders: &[OrderId],
) -> Result<Vec<(OrderId, Ticket)>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<TicketRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tickets.tickets t WHERE t.order_id = ANY($1) ORDER BY t.seat_id"
    ))
    .bind(orders)
    .fetch_all(pool)
    .await?;
    let mut tickets = Vec::with_capacity(rows.len());
    for row in rows {
        let signer = ring.signer(pool, row.event_id).await?;
        tickets.push((row.order_id, row.to_wire(&signer)));
    }
    Ok(tickets)
}

/// One ticket.
pub async fn get(
    db: impl PgExecutor<'_>,
    ticket: TicketId,
) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tickets.tickets t WHERE t.ticket_id = $1"
    ))
    .bind(ticket)
    .fetch_optional(db)
    .await
}

/// Why a reissue is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    #[error("ticket {0} not found")]
    NotFound(TicketId),
    #[error("the ticket has come in through the door")]
    CheckedIn,
    #[error("the ticket admits nobody any more")]
    Void,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Gives `ticket` (of `owner`) a new version: its old code is revoked, for online
/// and offline scanners alike. Refused once it has come in.
pub async fn reissue(
    pool: &PgPool,
    ticket: TicketId,
    owner: UserId,
) -> Result<TicketRow, ReissueError> {
    let mut tx = pool.begin().await?;
    let row: TicketRow = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tickets.tickets t WHERE t.ticket_id = $1 AND t.fan_id = $2 FOR UPDATE"
    ))
    .bind(ticket)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ReissueError::NotFound(ticket))?;
    match row.state() {
        TicketState::CheckedIn => return Err(ReissueError::CheckedIn),
        TicketState::Void => return Err(ReissueError::Void),
        TicketState::Valid => {}
    }
    revoke(&mut tx, row.event_id, ticket, row.version, "reissued").await?;
    let row: TicketRow = sqlx::query_as(&format!(
        "WITH bumped AS (
             UPDATE tickets.tickets SET version = version + 1, updated_at = now()
             WHERE ticket_id = $1 RETURNING *
         )
         SELECT {COLUMNS} FROM bumped t"
    ))
    .bind(ticket)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Adds `(ticket, version)` to the event's revocation list, in `tx`. The event's
/// lock numbers the list without gaps or late commits: a scanner that has read up
/// to N and asks for what is newer never misses a row.
pub async fn revoke(
    tx: &mut PgConnection,
    event: EventId,
    ticket: TicketId,
    version: i32,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('tickets.revocations:' || $1::text, 0))",
    )
    .bind(event)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO tickets.revocations (event_id, list_version, ticket_id, version, reason)
         SELECT $1, coalesce(max(list_version), 0) + 1, $2, $3, $4
         FROM tickets.revocations WHERE event_id = $1
         ON CONFLICT (ticket_id, version) DO NOTHING",
    )
    .bind(event)
    .bind(ticket)
    .bind(version)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The event's revoked codes newer than `since`, and the list's version.
pub async fn revocations(
    db: &PgPool,
    event: EventId,
    since: i64,
) -> Result<Revocations, sqlx::Error> {
    let rows: Vec<(i64, TicketId, i32)> = sqlx::query_as(
        "SELECT list_version, ticket_id, version FROM tickets.revocations
         WHERE event_id = $1 AND list_version > $2 ORDER BY list_version LIMIT 10000",
    )
    .bind(event)
    .bind(since)
    .fetch_all(db)
    .await?;
    let version = match rows.last() {
        Some((last, _, _)) => *last,
        None => sqlx::query_scalar(
            "SELECT coalesce(max(list_version), 0) FROM tickets.revocations WHERE event_id = $1",
        )
        .bind(event)
        .fetch_one(db)
        .await?,
    };
    Ok(Revocations {
        version,
        revoked: rows
            .into_iter()
            .map(|(_, ticket_id, version)| Revoked { ticket_id, version })
            .collect(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum VoidError {
    /// Not the order's, or void already.
    #[error("ticket {0} cannot be refunded: it is not this order's, or it is void already")]
    NotRefundable(TicketId),
    #[error("ticket {0} has come in through the door")]
    CheckedIn(TicketId),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Voids tickets of `order` for a refund, in the caller's transaction: `tickets`, or
/// (`None`) every valid one. Each is locked first and its entries read after, so a
/// scan admitting it concurrently either commits first (and the ticket is refused
/// as checked in, unless `allow_checked_in`) or finds it void (the door's entry
/// statement locks the ticket too). Returns the voided tickets; the caller adds
/// their codes to the revocation list with [`revoke_voided`] as the transaction's
/// last step.
pub async fn void(
    tx: &mut PgConnection,
    order: OrderId,
    tickets: Option<&[TicketId]>,
    allow_checked_in: bool,
) -> Result<Vec<TicketRow>, VoidError> {
    let rows: Vec<TicketRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tickets.tickets t
         WHERE t.order_id = $1 AND ($2::uuid[] IS NULL OR t.ticket_id = ANY($2))
         ORDER BY t.ticket_id FOR UPDATE OF t"
    ))
    .bind(order)
    .bind(tickets)
    .fetch_all(&mut *tx)
    .await?;
    let chosen: Vec<TicketRow> = match tickets {
        Some(asked) => {
            if let Some(missing) = asked.iter().find(|id| {
                !rows
                    .iter()
                    .any(|r| r.ticket_id == **id && r.state != "void")
            }) {
                return Err(VoidError::NotRefundable(*missing));
            }
            rows
        }
        None => rows.into_iter().filter(|r| r.state != "void").collect(),
    };
    let mut chosen = chosen;
    if !allow_checked_in && !chosen.is_empty() {
        // Read after the locks: an admission committed meanwhile is seen.
        let ids: Vec<TicketId> = chosen.iter().map(|r| r.ticket_id).collect();
        let inside: Vec<TicketId> = sqlx::query_scalar(
            "SELECT DISTINCT ticket_id FROM tickets.entries WHERE ticket_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(first_inside) = inside.first() {
            // Named tickets must all be refundable; "every valid one" leaves out
            // those that came in, unless that is all of them.
            if tickets.is_some() || inside.len() == chosen.len() {
                return Err(VoidError::CheckedIn(*first_inside));
            }
            chosen.retain(|r| !inside.contains(&r.ticket_id));
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<TicketId> = chosen.iter().map(|r| r.ticket_id).collect();
    sqlx::query(
        "UPDATE tickets.tickets SET state = 'void', updated_at = now() WHERE ticket_id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(chosen
        .into_iter()
        .map(|mut row| {
            row.state = "void".into();
            row
        })
        .collect())
}

/// Adds voided tickets' codes to their event's revocation list, so offline scanners
/// refuse them too. The list is numbered under the event's lock, held until the
/// transaction ends: call it last, just before the commit, so that refunds of one
/// event wait for each other as briefly as can be.
pub async fn revoke_voided(
    tx: &mut PgConnection,
    voided: &[TicketRow],
    reason: &str,
) -> Result<(), sqlx::Error> {
    let Some(first) = voided.first() else {
        return Ok(());
    };
    let ids: Vec<TicketId> = voided.iter().map(|r| r.ticket_id).collect();
    let versions: Vec<i32> = voided.iter().map(|r| r.version).collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('tickets.revocations:' || $1::text, 0))",
    )
    .bind(first.event_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO tickets.revocations (event_id, list_version, ticket_id, version, reason)
         SELECT $1, (SELECT coalesce(max(list_version), 0) FROM tickets.revocations
                     WHERE event_id = $1) + row_number() OVER (ORDER BY t.id),
                t.id, t.v, $4
         FROM unnest($2::uuid[], $3::int[]) AS t(id, v)
         ON CONFLICT (ticket_id, version) DO NOTHING",
    )
    .bind(first.event_id)
    .bind(&ids)
    .bind(&versions)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
