//! What an email says: which domain events become emails ([`Kind`]), the facts one
//! is made of, and its subject, HTML and text, rendered from the minijinja templates
//! in `notifier/templates/` (embedded at compile time, so a binary needs no files).
//!
//! `.html` templates are autoescaped (minijinja escapes by file extension): an event
//! named `<b>Rock</b>` shows as text, never as markup. `.txt` templates are not.

use chrono::{DateTime, Utc};
use std::fmt::Write as _;

use minijinja::{AutoEscape, Environment, Output, State, Value, context};
use proto::wire::events::{EventType, OrderPayload, RequestPayload, VerificationPayload};
use serde::{Deserialize, Serialize};

/// The events that email the fan. Every other type is logged as `skipped`:
/// `request.rejected` too, on purpose: a sell-out rejects most of the line at once,
/// the fan sees the rejection live in the waiting room, and a burst of tens of
/// thousands of "no seats for you" emails would delay the ones about money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Held,
    Expired,
    Paid,
    Refunded,
    /// "Confirm your email address", with the link that does it.
    VerifyEmail,
}

impl Kind {
    pub fn for_event(event_type: EventType) -> Option<Self> {
        match event_type {
            EventType::RequestHeld => Some(Kind::Held),
            EventType::RequestExpired => Some(Kind::Expired),
            EventType::OrderPaid => Some(Kind::Paid),
            EventType::OrderRefunded => Some(Kind::Refunded),
            EventType::AccountVerificationRequested => Some(Kind::VerifyEmail),
            EventType::RequestRejected
            | EventType::RequestReleased
            | EventType::RequestConfirmed
            | EventType::OrderDeclined => None,
        }
    }

    fn template(self) -> &'static str {
        match self {
            Kind::Held => "held",
            Kind::Expired => "expired",
            Kind::Paid => "paid",
            Kind::Refunded => "refunded",
            Kind::VerifyEmail => "verify",
        }
    }
}

/// An emailing event's payload, read by its kind.
#[derive(Clone, Debug)]
pub enum Payload {
    Request(RequestPayload),
    Order(OrderPayload),
    Account(VerificationPayload),
}

impl Payload {
    pub fn parse(kind: Kind, payload: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            Kind::Held | Kind::Expired => Payload::Request(RequestPayload::deserialize(payload)?),
            Kind::Paid | Kind::Refunded => Payload::Order(OrderPayload::deserialize(payload)?),
            Kind::VerifyEmail => Payload::Account(VerificationPayload::deserialize(payload)?),
        })
    }

    /// The account the email is for.
    pub fn fan_id(&self) -> proto::UserId {
        match self {
            Payload::Request(p) => p.fan_id,
            Payload::Order(p) => p.fan_id,
            Payload::Account(p) => p.user_id,
        }
    }
}

/// Everything a template may show; gathered from the envelope and Postgres.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    pub event_name: String,
    /// Seats as a fan reads them: "Section Floor, row R1, seat 5".
    pub seats: Vec<String>,
    /// The fan's page for the event: `{public_url}/e/{event_id}`.
    pub link: String,
    pub hold_expires: Option<String>,
    pub amount: Option<String>,
    pub card_last4: Option<String>,
    pub order_id: Option<String>,
    /// Quoted to support: the booking request's id.
    pub reference: String,
    /// A paid order's tickets: each drawn as a QR attached inline (`cid:<cid>`).
    pub tickets: Vec<TicketFact>,
    /// The fan's orders page, where the tickets are too: `{public_url}/orders`.
    pub orders_link: String,
    /// A refund approved for a paid order (absent: a payment paid back because it
    /// came after the hold ended).
    pub refund: Option<RefundFact>,
    /// The confirmation link, `{public_url}/verify#token=<token>`: the token in the
    /// fragment, which the browser keeps to itself.
    pub verify_link: Option<String>,
    /// Until when the confirmation link works.
    pub link_expires: Option<String>,
}

/// A refund as an email tells it.
#[derive(Clone, Debug, Serialize)]
pub struct RefundFact {
    pub amount: String,
    /// What the refund policy kept, if anything.
    pub fee: Option<String>,
    pub seats: Vec<String>,
    /// The event is cancelled; `reason` says why.
    pub cancelled: bool,
    pub reason: String,
    pub credit_note: Option<String>,
}

/// One ticket as an email shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TicketFact {
    pub seat: String,
    /// The QR's content, printed under it for a door that types codes in.
    pub code: String,
    /// The inline QR image's Content-ID.
    pub cid: String,
}

