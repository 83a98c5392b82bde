//! Venues: validation of a venue description, and its rows in `inventory.venues`,
//! `inventory.sections`, `inventory.rows` and `inventory.seats`.

use std::collections::HashSet;

use proto::wire::inventory::{CreateVenue, RowSpec, SectionSpec, Venue};
use proto::{ErrorCode, SeatId, VenueId};
use sqlx::PgPool;

use crate::error::Error;

/// Most sections one venue may have.
pub const MAX_SECTIONS: usize = 200;
/// Longest venue or event name, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest section name or price tier (letters, digits, `_`).
pub const MAX_SECTION_NAME: usize = 32;
/// Longest row label (letters and digits).
pub const MAX_ROW_LABEL: usize = 8;
/// Most rows one section may have.
pub const MAX_ROWS: usize = 500;
/// Most seats one row may have.
pub const MAX_SEATS_PER_ROW: u32 = 1_000;
/// Most seats one venue may have.
pub const MAX_SEATS: u32 = 200_000;

/// A venue description that passed [`validate`].
#[derive(Debug)]
pub struct ValidVenue {
    pub name: String,
    pub sections: Vec<SectionSpec>,
    pub seat_count: u32,
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A venue's or an event's name as sent: 1 to [`MAX_NAME_CHARS`] characters, no
/// control characters (Postgres text cannot even hold a NUL), not only spaces.
pub fn is_display_name(name: &str) -> bool {
    name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(char::is_control)
        && !name.trim().is_empty()
}

/// Checks a venue description; the first problem found is the error.
pub fn validate(venue: CreateVenue) -> Result<ValidVenue, Error> {
    let name = venue.name.trim().to_owned();
    if !is_display_name(&venue.name) {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!(
                "venue name must be 1 to {MAX_NAME_CHARS} characters, not only spaces, no control characters"
            ),
        ));
    }
    if venue.sections.len() > MAX_SECTIONS {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!("a venue has at most {MAX_SECTIONS} sections"),
        ));
    }
    let mut section_names = HashSet::new();
    let mut seat_count: u32 = 0;
    for section in &venue.sections {
        if !is_name(&section.name, MAX_SECTION_NAME) {
            return Err(Error::invalid(
                ErrorCode::InvalidRequest,
                format!(
                    "section name {:?} must be 1 to {MAX_SECTION_NAME} letters, digits or underscores",
                    section.name
                ),
            ));
        }
        if !section_names.insert(section.name.as_str()) {
            return Err(Error::invalid(
                ErrorCode::DuplicateSection,
                format!("section {:?} appears more than once", section.name),
            ));
        }
        if !is_name(&section.price_tier, MAX_SECTION_NAME) {
            return Err(Error::invalid(
                ErrorCode::InvalidRequest,
                format!(
                    "price tier {:?} must be 1 to {MAX_SECTION_NAME} letters, digits or underscores",
                    section.price_tier
                ),
            ));
        }
        if section.rows.len() > MAX_ROWS {
            return Err(Error::invalid(
                ErrorCode::InvalidRequest,
                format!("section {:?} has more than {MAX_ROWS} rows", section.name),
            ));
        }
        let mut labels = HashSet::new();
        for RowSpec { label, seats } in &section.rows {
            if !label.bytes().all(|b| b.is_ascii_alphanumeric())
                || label.is_empty()
                || label.len() > MAX_ROW_LABEL
            {
                return Err(Error::invalid(
                    ErrorCode::InvalidRequest,
                    format!(
                        "row label {label:?} in section {:?} must be 1 to {MAX_ROW_LABEL} letters or digits",
                        section.name
                    ),
                ));
            }
            if !labels.insert(label.as_str()) {
                return Err(Error::invalid(
                    ErrorCode::DuplicateRowLabel,
                    format!(
                        "row {label:?} appears more than once in section {:?}",
                        section.name
                    ),
                ));
            }
            if *seats > MAX_SEATS_PER_ROW {
                return Err(Error::invalid(
                    ErrorCode::InvalidRequest,
                    format!(
                        "row {label:?} in section {:?} has more than {MAX_SEATS_PER_ROW} seats",
                        section.name
                    ),
                ));
            }
            if *seats == 0 {
                return Err(Error::invalid(
                    ErrorCode::InvalidRequest,
                    format!("row {label:?} in section {:?} has no seats", section.name),
                ));
            }
            seat_count = seat_count.saturating_add(*seats);
        }
    }
    if seat_count == 0 {
        return Err(Error::invalid(
            ErrorCode::VenueHasNoSeats,
            "a venue needs at least one seat",
        ));
    }
    if let Some(empty) = venue.sections.iter().find(|s| s.rows.is_empty()) {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!("section {:?} has no rows", empty.name),
        ));
    }
    if seat_count > MAX_SEATS {
        return Err(Error::invalid(
            ErrorCode::InvalidRequest,
            format!("a venue has at most {MAX_SEATS} seats"),
        ));
    }
    Ok(ValidVenue {
        name,
        sections: venue.sections,
        seat_count,
    })
}

