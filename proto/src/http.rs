//! The error body's HTTP form, so an error looks the same whichever service answers:
//! [`ErrorBody`] as a response (status, `WWW-Authenticate`, `Retry-After`), and axum's
//! extractor rejections as error bodies with stable codes. The extractors themselves
//! live in `platform::http`; these impls stay beside the type they are for.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{ErrorBody, ErrorCode};

/// Seconds an `overloaded` answer asks the client to wait. Overload is shed work
/// measured in tens of milliseconds (a password check), so the shortest wait
/// `Retry-After` can say is the right one.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u32 = 1;

impl IntoResponse for ErrorBody {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        if self.code.status() == 401 && self.code != ErrorCode::InvalidCredentials {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        // Every `overloaded` answer says when to come back, whoever sends it.
        if self.code == ErrorCode::Overloaded {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(OVERLOADED_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl From<JsonRejection> for ErrorBody {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => ErrorBody::new(
                ErrorCode::MalformedJson,
                format!("request body is not valid JSON: {}", source_text(&e)),
            ),
            // Only reachable through `axum::Json<T>` for a `T` other than a Value.
            JsonRejection::JsonDataError(e) => ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "request body does not match the schema: {}",
                    source_text(&e)
                ),
            ),
            JsonRejection::MissingJsonContentType(_) => ErrorBody::new(
                ErrorCode::UnsupportedMediaType,
                "expected a request body with content-type application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorBody::new(
                ErrorCode::PayloadTooLarge,
                "request body is larger than this endpoint accepts",
            ),
            other => ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("request body could not be read: {}", other.body_text()),
            ),
        }
    }
}

/// serde's message without axum's "Failed to deserialize the JSON body" preamble.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

impl From<PathRejection> for ErrorBody {
    fn from(rejection: PathRejection) -> Self {
        ErrorBody::new(
            ErrorCode::InvalidPath,
            format!("invalid path: {}", source_text(&rejection)),
        )
    }
}

impl From<QueryRejection> for ErrorBody {
    fn from(rejection: QueryRejection) -> Self {
        ErrorBody::new(
            ErrorCode::InvalidQuery,
            format!("invalid query: {}", source_text(&rejection)),
        )
    }
}