impl Facts {
    pub fn new(payload: &Payload, event_name: &str, public_base: &str) -> Self {
        let (event_id, request_id, seats) = match payload {
            Payload::Request(p) => (p.event_id, p.request_id, &p.seats),
            Payload::Order(p) => (p.event_id, p.request_id, &p.seats),
            Payload::Account(p) => return Self::confirmation(p, public_base),
        };
        let mut facts = Facts {
            event_name: event_name.to_owned(),
            seats: seats.iter().map(|s| format_seat(s)).collect(),
            link: format!("{public_base}/e/{event_id}"),
            hold_expires: None,
            amount: None,
            card_last4: None,
            order_id: None,
            reference: request_id.to_string(),
            tickets: Vec::new(),
            orders_link: format!("{public_base}/orders"),
            refund: None,
            verify_link: None,
            link_expires: None,
        };
        match payload {
            Payload::Account(_) => {}
            Payload::Request(p) => facts.hold_expires = p.hold_expires_at.map(format_time),
            Payload::Order(p) => {
                facts.amount = Some(format_amount(p.amount_cents, &p.currency));
                facts.card_last4 = (!p.card_last4.is_empty()).then(|| p.card_last4.clone());
                facts.order_id = Some(p.order_id.to_string());
                facts.refund = p.refund.as_ref().map(|r| RefundFact {
                    amount: format_amount(r.amount_cents, &p.currency),
                    fee: (r.fee_cents > 0).then(|| format_amount(r.fee_cents, &p.currency)),
                    seats: r.seats.iter().map(|s| format_seat(s)).collect(),
                    cancelled: r.event_cancelled,
                    reason: r
                        .reason
                        .strip_prefix("event cancelled: ")
                        .unwrap_or(&r.reason)
                        .to_owned(),
                    credit_note: r.credit_note_number.clone(),
                });
                if let Some(refund) = &facts.refund {
                    facts.amount = Some(refund.amount.clone());
                }
                facts.tickets = p
                    .tickets
                    .iter()
                    .map(|t| TicketFact {
                        seat: format_seat(&t.seat_id),
                        code: t.code.clone(),
                        cid: format!("ticket-{}@onsale", t.ticket_id),
                    })
                    .collect();
            }
        }
        facts
    }

    /// The facts of a confirmation email: the link, and until when it works.
    fn confirmation(p: &VerificationPayload, public_base: &str) -> Self {
        Facts {
            event_name: String::new(),
            seats: Vec::new(),
            link: format!("{public_base}/"),
            hold_expires: None,
            amount: None,
            card_last4: None,
            order_id: None,
            reference: p.user_id.to_string(),
            tickets: Vec::new(),
            orders_link: format!("{public_base}/orders"),
            refund: None,
            verify_link: Some(format!("{public_base}/verify#token={}", p.token)),
            link_expires: Some(format_time(p.expires_at)),
        }
    }
}

/// A rendered email, ready for the envelope and headers.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // Text templates read naturally with block tags on lines of their own.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_formatter(html_formatter);
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("held.html", include_str!("../templates/held.html")),
            ("held.txt", include_str!("../templates/held.txt")),
            ("expired.html", include_str!("../templates/expired.html")),
            ("expired.txt", include_str!("../templates/expired.txt")),
            ("paid.html", include_str!("../templates/paid.html")),
            ("paid.txt", include_str!("../templates/paid.txt")),
            ("refunded.html", include_str!("../templates/refunded.html")),
            ("refunded.txt", include_str!("../templates/refunded.txt")),
            ("verify.html", include_str!("../templates/verify.html")),
            ("verify.txt", include_str!("../templates/verify.txt")),
        ] {
            // The sources are compiled in; a syntax error is a bug the unit tests catch.
            env.add_template(name, source)
                .expect("the embedded templates parse");
        }
        Self { env }
    }

    pub fn render(&self, kind: Kind, facts: &Facts) -> Result<Rendered, minijinja::Error> {
        let subject = subject(kind, facts);
        let ctx = context! { subject => &subject, ..Value::from_serialize(facts) };
        let render = |ext: &str| {
            self.env
                .get_template(&format!("{}.{ext}", kind.template()))?
                .render(&ctx)
        };
        Ok(Rendered {
            text: render("txt")?,
            html: render("html")?,
            subject,
        })
    }
}