/// Stores a validated venue and every one of its seats, in one transaction.
pub async fn create(pool: &PgPool, venue: &ValidVenue) -> Result<VenueId, Error> {
    let venue_id = VenueId::new();
    let mut sections = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seats = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (s, section) in venue.sections.iter().enumerate() {
        let s = s as i32;
        sections.0.push(s);
        sections.1.push(section.name.clone());
        sections.2.push(section.price_tier.clone());
        for (r, row) in section.rows.iter().enumerate() {
            let r = r as i32;
            rows.0.push(s);
            rows.1.push(r);
            rows.2.push(row.label.clone());
            rows.3.push(row.seats as i32);
            for number in 1..=row.seats {
                seats.0.push(
                    SeatId::new(&section.name, &row.label, number)
                        .as_str()
                        .to_owned(),
                );
                seats.1.push(s);
                seats.2.push(r);
                seats.3.push(number as i32);
            }
        }
    }

    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO inventory.venues (venue_id, name, seat_count) VALUES ($1, $2, $3)")
        .bind(venue_id)
        .bind(&venue.name)
        .bind(venue.seat_count as i32)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO inventory.sections (venue_id, section_index, name, price_tier)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[])",
    )
    .bind(venue_id)
    .bind(&sections.0)
    .bind(&sections.1)
    .bind(&sections.2)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inventory.rows (venue_id, section_index, row_index, label, seats)
         SELECT $1, * FROM UNNEST($2::int[], $3::int[], $4::text[], $5::int[])",
    )
    .bind(venue_id)
    .bind(&rows.0)
    .bind(&rows.1)
    .bind(&rows.2)
    .bind(&rows.3)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inventory.seats (venue_id, seat_id, section_index, row_index, number)
         SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::int[], $5::int[])",
    )
    .bind(venue_id)
    .bind(&seats.0)
    .bind(&seats.1)
    .bind(&seats.2)
    .bind(&seats.3)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!("onsale_venues_created_total").increment(1);
    tracing::info!(%venue_id, seat_count = venue.seat_count, "venue created");
    Ok(venue_id)
}

/// A section joined with one of its rows (none for a section without rows).
#[derive(sqlx::FromRow)]
struct SectionRow {
    section_index: i32,
    name: String,
    price_tier: String,
    label: Option<String>,
    seats: Option<i32>,
}

/// A venue with its sections and rows.
pub async fn get(pool: &PgPool, venue_id: VenueId) -> Result<Venue, Error> {
    let venue: Option<(String, i32)> =
        sqlx::query_as("SELECT name, seat_count FROM inventory.venues WHERE venue_id = $1")
            .bind(venue_id)
            .fetch_optional(pool)
            .await?;
    let (name, seat_count) = venue.ok_or(Error::VenueNotFound(venue_id))?;
    let rows: Vec<SectionRow> = sqlx::query_as(
        "SELECT s.section_index, s.name, s.price_tier, r.label, r.seats
         FROM inventory.sections s
         LEFT JOIN inventory.rows r USING (venue_id, section_index)
         WHERE s.venue_id = $1
         ORDER BY s.section_index, r.row_index",
    )
    .bind(venue_id)
    .fetch_all(pool)
    .await?;
    let mut sections: Vec<SectionSpec> = Vec::new();
    let mut last_index = None;
    for SectionRow {
        section_index: index,
        name: section,
        price_tier,
        label,
        seats,
    } in rows
    {
        if last_index != Some(index) {
            sections.push(SectionSpec {
                name: section,
                price_tier,
                rows: Vec::new(),
            });
            last_index = Some(index);
        }
        if let (Some(label), Some(seats), Some(current)) = (label, seats, sections.last_mut()) {
            current.rows.push(RowSpec {
                label,
                seats: seats as u32,
            });
        }
    }
    Ok(Venue {
        venue_id,
        name,
        seat_count: seat_count as u32,
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venue(sections: Vec<SectionSpec>) -> CreateVenue {
        CreateVenue {
            name: "Arena".into(),
            sections,
        }
    }

    fn section(name: &str, rows: &[(&str, u32)]) -> SectionSpec {
        SectionSpec {
            name: name.into(),
            price_tier: "standard".into(),
            rows: rows
                .iter()
                .map(|(label, seats)| RowSpec {
                    label: (*label).into(),
                    seats: *seats,
                })
                .collect(),
        }
    }

    fn code(result: Result<ValidVenue, Error>) -> Option<ErrorCode> {
        match result {
            Err(Error::Invalid { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn counts_every_seat_of_every_row() {
        let valid = validate(venue(vec![
            section("Floor", &[("A", 10), ("B", 12)]),
            section("Balcony", &[("A", 5)]),
        ]));
        assert_eq!(valid.map(|v| v.seat_count).ok(), Some(27));
    }

    #[test]
    fn refuses_a_venue_without_seats() {
        assert_eq!(
            code(validate(venue(vec![]))),
            Some(ErrorCode::VenueHasNoSeats)
        );
        assert_eq!(
            code(validate(venue(vec![section("Floor", &[])]))),
            Some(ErrorCode::VenueHasNoSeats)
        );
        assert_eq!(
            code(validate(venue(vec![
                section("Floor", &[("A", 2)]),
                section("Pit", &[])
            ]))),
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn refuses_duplicate_row_labels_and_sections() {
        assert_eq!(
            code(validate(venue(vec![section(
                "Floor",
                &[("A", 3), ("A", 4)]
            )]))),
            Some(ErrorCode::DuplicateRowLabel)
        );
        assert_eq!(
            code(validate(venue(vec![
                section("Floor", &[("A", 3)]),
                section("Floor", &[("B", 3)])
            ]))),
            Some(ErrorCode::DuplicateSection)
        );
    }

    #[test]
    fn refuses_names_that_would_break_seat_ids() {
        assert_eq!(
            code(validate(venue(vec![section("Fl-oor", &[("A", 3)])]))),
            Some(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            code(validate(venue(vec![section("Floor", &[("A-1", 3)])]))),
            Some(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            code(validate(venue(vec![section("Floor", &[("", 3)])]))),
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn refuses_empty_and_oversized_rows() {
        assert_eq!(
            code(validate(venue(vec![section("Floor", &[("A", 0)])]))),
            Some(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            code(validate(venue(vec![section(
                "Floor",
                &[("A", MAX_SEATS_PER_ROW + 1)]
            )]))),
            Some(ErrorCode::InvalidRequest)
        );
    }
}
