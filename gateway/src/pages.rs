//! The pages fans use, served from the binary: plain HTML, CSS and JavaScript, no
//! build step, nothing from elsewhere (`gateway/static/`).
//!
//! - `/`: upcoming events, and signing in;
//! - `/e/{event_id}`: one event's waiting room (the page reads the id from its path);
//! - `/verify`: confirming an email address (the token comes in the fragment of
//!   the emailed link, `/verify#token=…`, which no request carries);
//! - `/orders`: the fan's orders and their tickets (QR codes, reissuing), invoices,
//!   refunds and credit notes;
//! - `/checkin/{event_id}`: the door, for staff's phones: scanning tickets, online
//!   or offline;
//! - `/ops` and `/ops/events/{event_id}`: the operators' events and one sale's
//!   dashboard with its levers (the API decides who may read and pull them);
//! - `/static/{*path}`: the stylesheet and the scripts (ES modules under `js/`, and
//!   the vendored QR decoder under `vendor/`), cached briefly and revalidated.

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CONTENT_SECURITY_POLICY_HEADER, CONTENT_TYPE,
    X_FRAME_OPTIONS,
};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use proto::{ErrorBody, ErrorCode};

const INDEX: &str = include_str!("../static/index.html");
const EVENT: &str = include_str!("../static/event.html");
const OPS: &str = include_str!("../static/ops.html");
const ORDERS: &str = include_str!("../static/orders.html");
const CHECKIN: &str = include_str!("../static/checkin.html");
const VERIFY: &str = include_str!("../static/verify.html");

/// The content type of each kind of file under `/static/`.
macro_rules! content_type {
    (css) => {
        "text/css; charset=utf-8"
    };
    (js) => {
        "text/javascript; charset=utf-8"
    };
}

/// `kind "path"` pairs: each file under `gateway/static/`, served at `/static/{path}`.
macro_rules! assets {
    ($($kind:ident $path:literal),* $(,)?) => {
        &[$(($path, content_type!($kind), include_str!(concat!("../static/", $path)))),*]
    };
}

/// Every file under `/static/`: its path there, its content type, its body. The
/// scripts are ES modules that import each other by these paths.
const ASSETS: &[(&str, &str, &str)] = assets![
    css "style.css",
    // shared by every page
    js "js/api.js",
    js "js/clock.js",
    js "js/confirm.js",
    js "js/documents.js",
    js "js/dom.js",
    js "js/format.js",
    js "js/live.js",
    js "js/seat-feed.js",
    js "js/signin.js",
    js "js/tickets.js",
    js "js/util.js",
    js "js/verification.js",
    // `/`
    js "js/index.js",
    // `/e/{event_id}`
    js "js/event/checkout.js",
    js "js/event/join.js",
    js "js/event/live.js",
    js "js/event/main.js",
    js "js/event/render.js",
    js "js/event/request.js",
    js "js/event/seatmap.js",
    js "js/event/state.js",
    js "js/event/tickets.js",
    // `/verify`
    js "js/verify.js",
    // `/orders`
    js "js/orders.js",
    js "js/refund-amount.js",
    js "js/refunds.js",
    // `/checkin/{event_id}`
    js "js/checkin/camera.js",
    js "js/checkin/main.js",
    js "js/checkin/offline.js",
    js "js/checkin/sync.js",
    js "js/checkin/ui.js",
    // jsQR 1.4.0 (Apache-2.0), a classic script: the door's QR decoder where the
    // browser has no BarcodeDetector
    js "vendor/jsQR.js",
    // `/ops` and `/ops/events/{event_id}`
    js "js/ops/audit.js",
    js "js/ops/cancel.js",
    js "js/ops/charts.js",
    js "js/ops/dashboard.js",
    js "js/ops/door.js",
    js "js/ops/figures.js",
    js "js/ops/format.js",
    js "js/ops/levers.js",
    js "js/ops/list.js",
    js "js/ops/live.js",
    js "js/ops/main.js",
    js "js/ops/poller.js",
    js "js/ops/sections.js",
    js "js/ops/session.js",
    js "js/ops/state.js",
];

/// What a page may load and who may frame it. The pages have no inline script or
/// style and load nothing from elsewhere, so everything is `'self'`; images may also
/// be `blob:` (a ticket's QR code, fetched with the fan's token) and `data:` (the
/// empty icon). Nobody may frame a page (clickjacking a lever), and a page is never
/// sniffed as another type.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/e/{event_id}", get(|| async { Html(EVENT) }))
        .route("/orders", get(|| async { Html(ORDERS) }))
        .route("/verify", get(|| async { Html(VERIFY) }))
        .route("/checkin/{event_id}", get(|| async { Html(CHECKIN) }))
        .route("/ops", get(|| async { Html(OPS) }))
        .route("/ops/events/{event_id}", get(|| async { Html(OPS) }))
        .route("/static/{*path}", get(asset))
        .layer(axum::middleware::map_response(page_headers))
}

async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY_HEADER,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => (
            [
                (CONTENT_TYPE, *content_type),
                (CACHE_CONTROL, "public, max-age=60"),
            ],
            *body,
        )
            .into_response(),
        None => {
            ErrorBody::new(ErrorCode::NotFound, format!("no static file {path:?}")).into_response()
        }
    }
}
