//! The operators' reads and levers: stats from counters, the audit log, who may pull
//! what, and bad input that changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::{ADMIN_EMAIL, TestApp, assert_error, minted_fan_token, spawn_app};
use crate::support::live::{next_of, snapshot};

impl TestApp {
    async fn stats(&self, admin: &str, event: &str) -> Value {
        let response = self
            .get(&format!("/v1/ops/events/{event}/stats"), Some(admin))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    async fn audit(&self, token: &str, event: &str) -> Vec<Value> {
        let response = self
            .get(&format!("/v1/ops/events/{event}/audit"), Some(token))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    async fn put_rate(&self, token: Option<&str>, event: &str, body: &Value) -> reqwest::Response {
        let mut request = self
            .client
            .put(self.url(&format!("/v1/ops/events/{event}/admission")))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("sent")
    }

    async fn sample(&self, event: &str) {
        let mut redis = self.redis.clone();
        waiting_room::stats::sample(&mut redis, &self.keys, event.parse().unwrap())
            .await
            .expect("sampled");
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn stats_follow_the_line_from_counters(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    app.set_rate(&admin, &event, 1000).await;
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        let token = minted_fan_token();
        let request = app.join(&event, &token, json!({"quantity": 1})).await;
        last = (token, request);
    }
    app.sample(&event).await;
    let before = app.stats(&admin, &event).await;
    assert_eq!(before["state"], "open");
    assert_eq!(before["queue_length"], 5);
    assert_eq!(before["served"], 0);
    assert_eq!(before["admission_per_second"], 1000);
    assert_eq!(before["eta_seconds"], 1);
    assert_eq!(before["holds_active"], 0);
    assert_eq!(
        (before["available"].clone(), before["sold"].clone()),
        (json!(30), json!(0))
    );

    // The farm serves the line; the last fan watches for their hold.
    let (token, request) = last;
    let mut socket = app.live(&event, &token, Some(&request)).await;
    snapshot(&mut socket, true).await;
    let (stop, worker) = app.start_worker();
    loop {
        let message = next_of(&mut socket, "request").await;
        if message["state"] != "queued" {
            assert_eq!(message["state"], "held");
            break;
        }
    }
    stop.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");
    let order = crate::support::sale::pay(&app, &token, &request, "4242424242424242", None).await;
    assert_eq!(order["state"], "paid", "{order}");
    app.sample(&event).await;
    let after = app.stats(&admin, &event).await;
    // The farm's side: the worker that read the line, nothing left in flight.
    let workers = after["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{after}");
    assert_eq!(workers[0]["pending"], 0);
    assert_eq!(
        (after["line_lag"].clone(), after["line_pending"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(after["dead_letters"], 0);
    // The money: one paid order, its amount the revenue.
    assert_eq!(after["orders"]["paid"], 1);
    assert_eq!(after["revenue_cents"], order["amount_cents"]);
    assert_eq!(after["currency"], "EUR");
    assert!(
        after["outbox_unpublished"].as_i64().unwrap() >= 1,
        "the sale waits in the outbox: no relay runs here"
    );
    assert!(after["outbox_lag_seconds"].as_f64().is_some());
    assert_eq!(after["queue_length"], 0);
    assert_eq!(after["served"], 5);
    assert_eq!(after["holds_active"], 4, "one of the five holds was paid");
    assert_eq!(
        (after["held"].clone(), after["sold"].clone()),
        (json!(4), json!(1))
    );
    assert_eq!(after["available"], 25);
    assert!(
        after["admitted_per_second"].as_f64().unwrap() > 0.0,
        "{after}"
    );
    assert_eq!(
        after["arrivals_per_second"].as_f64(),
        Some(0.0),
        "nobody joined between the samples"
    );
    assert!(after["sampled_at"].is_string());

    // The same samples are the charts' history, oldest first.
    let history: Vec<Value> = app
        .get(
            &format!("/v1/ops/events/{event}/stats/history?seconds=60"),
            Some(&admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let served: Vec<u64> = history
        .iter()
        .map(|s| s["served"].as_u64().unwrap())
        .collect();
    assert_eq!(served, [0, 5], "{history:?}");
    assert_eq!(
        (history[1]["held"].clone(), history[1]["sold"].clone()),
        (json!(4), json!(1))
    );
    let response = app
        .get(
            &format!("/v1/ops/events/{event}/stats/history?seconds=0"),
            Some(&admin),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_audit_log_names_who_pulled_what_from_what_to_what(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    for lever in ["pause", "resume"] {
        let response = app
            .post(
                &format!("/v1/ops/events/{event}/{lever}"),
                Some(&admin),
                &json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let rate = app
        .put_rate(Some(&admin), &event, &json!({"per_second": 50}))
        .await;
    assert_eq!(rate.status(), StatusCode::OK);

    let log = app.audit(&admin, &event).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        &actions[..3],
        ["admission", "resume", "pause"],
        "newest first: {log:?}"
    );
    assert_eq!(
        (log[0]["to"].clone(), log[0]["from"].is_number()),
        (json!(50), true)
    );
    assert_eq!(
        (log[1]["from"].clone(), log[1]["to"].clone()),
        (json!("paused"), json!("open"))
    );
    assert_eq!(
        (log[2]["from"].clone(), log[2]["to"].clone()),
        (json!("open"), json!("paused"))
    );
    for entry in &log[..3] {
        assert_eq!(entry["actor_email"], ADMIN_EMAIL);
        assert!(entry["at"].is_string());
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn fans_get_403_and_strangers_401_on_every_lever_and_read(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    let fan = minted_fan_token();
    for token in [Some(fan.as_str()), None] {
        let (status, code) = match token {
            Some(_) => (StatusCode::FORBIDDEN, "forbidden"),
            None => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        };
        for lever in ["open", "pause", "resume", "close"] {
            let response = app
                .post(
                    &format!("/v1/ops/events/{event}/{lever}"),
                    token,
                    &json!({}),
                )
                .await;
            assert_error(response, status, code).await;
        }
        let response = app.put_rate(token, &event, &json!({"per_second": 5})).await;
        assert_error(response, status, code).await;
        for read in ["stats", "audit"] {
            let response = app
                .get(&format!("/v1/ops/events/{event}/{read}"), token)
                .await;
            assert_error(response, status, code).await;
        }
    }
    // Nothing the refused calls asked for happened.
    let stats = app.stats(&admin, &event).await;
    assert_eq!(stats["state"], "open");
    assert_eq!(app.audit(&admin, &event).await.len(), 1, "only the opening");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_lever_input_gets_a_code_and_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    let before = app.stats(&admin, &event).await;
    let audit_before = app.audit(&admin, &event).await.len();

    for body in [
        json!({"per_second": -1}),
        json!({"per_second": 0}),
        json!({"per_second": 1_000_000_000}),
        json!({"per_second": "fast"}),
        json!({"per_second": 1.5}),
        json!({}),
        json!({"per_second": 5, "burst": 9}),
    ] {
        let response = app.put_rate(Some(&admin), &event, &body).await;
        assert!(
            response.status() == StatusCode::UNPROCESSABLE_ENTITY
                || response.status() == StatusCode::BAD_REQUEST,
            "{body} answered {}",
            response.status()
        );
        let error: Value = response.json().await.unwrap();
        assert!(
            ["invalid_request", "malformed_json"].contains(&error["code"].as_str().unwrap()),
            "{body}: {error}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    let response = app
        .put_rate(
            Some(&admin),
            &unknown.to_string(),
            &json!({"per_second": 5}),
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "event_not_found").await;
    let response = app
        .post(
            &format!("/v1/ops/events/{unknown}/pause"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "event_not_found").await;
    let response = app
        .post(
            &format!("/v1/ops/events/{event}/resume"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_error(response, StatusCode::CONFLICT, "invalid_transition").await;
    let response = app
        .post(
            &format!("/v1/ops/events/{event}/launch"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let after = app.stats(&admin, &event).await;
    assert_eq!(after["state"], before["state"]);
    assert_eq!(
        after["admission_per_second"],
        before["admission_per_second"]
    );
    assert_eq!(app.audit(&admin, &event).await.len(), audit_before);

    // A closed sale cannot be closed again, and nothing more is written.
    let closed = app
        .post(
            &format!("/v1/ops/events/{event}/close"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let again = app
        .post(
            &format!("/v1/ops/events/{event}/close"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_error(again, StatusCode::CONFLICT, "invalid_transition").await;
    assert_eq!(app.audit(&admin, &event).await.len(), audit_before + 1);
}

/// Makes every change to `waiting_room.sales` fail until [`heal_sales`], as a
/// Postgres failure between a lever's Redis step and its ledger step would.
async fn break_sales(app: &TestApp) {
    sqlx::query(
        "CREATE OR REPLACE FUNCTION waiting_room.refuse_change() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'the ledger is away'; END $$",
    )
    .execute(&app.pool)
    .await
    .expect("function");
    sqlx::query(
        "CREATE TRIGGER refuse_change BEFORE UPDATE ON waiting_room.sales
         FOR EACH ROW EXECUTE FUNCTION waiting_room.refuse_change()",
    )
    .execute(&app.pool)
    .await
    .expect("trigger");
}

async fn heal_sales(app: &TestApp) {
    sqlx::query("DROP TRIGGER refuse_change ON waiting_room.sales")
        .execute(&app.pool)
        .await
        .expect("drop trigger");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_lever_that_fails_half_way_is_finished_by_its_retry_and_audited_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    let ledger_state = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM waiting_room.sales WHERE event_id = $1::uuid",
        )
        .bind(&event)
        .fetch_one(&app.pool)
        .await
        .expect("sale row")
    };
    let pause_path = format!("/v1/ops/events/{event}/pause");
    let no_body = json!({});
    let pause = || app.post(&pause_path, Some(&admin), &no_body);

    // Redis pauses the sale; the ledger's write fails: the operator gets an error.
    break_sales(&app).await;
    let failed = pause().await;
    assert_eq!(
        failed.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        failed.text().await
    );
    assert_eq!(ledger_state().await, "open");
    heal_sales(&app).await;

    // The retry is answered by the pull it retries: paused, in Redis and the ledger,
    // with one audit entry.
    let retried = pause().await;
    assert_eq!(retried.status(), StatusCode::OK);
    let sale: Value = retried.json().await.expect("json");
    assert_eq!(sale["state"], "paused");
    assert_eq!(ledger_state().await, "paused");
    let log = app.audit(&admin, &event).await;
    let pauses = log.iter().filter(|e| e["action"] == "pause").count();
    assert_eq!(pauses, 1, "{log:?}");

    // The same for the admission rate.
    break_sales(&app).await;
    let failed = app
        .put_rate(Some(&admin), &event, &json!({"per_second": 42}))
        .await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    heal_sales(&app).await;
    let retried = app
        .put_rate(Some(&admin), &event, &json!({"per_second": 42}))
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    let log = app.audit(&admin, &event).await;
    assert_eq!(
        log.iter().filter(|e| e["action"] == "admission").count(),
        1,
        "{log:?}"
    );
    assert_eq!(app.stats(&admin, &event).await["admission_per_second"], 42);

    // A pull nobody retries is finished by the scheduler's pass.
    break_sales(&app).await;
    let resume = app
        .post(
            &format!("/v1/ops/events/{event}/resume"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(resume.status(), StatusCode::SERVICE_UNAVAILABLE);
    heal_sales(&app).await;
    let mut redis = app.redis.clone();
    waiting_room::levers::finish_stale(&app.pool, &mut redis, &app.keys, 0)
        .await
        .expect("finish");
    assert_eq!(ledger_state().await, "open");
    let log = app.audit(&admin, &event).await;
    assert_eq!(
        log.iter().filter(|e| e["action"] == "resume").count(),
        1,
        "{log:?}"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn seat_map_rebuilds_and_requests_ended_by_an_operator_are_audited(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    let fan = minted_fan_token();
    let request = app.join(&event, &fan, json!({"quantity": 1})).await;

    // The fan leaving on their own is not an operator's act; the operator ending
    // another fan's request is.
    let released = app
        .client
        .delete(app.url(&format!("/v1/requests/{request}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(released.status(), StatusCode::OK);
    let rebuilt = app
        .post(
            &format!("/v1/ops/events/{event}/rebuild"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(rebuilt.status(), StatusCode::OK);

    let log = app.audit(&admin, &event).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        &actions[..2],
        ["rebuild", "release"],
        "newest first: {log:?}"
    );
    assert_eq!(log[1]["detail"]["request_id"], request.as_str());
    assert_eq!(log[1]["detail"]["state"], "cancelled");
    assert!(log[0]["detail"]["available"].is_number(), "{log:?}");
    for entry in &log[..2] {
        assert_eq!(entry["actor_email"], ADMIN_EMAIL);
    }
}
