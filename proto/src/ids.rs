//! Identifiers. Every id is a newtype so a `VenueId` can never be passed where an
//! `EventId` is expected; signatures never take a bare `Uuid` or `String`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new id; v7 so ids sort by creation time and index well.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

uuid_id!(
    /// A registered account (fan, operator or admin).
    UserId
);
uuid_id!(
    /// A venue: its sections, rows and seats.
    VenueId
);
uuid_id!(
    /// An event held at a venue; the unit of a sale, of a queue and of a hash tag.
    EventId
);
uuid_id!(
    /// A fan's booking request in an event's line.
    RequestId
);
uuid_id!(
    /// A checkout order.
    OrderId
);
uuid_id!(
    /// One seat's ticket: what a fan shows at the door.
    TicketId
);
uuid_id!(
    /// A refund of some of an order's tickets.
    RefundId
);

/// A seat within a venue, spelled `"{section}-{row}-{number}"`.
///
/// Section names and row labels never contain `-` (the venue validation refuses
/// it), so the id splits back into its parts without ambiguity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct SeatId(String);

impl SeatId {
    pub fn new(section: &str, row: &str, number: u32) -> Self {
        Self(format!("{section}-{row}-{number}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses `"{section}-{row}-{number}"`; `None` if it is not of that shape.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('-');
        let (section, row, number) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || section.is_empty() || row.is_empty() {
            return None;
        }
        // Canonical numbers only: "01" and "+1" would name the same seat twice.
        let canonical = number.parse::<u32>().ok()?.to_string();
        (canonical == number && canonical != "0").then(|| Self(s.to_owned()))
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl utoipa::PartialSchema for SeatId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("`{section}-{row}-{number}`"))
            .examples([serde_json::json!("Floor-A-12")])
            .into()
    }
}

impl utoipa::ToSchema for SeatId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_id_round_trips_through_its_parts() {
        let id = SeatId::new("Floor", "AA", 12);
        assert_eq!(id.as_str(), "Floor-AA-12");
        assert_eq!(SeatId::parse("Floor-AA-12"), Some(id));
    }

    #[test]
    fn seat_id_rejects_other_shapes() {
        for bad in [
            "",
            "Floor",
            "Floor-A",
            "Floor-A-0",
            "Floor-A-x",
            "Floor-A-1-2",
            "-A-1",
            "Floor--1",
            "Floor-A-01",
        ] {
            assert_eq!(SeatId::parse(bad), None, "{bad:?} parsed");
        }
    }

    #[test]
    fn ids_display_as_their_uuid() {
        let id = EventId::new();
        assert_eq!(id.to_string().parse::<EventId>().ok(), Some(id));
    }
}
