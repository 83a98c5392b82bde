//! The door's figures for operators.

use proto::EventId;
use proto::wire::tickets::{Conflict, DoorStats, SectionDoor};
use sqlx::PgPool;

/// Conflicts listed, newest first.
const CONFLICTS_SHOWN: i64 = 100;

pub async fn door(pool: &PgPool, event: EventId) -> Result<DoorStats, sqlx::Error> {
    // A seat id is `<section>-<row>-<number>` and a section name has no `-`.
    let sections: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT split_part(t.seat_id, '-', 1) AS section,
                count(*) FILTER (WHERE t.state = 'valid') AS sold,
                count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM tickets.entries e
                    WHERE e.ticket_id = t.ticket_id AND e.exited_at IS NULL)) AS checked_in
         FROM tickets.tickets t WHERE t.event_id = $1
         GROUP BY 1 ORDER BY 1",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let conflicts: Vec<(
        sqlx::types::Json<proto::wire::tickets::ScanResult>,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "SELECT answer, conflict, device_id, scanned_at FROM tickets.scans
             WHERE event_id = $1 AND conflict IS NOT NULL
             ORDER BY recorded_at DESC LIMIT $2",
    )
    .bind(event)
    .bind(CONFLICTS_SHOWN)
    .fetch_all(pool)
    .await?;
    Ok(DoorStats {
        checked_in: sections.iter().map(|s| s.2).sum(),
        sold: sections.iter().map(|s| s.1).sum(),
        sections: sections
            .into_iter()
            .map(|(section, sold, checked_in)| SectionDoor {
                section,
                sold,
                checked_in,
            })
            .collect(),
        conflicts: conflicts
            .into_iter()
            .filter_map(|(answer, kind, device_id, scanned_at)| {
                let answer = answer.0;
                Some(Conflict {
                    ticket_id: answer.ticket_id?,
                    seat_id: answer.seat_id?,
                    kind,
                    scan_id: answer.scan_id,
                    device_id,
                    scanned_at,
                    first_device_id: answer.first_device_id,
                    first_admitted_at: answer.first_admitted_at,
                })
            })
            .collect(),
    })
}
