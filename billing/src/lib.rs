//! Billing: invoices and credit notes.
//!
//! A paid order gets an invoice (series `INV`) in the transaction that settles it; a
//! refund gets a credit note (series `CRN`) referring to the invoice, in the
//! transaction that approves it. Numbers are `{series}-{year}-{n}` with `n`
//! consecutive per series and year: the counter row (`billing.counters`) is taken in
//! the issuing transaction, so a rolled-back issue gives its number back and two
//! issues wait for each other rather than skip.
//!
//! A document is a snapshot ([`Content`]: seller, buyer, lines, tax, total) and is
//! never edited (a trigger refuses it). Its PDF is rendered from the snapshot once,
//! off the settling path ([`pdf`], [`render_pending`]), and kept with its SHA-256.

pub mod documents;
pub mod pdf;

pub use documents::{
    Content, Document, Issue, Kind, Line, Party, issue, of_order, of_refund, pdf_of, render_pending,
};

use serde::{Deserialize, Serialize};

/// Who sells: printed on every document (`ONSALE_PAYMENTS__SELLER__*`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Seller {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub vat_id: Option<String>,
}

impl Seller {
    /// The compiled default, for demos.
    pub fn defaults() -> serde_json::Value {
        serde_json::json!({
            "name": "onsale demo box office",
            "address": "1 Main Street, 10115 Berlin, Germany",
            "vat_id": "DE000000000",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the PDF could not be rendered: {0}")]
    Render(String),
    #[error("stored document {0} does not parse: {1}")]
    Corrupt(String, String),
}

/// Splits a gross or net price into (net, tax, gross) at `rate_bp` basis points,
/// rounding the tax half up to the cent. `included`: `cents` already holds the tax.
pub fn tax_split(cents: i64, rate_bp: i32, included: bool) -> (i64, i64, i64) {
    let rate = i128::from(rate_bp);
    let cents128 = i128::from(cents);
    if included {
        // net = gross / (1 + rate), rounded half up; tax is what remains.
        let net = (cents128 * 10_000 * 2 + (10_000 + rate)) / ((10_000 + rate) * 2);
        let net = net as i64;
        (net, cents - net, cents)
    } else {
        let tax = ((cents128 * rate * 2 + 10_000) / 20_000) as i64;
        (cents, tax, cents + tax)
    }
}

/// `1234` → `"12.34"`.
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_included_splits_the_gross_price() {
        // 119.00 at 19 % holds 19.00 of tax.
        assert_eq!(tax_split(11_900, 1_900, true), (10_000, 1_900, 11_900));
        // 10.00 at 19 %: net 8.403.. rounds to 8.40, tax 1.60.
        assert_eq!(tax_split(1_000, 1_900, true), (840, 160, 1_000));
        assert_eq!(tax_split(4_500, 0, true), (4_500, 0, 4_500));
    }

    #[test]
    fn tax_excluded_is_added_rounded_half_up() {
        assert_eq!(tax_split(10_000, 1_900, false), (10_000, 1_900, 11_900));
        // 0.50 at 7 % is 0.035: rounds up to 0.04.
        assert_eq!(tax_split(50, 700, false), (50, 4, 54));
        assert_eq!(tax_split(1, 2_500, false), (1, 0, 1));
    }

    #[test]
    fn split_parts_always_add_up() {
        for cents in [0, 1, 7, 99, 1_001, 4_500, 123_457] {
            for rate in [0, 500, 700, 1_900, 2_500, 10_000] {
                for included in [true, false] {
                    let (net, tax, gross) = tax_split(cents, rate, included);
                    assert_eq!(net + tax, gross, "{cents} {rate} {included}");
                    assert!(tax >= 0 && net >= 0);
                }
            }
        }
    }

    #[test]
    fn cents_read_as_amounts() {
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(4_505), "45.05");
        assert_eq!(format_cents(-120), "-1.20");
    }
}
