//! The error vocabulary of the public API. Every error response, from every service,
//! is an [`ErrorBody`]: `{"code": "...", "message": "..."}`. Codes are stable: clients
//! branch on them, so a code is never renamed or reused for another meaning.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code and the HTTP status it travels with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // 400: the request cannot be read.
    /// The body is not valid JSON.
    MalformedJson,
    /// The body is JSON but not of the expected shape (unknown or missing fields,
    /// wrong types), or a value is out of range.
    InvalidRequest,
    /// A path parameter is not a valid id.
    InvalidPath,
    /// A query parameter is not understood.
    InvalidQuery,
    /// A path that only takes a WebSocket upgrade was asked for without one.
    NotAWebsocket,
    /// A WebSocket frame of a kind the server does not take (binary).
    UnsupportedFrame,
    /// A WebSocket message the server does not understand.
    InvalidMessage,
    /// A venue without a single seat.
    VenueHasNoSeats,
    /// Two sections of a venue share a name.
    DuplicateSection,
    /// Two rows of a section share a label.
    DuplicateRowLabel,
    /// An event whose on-sale time is not before its start.
    OnsaleAfterStart,
    /// An event without a price for a tier its venue uses.
    MissingPrice,
    /// An event pricing a tier its venue does not have.
    UnknownPriceTier,
    /// The `Idempotency-Key` header is not usable.
    InvalidIdempotencyKey,
    /// More tickets than the event allows one fan.
    OverLimit,
    /// A seat id the venue does not have.
    UnknownSeat,
    /// A section the venue does not have.
    UnknownSection,
    /// A card number that is not 12 to 19 digits passing the Luhn check.
    InvalidCardNumber,
    /// A card expiry that is not `MM/YY`.
    InvalidExpiry,
    /// A card whose expiry has passed.
    CardExpired,
    /// A card security code that is not 3 or 4 digits.
    InvalidCvc,
    /// A webhook whose `Onsale-Signature` is missing or does not verify.
    InvalidSignature,
    /// A webhook signed more than 300 s away from now.
    SignatureExpired,

    // 401 / 403: who is asking.
    /// No bearer token was sent.
    Unauthenticated,
    /// The bearer token is malformed, forged, expired, or for another audience; or
    /// a refresh token is not one this server issued.
    InvalidToken,
    /// The token's session has ended (signed out, every session ended, a refresh
    /// token used twice, or the sign-in grown too old to refresh).
    SessionEnded,
    /// The account's role changed after the token was issued: refresh it.
    TokenOutdated,
    /// A refresh token that was already spent was used again: the session it
    /// belonged to has been ended, in case it was stolen.
    RefreshTokenReused,
    /// Wrong email or password.
    InvalidCredentials,
    /// The caller's role does not allow this.
    Forbidden,
    /// Joining a line needs a confirmed email address (`ONSALE_AUTH__REQUIRE_VERIFIED_EMAIL`):
    /// follow the link in the confirmation email (`POST /v1/auth/verify-email/resend`
    /// sends another), then refresh the token.
    EmailUnverified,
    /// An email confirmation token that is not one this server issued (mistyped,
    /// cut short, or made up).
    VerificationTokenInvalid,
    /// An email confirmation token past its 24 hours: ask for another.
    VerificationTokenExpired,
    /// An email confirmation token that was used already (the address it confirmed
    /// stays confirmed).
    VerificationTokenUsed,

    // 404 / 405 / 409.
    NotFound,
    VenueNotFound,
    EventNotFound,
    UserNotFound,
    MethodNotAllowed,
    /// An account with this email exists.
    EmailTaken,
    /// An `Idempotency-Key` reused with a different request.
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still being answered.
    IdempotencyKeyInFlight,
    /// A seat is held or sold by someone else.
    SeatUnavailable,
    RequestNotFound,
    OrderNotFound,
    TicketNotFound,
    /// A reissue of a ticket that has come in through the door.
    TicketCheckedIn,
    /// A reissue of a ticket that admits nobody any more.
    TicketVoid,
    RefundNotFound,
    /// The order has no invoice (it was never paid).
    InvoiceNotFound,
    /// The event's refund policy lets fans ask for no refund.
    RefundsNotOffered,
    /// The event's refund deadline has passed.
    RefundWindowClosed,
    /// A ticket of the refund is void already, or not the order's.
    TicketNotRefundable,
    /// The event is cancelled: no checkout, no new refund request of a fan's (the
    /// cancellation refunds every order).
    EventCancelled,
    /// The role change would leave nobody with the admin role.
    LastAdmin,
    /// Checkout of a request that holds no seats (still in line, or refused).
    RequestNotHeld,
    /// Checkout of a request whose hold has ended (expired, released, cancelled).
    HoldEnded,
    /// Checkout of a request whose seats are already paid for.
    AlreadyPaid,
    /// A payment for this request is in flight; its outcome comes first.
    PaymentInFlight,
    /// The event exists but its sale was never set up (an event created before sales
    /// were made with their events, and not yet drawn or touched by an operator).
    SaleNotFound,
    /// The sale is closed: no more requests.
    SaleClosed,
    /// Every seat is sold.
    SoldOut,
    /// The fan already has a live request for this event.
    AlreadyInLine,
    /// The sale cannot go from its current state to the one asked for.
    InvalidTransition,

    // 413 / 415 / 429.
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Too many requests; `Retry-After` says when to come back.
    RateLimited,

    // 5xx: never the client's fault, never with internal detail.
    Internal,
    /// A dependency (Postgres, Redis) is unreachable right now.
    ServiceUnavailable,
    /// The server is at its capacity for this kind of work (password checks);
    /// `Retry-After` says when to come back.
    Overloaded,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson
            | InvalidPath
            | InvalidQuery
            | NotAWebsocket
            | UnsupportedFrame
            | InvalidMessage
            | InvalidIdempotencyKey
            | InvalidSignature
            | SignatureExpired
            | VerificationTokenInvalid => 400,
            Unauthenticated | InvalidToken | InvalidCredentials | SessionEnded | TokenOutdated
            | RefreshTokenReused => 401,
            Forbidden | EmailUnverified => 403,
            NotFound | VenueNotFound | EventNotFound | UserNotFound | RequestNotFound
            | OrderNotFound | TicketNotFound | SaleNotFound | RefundNotFound | InvoiceNotFound => {
                404
            }
            MethodNotAllowed => 405,
            EmailTaken
            | IdempotencyKeyReused
            | IdempotencyKeyInFlight
            | SeatUnavailable
            | SaleClosed
            | SoldOut
            | AlreadyInLine
            | InvalidTransition
            | RequestNotHeld
            | HoldEnded
            | AlreadyPaid
            | PaymentInFlight
            | TicketCheckedIn
            | TicketVoid
            | RefundsNotOffered
            | RefundWindowClosed
            | TicketNotRefundable
            | EventCancelled
            | LastAdmin
            | VerificationTokenUsed => 409,
            VerificationTokenExpired => 410,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            InvalidRequest | VenueHasNoSeats | DuplicateSection | DuplicateRowLabel
            | OnsaleAfterStart | MissingPrice | UnknownPriceTier | OverLimit | UnknownSeat
            | UnknownSection | InvalidCardNumber | InvalidExpiry | CardExpired | InvalidCvc => 422,
            RateLimited => 429,
            Internal => 500,
            ServiceUnavailable | Overloaded => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            InvalidRequest => "invalid_request",
            InvalidPath => "invalid_path",
            InvalidQuery => "invalid_query",
            NotAWebsocket => "not_a_websocket",
            UnsupportedFrame => "unsupported_frame",
            InvalidMessage => "invalid_message",
            VenueHasNoSeats => "venue_has_no_seats",
            DuplicateSection => "duplicate_section",
            DuplicateRowLabel => "duplicate_row_label",
            OnsaleAfterStart => "onsale_after_start",
            MissingPrice => "missing_price",
            UnknownPriceTier => "unknown_price_tier",
            InvalidIdempotencyKey => "invalid_idempotency_key",
            OverLimit => "over_limit",
            UnknownSeat => "unknown_seat",
            UnknownSection => "unknown_section",
            InvalidCardNumber => "invalid_card_number",
            InvalidExpiry => "invalid_expiry",
            CardExpired => "card_expired",
            InvalidCvc => "invalid_cvc",
            InvalidSignature => "invalid_signature",
            SignatureExpired => "signature_expired",
            OrderNotFound => "order_not_found",
            TicketNotFound => "ticket_not_found",
            TicketCheckedIn => "ticket_checked_in",
            TicketVoid => "ticket_void",
            RefundNotFound => "refund_not_found",
            InvoiceNotFound => "invoice_not_found",
            RefundsNotOffered => "refunds_not_offered",
            RefundWindowClosed => "refund_window_closed",
            TicketNotRefundable => "ticket_not_refundable",
            EventCancelled => "event_cancelled",
            LastAdmin => "last_admin",
            RequestNotHeld => "request_not_held",
            HoldEnded => "hold_ended",
            AlreadyPaid => "already_paid",
            PaymentInFlight => "payment_in_flight",
            RequestNotFound => "request_not_found",
            SaleNotFound => "sale_not_found",
            SaleClosed => "sale_closed",
            SoldOut => "sold_out",
            AlreadyInLine => "already_in_line",
            InvalidTransition => "invalid_transition",
            Unauthenticated => "unauthenticated",
            InvalidToken => "invalid_token",
            SessionEnded => "session_ended",
            TokenOutdated => "token_outdated",
            RefreshTokenReused => "refresh_token_reused",
            InvalidCredentials => "invalid_credentials",
            Forbidden => "forbidden",
            EmailUnverified => "email_unverified",
            VerificationTokenInvalid => "verification_token_invalid",
            VerificationTokenExpired => "verification_token_expired",
            VerificationTokenUsed => "verification_token_used",
            NotFound => "not_found",
            VenueNotFound => "venue_not_found",
            EventNotFound => "event_not_found",
            UserNotFound => "user_not_found",
            MethodNotAllowed => "method_not_allowed",
            EmailTaken => "email_taken",
            IdempotencyKeyReused => "idempotency_key_reused",
            IdempotencyKeyInFlight => "idempotency_key_in_flight",
            SeatUnavailable => "seat_unavailable",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RateLimited => "rate_limited",
            Internal => "internal",
            ServiceUnavailable => "service_unavailable",
            Overloaded => "overloaded",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for humans; its wording may change, the code does not.
    pub message: String,
    /// The earlier request a refusal is about, for a client to follow instead: the
    /// fan's request already in line (`already_in_line`), or the one an
    /// Idempotency-Key was first used for (`idempotency_key_reused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<crate::RequestId>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            request_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string anywhere under `enum` in a schema.
    fn enum_names(schema: &serde_json::Value, out: &mut Vec<String>) {
        match schema {
            serde_json::Value::Object(fields) => {
                for (key, value) in fields {
                    match (key.as_str(), value) {
                        ("enum", serde_json::Value::Array(names)) => {
                            out.extend(names.iter().filter_map(|n| n.as_str().map(str::to_owned)))
                        }
                        _ => enum_names(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| enum_names(i, out)),
            _ => {}
        }
    }

    /// The codes come from the enum's own schema (derived from its variants), not from
    /// a second list here that a new code could be missing from.
    #[test]
    fn every_code_has_its_wire_name_and_a_status() {
        let schema = serde_json::to_value(<ErrorCode as utoipa::PartialSchema>::schema())
            .expect("the schema serializes");
        let mut names = Vec::new();
        enum_names(&schema, &mut names);
        assert!(names.len() >= 53, "the schema lists every code: {names:?}");
        for name in names {
            let code: ErrorCode = serde_json::from_value(serde_json::json!(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(code.to_string(), name);
            assert!((400..600).contains(&code.status()), "{name}");
        }
    }

    #[test]
    fn body_shape_is_code_and_message() {
        let body = ErrorBody::new(ErrorCode::SeatUnavailable, "seat Floor-A-1 is sold");
        assert_eq!(
            serde_json::to_value(&body).ok(),
            Some(
                serde_json::json!({"code": "seat_unavailable", "message": "seat Floor-A-1 is sold"})
            )
        );
    }
}
