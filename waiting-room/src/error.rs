//! The waiting room's errors, and how each reaches a client.

use axum::response::{IntoResponse, Response};
use proto::{ErrorBody, ErrorCode, EventId, RequestId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is refused; `request_id` names the earlier request it is about,
    /// where there is one.
    #[error("{message}")]
    Refused {
        code: ErrorCode,
        message: String,
        request_id: Option<RequestId>,
    },
    #[error("event {0} not found")]
    EventNotFound(EventId),
    #[error("the sale of event {0} is not set up")]
    SaleNotFound(EventId),
    #[error("request {0} not found")]
    RequestNotFound(RequestId),
    #[error("the seat map of event {0} is not loaded")]
    SeatMapNotLoaded(EventId),
    /// Redis lost the line of a sale that had opened: nobody joins until it is
    /// restored from Postgres (`POST /v1/ops/events/{id}/restore`).
    #[error("the line of event {0} is lost in redis and awaits a restore")]
    LineLost(EventId),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// A dependency failed for a whole batch of joins (each reports it as this).
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl Error {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Refused {
            code,
            message: message.into(),
            request_id: None,
        }
    }
}

impl From<Error> for ErrorBody {
    fn from(error: Error) -> Self {
        match error {
            Error::Refused {
                code,
                message,
                request_id,
            } => ErrorBody {
                request_id,
                ..ErrorBody::new(code, message)
            },
            Error::EventNotFound(id) => ErrorBody::new(
                ErrorCode::EventNotFound,
                format!("event {id} does not exist"),
            ),
            Error::SaleNotFound(id) => ErrorBody::new(
                ErrorCode::SaleNotFound,
                format!(
                    "event {id} has no sale yet; it is set up by the draw at the on-sale or by an operator's lever"
                ),
            ),
            Error::RequestNotFound(id) => ErrorBody::new(
                ErrorCode::RequestNotFound,
                format!("request {id} does not exist"),
            ),
            Error::SeatMapNotLoaded(id) => {
                tracing::error!(event_id = %id, "seat map not loaded: run `inventory rebuild`");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "the seat map is being restored, try again shortly",
                )
            }
            Error::LineLost(id) => {
                tracing::warn!(event_id = %id,
                    "redis lost this sale's line: restore it with POST /v1/ops/events/{id}/restore");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "the line is being restored, try again shortly",
                )
            }
            Error::Database(cause) => {
                tracing::error!(error = %cause, "postgres error");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "the waiting room is unavailable, try again shortly",
                )
            }
            Error::Redis(cause) => {
                tracing::error!(error = %cause, "redis error");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "the waiting room is unavailable, try again shortly",
                )
            }
            Error::Unavailable(cause) => {
                tracing::error!(error = %cause, "a join batch failed");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "the waiting room is unavailable, try again shortly",
                )
            }
            Error::Unexpected(what) => {
                tracing::error!(what, "unexpected reply");
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