/// minijinja's HTML escaping also escapes `/`, which garbles every URL in an href
/// for no gain: inside text and quoted attributes, `& < > " '` are what matter.
fn html_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), minijinja::Error> {
    match (state.auto_escape(), value.as_str()) {
        (AutoEscape::Html, Some(text)) if !value.is_safe() => {
            for c in text.chars() {
                match c {
                    '&' => out.write_str("&amp;")?,
                    '<' => out.write_str("&lt;")?,
                    '>' => out.write_str("&gt;")?,
                    '"' => out.write_str("&quot;")?,
                    '\'' => out.write_str("&#39;")?,
                    c => out.write_char(c)?,
                }
            }
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// The subject line: short, names the event, says what happened.
pub fn subject(kind: Kind, facts: &Facts) -> String {
    let event = &facts.event_name;
    match (kind, &facts.hold_expires, &facts.amount) {
        (Kind::Held, Some(until), _) => format!("Your seats for {event} are held until {until}"),
        (Kind::Held, None, _) => format!("Your seats for {event} are held"),
        (Kind::Expired, ..) => format!("Your hold for {event} has ended"),
        (Kind::Paid, ..) => format!("Your tickets for {event}"),
        (Kind::Refunded, ..) if facts.refund.as_ref().is_some_and(|r| r.cancelled) => {
            format!("{event} is cancelled: your refund")
        }
        (Kind::Refunded, _, Some(amount)) => format!("Refund of {amount} for {event}"),
        (Kind::Refunded, _, None) => format!("Refund for {event}"),
        (Kind::VerifyEmail, ..) => "Confirm your email address for onsale".to_owned(),
    }
}

/// `1250, "EUR"` → `€12.50`; currencies without a symbol here read `12.50 CHF`.
pub fn format_amount(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let number = format!("{}.{:02}", abs / 100, abs % 100);
    let code = currency.trim().to_ascii_uppercase();
    match code.as_str() {
        "EUR" => format!("{sign}€{number}"),
        "USD" => format!("{sign}${number}"),
        "GBP" => format!("{sign}£{number}"),
        _ => format!("{sign}{number} {code}"),
    }
}

/// `Floor-R1-5` → `Section Floor, row R1, seat 5`; other spellings are shown as sent.
pub fn format_seat(seat: &str) -> String {
    match proto::SeatId::parse(seat) {
        Some(_) => {
            let mut parts = seat.splitn(3, '-');
            let (section, row, number) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            format!("Section {section}, row {row}, seat {number}")
        }
        None => seat.to_owned(),
    }
}

/// Times in UTC, spelled out: fans are anywhere and the email does not know where.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.format("%H:%M UTC on %-d %b %Y").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::wire::payments::OrderState;
    use proto::{EventId, OrderId, RequestId, UserId};

    fn order(state: OrderState) -> Payload {
        Payload::Order(OrderPayload {
            order_id: OrderId::new(),
            request_id: RequestId::new(),
            event_id: EventId::new(),
            fan_id: UserId::new(),
            state,
            seats: vec!["Floor-R1-5".into(), "Floor-R1-6".into()],
            amount_cents: 9000,
            currency: "EUR".into(),
            card_last4: "4242".into(),
            reason: None,
            tickets: vec![proto::wire::tickets::Ticket {
                ticket_id: proto::TicketId::new(),
                seat_id: "Floor-R1-5".into(),
                version: 1,
                state: proto::wire::tickets::TicketState::Valid,
                code: "aGVhZGVy.cGF5bG9hZA.c2lnbmF0dXJl".into(),
            }],
            refund: None,
        })
    }

    #[test]
    fn a_paid_email_shows_each_ticket_as_an_inline_qr_and_its_code() {
        let facts = Facts::new(&order(OrderState::Paid), "Rock", "https://tickets.example");
        let email = Templates::new()
            .render(Kind::Paid, &facts)
            .expect("renders");
        let ticket = &facts.tickets[0];
        assert!(
            email.html.contains(&format!("src=\"cid:{}\"", ticket.cid)),
            "{}",
            email.html
        );
        assert!(
            email.text.contains("aGVhZGVy.cGF5bG9hZA.c2lnbmF0dXJl"),
            "{}",
            email.text
        );
        assert!(
            email.text.contains("https://tickets.example/orders"),
            "{}",
            email.text
        );
        assert_eq!(ticket.seat, format_seat("Floor-R1-5"));
    }

    #[test]
    fn amounts_read_like_prices() {
        assert_eq!(format_amount(1250, "EUR"), "€12.50");
        assert_eq!(format_amount(1250, "usd"), "$12.50");
        assert_eq!(format_amount(5, "GBP"), "£0.05");
        assert_eq!(format_amount(100_000, "CHF"), "1000.00 CHF");
        assert_eq!(format_amount(-1250, "EUR"), "-€12.50");
    }

    #[test]
    fn seats_and_times_read_like_words() {
        assert_eq!(format_seat("Floor-R1-5"), "Section Floor, row R1, seat 5");
        assert_eq!(format_seat("odd seat"), "odd seat");
        let at = DateTime::parse_from_rfc3339("2026-11-30T14:05:00Z").unwrap();
        assert_eq!(
            format_time(at.with_timezone(&Utc)),
            "14:05 UTC on 30 Nov 2026"
        );
    }

    #[test]
    fn only_fan_facing_outcomes_email() {
        let emailing: Vec<_> = EventType::ALL
            .into_iter()
            .filter(|t| Kind::for_event(*t).is_some())
            .map(EventType::as_str)
            .collect();
        assert_eq!(
            emailing,
            [
                "request.held",
                "request.expired",
                "order.paid",
                "order.refunded",
                "account.verification_requested"
            ]
        );
    }

    #[test]
    fn a_confirmation_email_links_to_the_page_with_the_token_in_the_fragment() {
        let payload = Payload::parse(
            Kind::VerifyEmail,
            &serde_json::json!({
                "user_id": UserId::new(),
                "email": "fan@example.com",
                "token": "abc-DEF_123",
                "expires_at": "2026-12-09T10:30:00Z",
            }),
        )
        .expect("the payload reads");
        let facts = Facts::new(&payload, "", "https://tickets.example");
        let email = Templates::new()
            .render(Kind::VerifyEmail, &facts)
            .expect("renders");
        assert_eq!(email.subject, "Confirm your email address for onsale");
        let link = "https://tickets.example/verify#token=abc-DEF_123";
        for part in [&email.text, &email.html] {
            assert!(part.contains(link), "{part}");
            assert!(part.contains("10:30 UTC on 9 Dec 2026"), "{part}");
            assert!(!part.contains("because you booked"), "{part}");
        }
        assert!(
            email.html.contains(&format!("href=\"{link}\"")),
            "{}",
            email.html
        );
    }

    #[test]
    fn a_paid_email_names_event_seats_and_amount_in_both_parts() {
        let facts = Facts::new(&order(OrderState::Paid), "Rock Night", "http://x");
        let email = Templates::new().render(Kind::Paid, &facts).unwrap();
        assert_eq!(email.subject, "Your tickets for Rock Night");
        for part in [&email.text, &email.html] {
            assert!(part.contains("Rock Night"), "{part}");
            assert!(part.contains("Section Floor, row R1, seat 6"), "{part}");
            assert!(part.contains("€90.00"), "{part}");
            assert!(part.contains("4242"), "{part}");
        }
        assert!(
            email
                .text
                .contains("yours.\n  - Section Floor, row R1, seat 5\n  - Section"),
            "{}",
            email.text
        );
    }

    #[test]
    fn html_escapes_what_the_text_part_keeps() {
        let facts = Facts::new(
            &order(OrderState::Refunded),
            "<b>Rock</b> & \"Roll\"",
            "http://x",
        );
        let email = Templates::new().render(Kind::Refunded, &facts).unwrap();
        assert!(
            email
                .html
                .contains("&lt;b&gt;Rock&lt;/b&gt; &amp; &quot;Roll&quot;"),
            "{}",
            email.html
        );
        assert!(!email.html.contains("<b>Rock"));
        assert!(email.text.contains("<b>Rock</b> & \"Roll\""));
        assert!(email.text.contains("refunded the full amount, €90.00"));
    }

    #[test]
    fn a_held_email_has_the_expiry_and_the_pay_link() {
        let event_id = EventId::new();
        let payload = Payload::Request(RequestPayload {
            request_id: RequestId::new(),
            event_id,
            fan_id: UserId::new(),
            state: "held".into(),
            seats: vec!["A-1-1".into()],
            hold_expires_at: Some(
                DateTime::parse_from_rfc3339("2026-11-30T14:05:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            reason: None,
        });
        let facts = Facts::new(&payload, "Show", "https://tickets.example");
        let email = Templates::new().render(Kind::Held, &facts).unwrap();
        assert!(
            email
                .subject
                .ends_with("held until 14:05 UTC on 30 Nov 2026")
        );
        let link = format!("https://tickets.example/e/{event_id}");
        assert!(email.text.contains(&link) && email.html.contains(&link));
        assert!(email.html.contains("14:05 UTC on 30 Nov 2026"));
    }
}
