//! Door staff, per event (`tickets.staff`).

use platform::auth::Caller;
use proto::wire::tickets::StaffGrant;
use proto::{ErrorBody, ErrorCode, EventId, Role, UserId};
use sqlx::PgPool;

use crate::Error;

/// 404 `event_not_found` unless the event exists.
pub async fn event_exists(pool: &PgPool, event: EventId) -> Result<(), Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM inventory.events WHERE event_id = $1)")
            .bind(event)
            .fetch_one(pool)
            .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::refused(
            ErrorCode::EventNotFound,
            format!("event {event} does not exist"),
        ))
    }
}

/// Lets `caller` work the event's door: an operator or admin, or staff of the
/// event (read at every call, so a grant undone applies at once).
pub async fn require(pool: &PgPool, event: EventId, caller: Caller) -> Result<(), ErrorBody> {
    let (exists, staff): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM inventory.events WHERE event_id = $1),
                EXISTS (SELECT 1 FROM tickets.staff WHERE event_id = $1 AND user_id = $2)",
    )
    .bind(event)
    .bind(caller.user_id)
    .fetch_one(pool)
    .await
    .map_err(Error::from)?;
    if !exists {
        return Err(Error::refused(
            ErrorCode::EventNotFound,
            format!("event {event} does not exist"),
        )
        .into());
    }
    if staff || caller.role.includes(Role::Operator) {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::Forbidden,
            "this account is not door staff of this event; an operator can make it so",
        ))
    }
}

pub async fn grant(
    pool: &PgPool,
    event: EventId,
    user: UserId,
    by: UserId,
) -> Result<StaffGrant, Error> {
    event_exists(pool, event).await?;
    let granted = sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>,)>(
        "INSERT INTO tickets.staff (event_id, user_id, granted_by) VALUES ($1, $2, $3)
         ON CONFLICT (event_id, user_id) DO UPDATE SET granted_by = tickets.staff.granted_by
         RETURNING granted_at",
    )
    .bind(event)
    .bind(user)
    .bind(by)
    .fetch_one(pool)
    .await;
    match granted {
        Ok((granted_at,)) => Ok(StaffGrant {
            event_id: event,
            user_id: user,
            granted_at,
        }),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_foreign_key_violation()) =>
        {
            Err(Error::refused(
                ErrorCode::UserNotFound,
                format!("user {user} does not exist"),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke(pool: &PgPool, event: EventId, user: UserId) -> Result<(), Error> {
    event_exists(pool, event).await?;
    sqlx::query("DELETE FROM tickets.staff WHERE event_id = $1 AND user_id = $2")
        .bind(event)
        .bind(user)
        .execute(pool)
        .await?;
    Ok(())
}
