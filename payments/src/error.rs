//! Payments' errors, and how each reaches a client.

use axum::response::{IntoResponse, Response};
use proto::{ErrorBody, ErrorCode, OrderId, RequestId};

use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("request {0} not found")]
    RequestNotFound(RequestId),
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    /// A restore is rebuilding the event from the ledger; try again shortly.
    #[error("the event is being restored")]
    Restoring,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
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

impl From<ledger::checkout::SellError> for Error {
    fn from(error: ledger::checkout::SellError) -> Self {
        match error {
            ledger::checkout::SellError::Database(e) => Error::Database(e),
            other => Error::Unexpected(other.to_string()),
        }
    }
}

impl From<Error> for ErrorBody {
    fn from(error: Error) -> Self {
        match error {
            Error::Refused { code, message } => ErrorBody::new(code, message),
            Error::RequestNotFound(id) => ErrorBody::new(
                ErrorCode::RequestNotFound,
                format!("request {id} does not exist, or is not yours"),
            ),
            Error::OrderNotFound(id) => ErrorBody::new(
                ErrorCode::OrderNotFound,
                format!("order {id} does not exist, or is not yours"),
            ),
            Error::Restoring => ErrorBody::new(
                ErrorCode::ServiceUnavailable,
                "the event is being restored; try again in a few seconds",
            ),
            Error::Database(_) | Error::Redis(_) | Error::Provider(_) => {
                tracing::warn!(error = %error, "payments dependency unavailable");
                ErrorBody::new(
                    ErrorCode::ServiceUnavailable,
                    "payments are unavailable right now; try again shortly",
                )
            }
            Error::Unexpected(_) => {
                tracing::error!(error = %error, "payments internal error");
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
