//! Card checks made before any money moves: digits and length, the Luhn check
//! digit, an expiry in the future, a 3- or 4-digit security code. A card that passes
//! is kept only as its last four digits; the whole number never reaches a log, an
//! error message or the database.

use chrono::{Datelike, NaiveDate};
use proto::ErrorCode;
use proto::wire::payments::Checkout;

/// A card that passed the checks. Its `Debug` shows the last four digits only.
#[derive(Clone)]
pub struct Card {
    number: String,
    pub expiry_month: u32,
    pub expiry_year: i32,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Card(**** {})", self.last4())
    }
}

impl Card {
    pub fn number(&self) -> &str {
        &self.number
    }

    pub fn last4(&self) -> &str {
        &self.number[self.number.len() - 4..]
    }
}

/// Why a card was refused, with the error code it travels with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CardError {
    pub code: ErrorCode,
    pub message: &'static str,
}

fn refuse(code: ErrorCode, message: &'static str) -> CardError {
    CardError { code, message }
}

/// Checks a checkout body against `today` (UTC). Spaces and dashes inside the
/// number are allowed, as people type them.
pub fn validate(body: &Checkout, today: NaiveDate) -> Result<Card, CardError> {
    let number: String = body
        .card_number
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse(
            ErrorCode::InvalidCardNumber,
            "card_number must be 12 to 19 digits",
        ));
    }
    if !luhn(&number) {
        return Err(refuse(
            ErrorCode::InvalidCardNumber,
            "card_number fails its check digit; check it for a typo",
        ));
    }
    let (month, year) = parse_expiry(&body.expiry)
        .ok_or_else(|| refuse(ErrorCode::InvalidExpiry, "expiry must be MM/YY"))?;
    // A card is valid through the last day of its expiry month.
    if (year, month) < (today.year(), today.month()) {
        return Err(refuse(ErrorCode::CardExpired, "the card has expired"));
    }
    let cvc = body.cvc.trim();
    // American Express (numbers starting 34 or 37) prints 4 digits; every other
    // brand 3.
    let amex = number.starts_with("34") || number.starts_with("37");
    let (digits, message) = if amex {
        (
            4,
            "cvc must be the 4 digits on the front of an American Express card",
        )
    } else {
        (3, "cvc must be the 3 digits on the back of the card")
    };
    if cvc.len() != digits || !cvc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse(ErrorCode::InvalidCvc, message));
    }
    Ok(Card {
        number,
        expiry_month: month,
        expiry_year: year,
    })
}

fn parse_expiry(expiry: &str) -> Option<(u32, i32)> {
    let (month, year) = expiry.trim().split_once('/')?;
    if month.len() != 2 || year.len() != 2 {
        return None;
    }
    let month: u32 = month.parse().ok()?;
    let year: i32 = year.parse().ok()?;
    (1..=12).contains(&month).then_some((month, 2000 + year))
}

/// The Luhn check over a string of ASCII digits.
fn luhn(number: &str) -> bool {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(number: &str, expiry: &str, cvc: &str) -> Checkout {
        Checkout {
            card_number: number.into(),
            expiry: expiry.into(),
            cvc: cvc.into(),
            billing: None,
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).expect("date")
    }

    fn code(result: Result<Card, CardError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code)
    }

    #[test]
    fn the_sandbox_cards_pass() {
        for number in ["4242424242424242", "4000000000000002", "4000000000003220"] {
            let card = validate(&body(number, "12/34", "123"), today()).expect(number);
            assert_eq!(card.last4(), &number[12..]);
        }
        let spaced = validate(&body("4242 4242 4242 4242", "11/26", "123"), today());
        assert_eq!(
            spaced.map(|c| c.last4().to_owned()).ok().as_deref(),
            Some("4242")
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        let invalid = Some(ErrorCode::InvalidCardNumber);
        assert_eq!(
            code(validate(&body("4242424242424241", "12/34", "123"), today())),
            invalid
        );
        assert_eq!(
            code(validate(&body("42424242", "12/34", "123"), today())),
            invalid
        );
        assert_eq!(
            code(validate(&body("4242x24242424242", "12/34", "123"), today())),
            invalid
        );
        assert_eq!(code(validate(&body("", "12/34", "123"), today())), invalid);
        assert_eq!(
            code(validate(
                &body("42424242424242424242", "12/34", "123"),
                today()
            )),
            invalid
        );
    }

    #[test]
    fn expiry_is_mm_yy_and_in_the_future() {
        let invalid = Some(ErrorCode::InvalidExpiry);
        for expiry in ["1234", "13/30", "00/30", "1/30", "12/2030", "ab/cd", ""] {
            assert_eq!(
                code(validate(&body("4242424242424242", expiry, "123"), today())),
                invalid,
                "{expiry}"
            );
        }
        assert_eq!(
            code(validate(&body("4242424242424242", "10/26", "123"), today())),
            Some(ErrorCode::CardExpired)
        );
        // Valid through the end of its month.
        assert!(validate(&body("4242424242424242", "11/26", "123"), today()).is_ok());
    }

    #[test]
    fn the_cvc_has_the_length_the_brand_prints() {
        // Visa and the others: 3 digits; a 4-digit CVC is refused.
        for cvc in ["12", "1234", "12345", "12a", ""] {
            assert_eq!(
                code(validate(&body("4242424242424242", "12/34", cvc), today())),
                Some(ErrorCode::InvalidCvc),
                "{cvc}"
            );
        }
        assert!(validate(&body("4242424242424242", "12/34", "123"), today()).is_ok());
        // American Express: 4 digits.
        let amex = "378282246310005";
        for cvc in ["123", "12345", "12a4"] {
            assert_eq!(
                code(validate(&body(amex, "12/34", cvc), today())),
                Some(ErrorCode::InvalidCvc),
                "{cvc}"
            );
        }
        assert!(validate(&body(amex, "12/34", "1234"), today()).is_ok());
    }

    #[test]
    fn a_short_number_that_passes_luhn_is_not_a_card() {
        // "4242" passes the check digit; a card number is 12 to 19 digits.
        assert!(luhn("4242"));
        for number in ["4242", "42424242424", "42424242424242424242"] {
            assert_eq!(
                code(validate(&body(number, "12/34", "123"), today())),
                Some(ErrorCode::InvalidCardNumber),
                "{number}"
            );
        }
    }

    #[test]
    fn debug_shows_only_the_last_four() {
        let card = validate(&body("4242424242424242", "12/34", "123"), today()).expect("card");
        assert_eq!(format!("{card:?}"), "Card(**** 4242)");
        let shown = format!("{:?}", body("4242424242424242", "12/34", "123"));
        assert!(!shown.contains("4242"), "{shown}");
    }
}
