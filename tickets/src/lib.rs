//! Tickets and the door.
//!
//! A paid seat becomes a ticket with a version (`tickets.tickets`), issued in the
//! transaction that settles its order (payments calls [`ledger::issue`], as it
//! calls the booking ledger). Its code, what the QR holds, is a compact JWS signed
//! with the event's Ed25519 key ([`code`], [`keys`]): a scanner verifies it offline.
//! A reissue bumps the version and revokes the old code, in a list offline scanners
//! download. The door ([`door`]) admits a ticket once per entry: atomically in
//! Redis (`redeem.lua`), backed by the entries' primary key in Postgres.
//!
//! docs/TICKETS.md is the guide; the routes are in [`routes`].

use std::sync::Arc;

use axum::extract::FromRef;
use axum::response::{IntoResponse, Response};
use platform::auth::TokenVerifier;
use proto::{ErrorBody, ErrorCode, TicketId};

pub mod code;
pub mod door;
pub mod keys;
pub mod ledger;
pub mod qr;
pub mod routes;
pub mod staff;
pub mod stats;

pub use door::Door;
pub use keys::KeyRing;
pub use routes::router;

/// The router's state: the door's work, and the token verifier for its callers.
#[derive(Clone, FromRef)]
pub struct TicketsState {
    pub door: Door,
    pub verifier: Arc<TokenVerifier>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("ticket {0} not found")]
    TicketNotFound(TicketId),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl Error {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<door::DoorError> for Error {
    fn from(error: door::DoorError) -> Self {
        match error {
            door::DoorError::Database(e) => Error::Database(e),
            door::DoorError::Redis(e) => Error::Redis(e),
            door::DoorError::Raced(scan) => Error::refused(
                ErrorCode::ServiceUnavailable,
                format!(
                    "scan {scan} raced another scan of its ticket; send it again (same scan_id)"
                ),
            ),
            door::DoorError::Unexpected(e) => Error::Unexpected(e),
        }
    }
}

impl From<Error> for ErrorBody {
    fn from(error: Error) -> Self {
        match error {
            Error::Refused { code, message } => ErrorBody::new(code, message),
            Error::TicketNotFound(id) => ErrorBody::new(
                ErrorCode::TicketNotFound,
                format!("ticket {id} does not exist, or is not yours"),
            ),
            Error::Database(_) | Error::Redis(_) => {
                tracing::warn!(error = %error, "tickets dependency unavailable");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "tickets are unavailable right now; try again shortly (a scan sent again with its scan_id is one scan)",
                )
            }
            Error::Unexpected(_) => {
                tracing::error!(error = %error, "tickets internal error");
                ErrorBody::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ErrorBody::from(self).into_response()
    }
}
