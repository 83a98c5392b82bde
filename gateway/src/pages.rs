//! The pages fans use, served from the binary: plain HTML, CSS and JavaScript, no
//! build step, nothing from elsewhere (`gateway/static/`).
//!
//! - `/`: upcoming events, and signing in;
//! - `/e/{event_id}`: one event's waiting room (the page reads the id from its path);
//! - `/ops` and `/ops/events/{event_id}`: the operators' events and one sale's
//!   dashboard with its levers (the API decides who may read and pull them);
//! - `/static/{file}`: the stylesheet and scripts, cached briefly and revalidated.

use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use proto::{ErrorBody, ErrorCode};

const INDEX: &str = include_str!("../static/index.html");
const EVENT: &str = include_str!("../static/event.html");
const OPS: &str = include_str!("../static/ops.html");

/// Every file under `/static/`, with its content type.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/common.js"),
    ),
    (
        "event.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/event.js"),
    ),
    (
        "index.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/index.js"),
    ),
    (
        "ops.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/ops.js"),
    ),
];

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/e/{event_id}", get(|| async { Html(EVENT) }))
        .route("/ops", get(|| async { Html(OPS) }))
        .route("/ops/events/{event_id}", get(|| async { Html(OPS) }))
        .route("/static/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (CONTENT_TYPE, *content_type),
                (CACHE_CONTROL, "public, max-age=60"),
            ],
            *body,
        )
            .into_response(),
        None => {
            ErrorBody::new(ErrorCode::NotFound, format!("no static file {file:?}")).into_response()
        }
    }
}
