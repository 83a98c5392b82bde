//! Health, metrics, the OpenAPI document and its offline Swagger UI, request ids.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn healthz_says_alive_and_readyz_says_postgres_and_redis_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/healthz", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"status": "ok", "service": "gateway"})
    );
    let response = app.get("/readyz", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"status": "ok", "service": "gateway"}),
        "the same answer as every service's /readyz"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn every_response_carries_a_request_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    let generated = app.get("/v1/events", None).await;
    let id = generated
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let given = app
        .client
        .get(app.url("/v1/events"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        given
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("abc-123")
    );
    // One that could forge fields in a text log, or is too long, is replaced.
    for forged in [
        "abc method=DELETE path=/v1/ops".to_owned(),
        "\"quoted\" level=ERROR".to_owned(),
        "x".repeat(200),
    ] {
        let answer = app
            .client
            .get(app.url("/v1/events"))
            .header("x-request-id", &forged)
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), StatusCode::OK);
        let id = answer
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id");
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "{forged:?} came back as {id:?}"
        );
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn metrics_are_served_on_the_operations_port_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    // The public port has no /metrics: orders, tickets and logins are no one's
    // business but the operators'.
    let public = app.get("/metrics", None).await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = public.json().await.expect("an error body");
    assert_eq!(body["code"], "not_found");
    // The operations port has them, with the requests counted by route and status.
    assert_eq!(app.get("/v1/events", None).await.status(), StatusCode::OK);
    let text = app.metrics().await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("onsale_http_requests_total")
                && l.contains(r#"route="/v1/events""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no request counter for /v1/events in:\n{text}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(count >= 1.0, "{line}");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_openapi_document_describes_the_v1_contract(pool: PgPool) {
    let app = spawn_app(pool).await;
    let doc: Value = app.get_json("/openapi.json", None).await;
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/venues",
        "/v1/events",
        "/v1/events/{event_id}",
        "/v1/events/{event_id}/seats",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc,
        gateway::openapi(),
        "served and offline documents differ"
    );

    let page = app.get("/docs/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the Swagger UI page must not load anything from the network"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn pages_carry_a_strict_content_security_policy_and_every_answer_is_unsniffable(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let event = uuid::Uuid::now_v7();
    for page in [
        "/".to_owned(),
        format!("/e/{event}"),
        "/orders".to_owned(),
        "/verify".to_owned(),
        format!("/checkin/{event}"),
        "/ops".to_owned(),
        format!("/ops/events/{event}"),
        "/static/style.css".to_owned(),
    ] {
        let answer = app.get(&page, None).await;
        assert_eq!(answer.status(), StatusCode::OK, "{page}");
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{page}: {csp:?} lacks {directive}");
        }
        assert_eq!(header("x-frame-options"), "DENY", "{page}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{page}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{page}");
    }
    // The API's answers, errors included, are never sniffed either.
    for path in ["/v1/events", "/v1/no-such-thing"] {
        let answer = app.get(path, None).await;
        assert_eq!(
            answer
                .headers()
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{path}"
        );
    }
}
