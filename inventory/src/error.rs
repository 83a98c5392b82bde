//! Inventory's errors, and how each reaches a client.

use axum::response::{IntoResponse, Response};
use proto::{ErrorBody, ErrorCode, EventId, VenueId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed JSON but describes something onsale refuses.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("venue {0} not found")]
    VenueNotFound(VenueId),
    #[error("event {0} not found")]
    EventNotFound(EventId),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// Postgres holds something the code cannot read: a bug or a manual edit.
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
    /// A read that just failed is not tried again yet (its cause was logged then).
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for ErrorBody {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid { code, message } => ErrorBody::new(code, message),
            Error::VenueNotFound(id) => ErrorBody::new(
                ErrorCode::VenueNotFound,
                format!("venue {id} does not exist"),
            ),
            Error::EventNotFound(id) => ErrorBody::new(
                ErrorCode::EventNotFound,
                format!("event {id} does not exist"),
            ),
            Error::Database(ref cause) if is_unavailable(cause) => {
                tracing::error!(error = %cause, "postgres unavailable");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "the database is unavailable, try again shortly",
                )
            }
            Error::Redis(ref cause)
                if cause.is_io_error() || cause.is_connection_dropped() || cause.is_timeout() =>
            {
                tracing::error!(error = %cause, "redis unavailable");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "seat state is unavailable, try again shortly",
                )
            }
            Error::Database(cause) => internal(&cause),
            Error::Redis(cause) => internal(&cause),
            Error::Inconsistent(what) => internal(&what),
            Error::Unavailable(what) => {
                tracing::debug!(what, "refused while a failed read cools down");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "seat state is unavailable, try again shortly",
                )
            }
        }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
    )
}

fn internal(cause: &dyn std::fmt::Display) -> ErrorBody {
    tracing::error!(error = %cause, "internal error");
    ErrorBody::new(ErrorCode::Internal, "internal error")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ErrorBody::from(self).into_response()
    }
}
