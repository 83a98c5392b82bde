//! HTTP plumbing every service router shares, so an error looks the same whichever
//! service answers: the error body as a response, and extractors whose rejections
//! are error bodies with stable codes instead of axum's plain-text defaults.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
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
        if self.code == ErrorCode::Unauthenticated || self.code == ErrorCode::InvalidToken {
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

/// `axum::Json`, with rejections as [`ErrorBody`]s, reading a number with no
/// fraction (`2.0`) as the integer it is: JSON and JSON Schema make no difference
/// between the two, and clients that send floats must not be refused for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorBody;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ErrorBody> {
        let axum::Json(mut value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        // Every body this API takes is an object; serde would also read a struct
        // from an array (`[]` as all defaults), which no schema here allows.
        if !value.is_object() {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                "request body does not match the schema: it must be a JSON object",
            ));
        }
        integral_numbers(&mut value);
        serde_json::from_value(value).map(Json).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("request body does not match the schema: {e}"),
            )
        })
    }
}

/// Turns every float with no fraction that fits an integer into that integer.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 {
                // 2^64: the first float past u64::MAX.
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *value = Value::from(f as u64);
                } else if (i64::MIN as f64..0.0).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
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

/// `axum::extract::Path`, with rejections as [`ErrorBody`]s.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ErrorBody))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ErrorBody {
    fn from(rejection: PathRejection) -> Self {
        ErrorBody::new(
            ErrorCode::InvalidPath,
            format!("invalid path: {}", source_text(&rejection)),
        )
    }
}

/// `axum::extract::Query`, with rejections as [`ErrorBody`]s.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ErrorBody))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ErrorBody {
    fn from(rejection: QueryRejection) -> Self {
        ErrorBody::new(
            ErrorCode::InvalidQuery,
            format!("invalid query: {}", source_text(&rejection)),
        )
    }
}

/// The answer for a path no route serves.
pub async fn not_found() -> ErrorBody {
    ErrorBody::new(ErrorCode::NotFound, "no such resource")
}

/// The answer for a known path asked with a method it does not serve.
pub async fn method_not_allowed() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::MethodNotAllowed,
        "this resource does not accept that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_become_integers_and_the_rest_stays() {
        let mut value = serde_json::json!({
            "a": 2.0, "b": [1.5, -3.0, 1e300], "c": "2.0", "d": 7, "e": {"f": 0.0}
        });
        integral_numbers(&mut value);
        assert_eq!(value["a"], serde_json::json!(2));
        assert!(value["a"].is_u64());
        assert_eq!(value["b"][0], serde_json::json!(1.5));
        assert!(value["b"][1].is_i64());
        assert!(
            value["b"][2].is_f64(),
            "too large for an integer: stays a float"
        );
        assert_eq!(value["c"], "2.0");
        assert!(value["e"]["f"].is_u64());
    }
}
