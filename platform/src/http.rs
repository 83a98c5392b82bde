//! HTTP plumbing every service router shares: extractors whose rejections are
//! [`ErrorBody`]s with stable codes instead of axum's plain-text defaults, and the
//! answers for unknown paths, unknown methods and too many requests. (The error
//! body's own HTTP form is in `proto::http`, beside the type.)

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use proto::{ErrorBody, ErrorCode};

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

/// `axum::extract::Path`, with rejections as [`ErrorBody`]s.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ErrorBody))]
pub struct Path<T>(pub T);

/// `axum::extract::Query`, with rejections as [`ErrorBody`]s.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ErrorBody))]
pub struct Query<T>(pub T);

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

/// A 429 telling the client when to come back (whole seconds, at least one).
pub fn too_many(wait: Duration, whose: &'static str) -> Response {
    metrics::counter!("onsale_rate_limited_total", "limiter" => whose).increment(1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = ErrorBody::new(
        ErrorCode::RateLimited,
        format!("too many requests from this {whose}; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(seconds));
    response
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
