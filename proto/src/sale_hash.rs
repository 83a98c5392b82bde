//! An event's sale hash ([`Keys::sale`](crate::Keys::sale)): the one spelling of each
//! field, and the typed reading of the hash. The Lua scripts spell the same names
//! (`join.lua`, `hold_batch.lua`, `set_sale_state.lua`, …); Rust code names a field
//! only through these constants.

use crate::wire::queue::SaleState;

/// The sale's [`SaleState`].
pub const STATE: &str = "state";
/// How many queue numbers have been admitted so far ("now serving").
pub const SERVED: &str = "served";
/// The operator's admission rate, requests per second.
pub const ADMISSION_PER_SECOND: &str = "admission_per_second";
/// The most seats one fan may hold or buy, across devices.
pub const MAX_PER_FAN: &str = "max_per_fan";
/// How long a hold lasts, in milliseconds.
pub const HOLD_MS: &str = "hold_ms";
/// How many requests the draw numbered from the pre-queue (set once it finished).
pub const PREQUEUE_SIZE: &str = "prequeue_size";

/// The sale hash as Rust sees it: every field optional, since a hash may be partly
/// written (a sale loaded field by field) or missing (no sale in Redis).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SaleHash {
    pub state: Option<SaleState>,
    pub served: Option<u64>,
    pub admission_per_second: Option<u32>,
    pub max_per_fan: Option<u32>,
    pub hold_ms: Option<i64>,
}

impl SaleHash {
    /// The fields [`SaleHash::from_values`] reads, in its order (for `HMGET`).
    pub const FIELDS: [&'static str; 5] =
        [STATE, SERVED, ADMISSION_PER_SECOND, MAX_PER_FAN, HOLD_MS];

    /// The hash from the values of [`Self::FIELDS`], as `HMGET` returns them. A value
    /// that does not parse reads as absent.
    pub fn from_values(values: &[Option<String>]) -> Self {
        let at = |i: usize| values.get(i).and_then(|v| v.as_deref());
        SaleHash {
            state: at(0).and_then(SaleState::parse),
            served: at(1).and_then(|v| v.parse().ok()),
            admission_per_second: at(2).and_then(|v| v.parse().ok()),
            max_per_fan: at(3).and_then(|v| v.parse().ok()),
            hold_ms: at(4).and_then(|v| v.parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_reads_typed_and_bad_or_missing_fields_read_as_absent() {
        let values = [
            Some("sold_out".to_owned()),
            Some("42".to_owned()),
            Some("not a number".to_owned()),
            None,
        ];
        let hash = SaleHash::from_values(&values);
        assert_eq!(hash.state, Some(SaleState::SoldOut));
        assert_eq!(hash.served, Some(42));
        assert_eq!(hash.admission_per_second, None);
        assert_eq!(hash.max_per_fan, None);
        assert_eq!(hash.hold_ms, None);
        assert_eq!(SaleHash::from_values(&[]), SaleHash::default());
    }
}
