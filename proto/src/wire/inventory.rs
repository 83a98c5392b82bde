//! Venues and events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{EventId, VenueId};

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVenue {
    #[schema(example = "Riverside Arena")]
    pub name: String,
    pub sections: Vec<SectionSpec>,
}

impl CreateVenue {
    /// A venue of the named `sections`, each of `rows` rows (`R1`, `R2`, …) of
    /// `per_row` seats, all in one `price_tier`: the venue tests and benchmarks seed.
    pub fn grid(name: &str, sections: &[&str], price_tier: &str, rows: u32, per_row: u32) -> Self {
        CreateVenue {
            name: name.to_owned(),
            sections: sections
                .iter()
                .map(|section| SectionSpec {
                    name: (*section).to_owned(),
                    price_tier: price_tier.to_owned(),
                    rows: (1..=rows)
                        .map(|r| RowSpec {
                            label: format!("R{r}"),
                            seats: per_row,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionSpec {
    /// Letters, digits and `_`; unique within the venue.
    #[schema(example = "Floor")]
    pub name: String,
    /// Letters, digits and `_`; events price seats by tier.
    #[schema(example = "standard")]
    pub price_tier: String,
    /// In order from the front; seats in a row are numbered from 1.
    pub rows: Vec<RowSpec>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    /// Letters and digits; unique within the section.
    #[schema(example = "A")]
    pub label: String,
    /// How many seats the row has (1 to 1000).
    #[schema(example = 20)]
    pub seats: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct VenueCreated {
    pub venue_id: VenueId,
    pub seat_count: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Venue {
    pub venue_id: VenueId,
    pub name: String,
    pub seat_count: u32,
    pub sections: Vec<SectionSpec>,
}

fn default_hold_seconds() -> u32 {
    600
}

fn default_admission_per_second() -> u32 {
    100
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    pub venue_id: VenueId,
    #[schema(example = "The Midnight Tour")]
    pub name: String,
    /// When the show starts (RFC 3339).
    pub starts_at: DateTime<Utc>,
    /// When the sale opens (RFC 3339); before `starts_at`.
    pub onsale_at: DateTime<Utc>,
    /// Tickets one fan may hold and buy for this event (1 to 50).
    #[schema(example = 4)]
    pub max_per_fan: u32,
    /// How long a hold lasts before it expires (60 to 3600, default 600).
    #[serde(default = "default_hold_seconds")]
    #[schema(example = 600)]
    pub hold_seconds: u32,
    /// Price in cents for every tier the venue uses.
    #[schema(example = json!({"standard": 4500, "premium": 9900}))]
    pub prices: BTreeMap<String, u64>,
    /// Requests admitted to the booking workers per second (1 to 100000, default 100).
    #[serde(default = "default_admission_per_second")]
    pub admission_per_second: u32,
    /// Until when fans may ask for their money back, and what fee is kept; absent:
    /// fans cannot ask (operators can always refund).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_policy: Option<RefundPolicy>,
    /// The tax in the prices; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Tax>,
}

/// An event's refund policy, snapshotted into each order when it is paid.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPolicy {
    /// Fans may ask until then (RFC 3339).
    pub until: DateTime<Utc>,
    /// The share of each refunded ticket's price kept, 0 to 100.
    #[schema(example = 10, maximum = 100)]
    pub fee_percent: u8,
}

/// An event's tax.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tax {
    /// 0 to 100, to two decimals (`19`, `7.7`).
    #[schema(example = 19.0, minimum = 0.0, maximum = 100.0)]
    pub rate_percent: f64,
    /// `true`: the prices hold the tax; `false`: it is added at checkout.
    pub included: bool,
}

impl Tax {
    /// The rate in basis points, if it is 0 to 100 % to two decimals.
    pub fn rate_bp(&self) -> Option<i32> {
        let bp = self.rate_percent * 100.0;
        (self.rate_percent.is_finite()
            && (0.0..=10_000.0).contains(&bp)
            && (bp - bp.round()).abs() < 1e-6)
            .then(|| bp.round() as i32)
    }

    pub fn from_bp(bp: i32, included: bool) -> Self {
        Tax {
            rate_percent: f64::from(bp) / 100.0,
            included,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EventCreated {
    pub event_id: EventId,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Event {
    pub event_id: EventId,
    pub venue_id: VenueId,
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub onsale_at: DateTime<Utc>,
    pub max_per_fan: u32,
    pub hold_seconds: u32,
    pub admission_per_second: u32,
    pub prices: BTreeMap<String, u64>,
    pub seat_count: u32,
    /// Seats free right now.
    pub available: u32,
    /// Seats held by a fan who has not paid yet.
    pub held: u32,
    pub sold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_policy: Option<RefundPolicy>,
    pub tax: Tax,
    /// An operator cancelled the event: its sale is closed and its orders refunded.
    pub cancelled: bool,
}
