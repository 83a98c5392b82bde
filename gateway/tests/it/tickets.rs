//! Tickets and the door through the gateway: a paid order's signed tickets, their
//! QR and keys, door staff, scans that admit once (racing scanners, retries, a
//! Redis that lost its word), reissues that revoke, offline scans folded in with
//! their conflicts, and bad input that changes nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;
use crate::support::sale::*;

/// A fan who paid for `quantity` seats: `(fan token, order as the API shows it)`.
async fn paid_order(app: &TestApp, event: &str, quantity: u32) -> (String, Value) {
    let (token, request, _) = held(app, event, &json!({"quantity": quantity})).await;
    let order = pay(
        app,
        &token,
        &request,
        PAID,
        Some(&uuid::Uuid::new_v4().to_string()),
    )
    .await;
    assert_eq!(order["state"], "paid", "{order}");
    let order_id = order["order_id"].as_str().expect("order id");
    let order: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    (token, order)
}

/// A registered account made door staff of `event` by `admin`: its token.
async fn staff(app: &TestApp, admin: &str, event: &str) -> String {
    let email = format!("door-{}@example.com", uuid::Uuid::new_v4().simple());
    let token = app.fan_token(&email).await;
    let me: Value = app.get_json("/v1/auth/me", Some(&token)).await;
    let user = me["user_id"].as_str().expect("user id");
    let granted = app
        .client
        .put(app.url(&format!("/v1/events/{event}/staff/{user}")))
        .bearer_auth(admin)
        .send()
        .await
        .expect("grant");
    assert_eq!(granted.status(), StatusCode::OK);
    token
}

fn scan(code: &str, device: &str) -> Value {
    json!({
        "scan_id": uuid::Uuid::new_v4(),
        "code": code,
        "direction": "entry",
        "scanned_at": chrono::Utc::now(),
        "device_id": device,
        "offline": false,
    })
}

async fn scans(app: &TestApp, token: &str, event: &str, scans: Vec<Value>) -> Vec<Value> {
    let response = app
        .post(
            &format!("/v1/events/{event}/scans"),
            Some(token),
            &json!({ "scans": scans }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["results"].as_array().expect("results").clone()
}

async fn one_scan(app: &TestApp, token: &str, event: &str, scan: Value) -> Value {
    scans(app, token, event, vec![scan]).await.remove(0)
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_paid_order_carries_signed_tickets_that_verify_with_the_events_key(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event, _worker) = open_sale(&app, 120).await;
    let (token, order) = paid_order(&app, &event, 2).await;
    let tickets = order["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 2, "{order}");
    let seats: Vec<&str> = order["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();

    // The keys, public: raw 32-byte Ed25519 keys with their kid.
    let keys: Value = app
        .get_json(&format!("/v1/events/{event}/checkin/keys"), None)
        .await;
    let key = &keys["keys"][0];
    assert_eq!(key["alg"], "EdDSA");
    let public: [u8; 32] = B64
        .decode(key["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .expect("32 bytes");
    let public = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("a key");

    for ticket in tickets {
        assert_eq!(ticket["state"], "valid");
        assert_eq!(ticket["version"], 1);
        assert!(seats.contains(&ticket["seat_id"].as_str().unwrap()));
        // The code is a compact JWS anyone can verify with the published key.
        let code = ticket["code"].as_str().unwrap();
        let parts: Vec<&str> = code.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], key["kid"]);
        let signature: [u8; 64] = B64.decode(parts[2]).unwrap().try_into().unwrap();
        public
            .verify_strict(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&signature),
            )
            .expect("the signature verifies with the published key");
        let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["tid"], ticket["ticket_id"]);
        assert_eq!(claims["ev"], event.as_str());
        assert_eq!(claims["seat"], ticket["seat_id"]);
        assert!(claims["nbf"].as_i64() < claims["exp"].as_i64());

        // Its QR, as SVG, for its fan only.
        let id = ticket["ticket_id"].as_str().unwrap();
        let qr = app
            .get(&format!("/v1/tickets/{id}/qr.svg"), Some(&token))
            .await;
        assert_eq!(qr.status(), StatusCode::OK);
        assert_eq!(qr.headers()["content-type"], "image/svg+xml");
        assert!(qr.text().await.unwrap().contains("<svg"));
        let stranger = minted_fan_token();
        assert_error(
            app.get(&format!("/v1/tickets/{id}/qr.svg"), Some(&stranger))
                .await,
            StatusCode::NOT_FOUND,
            "ticket_not_found",
        )
        .await;
    }
    // The fan's order list carries them too, with the same codes.
    let orders: Value = app.get_json("/v1/orders", Some(&token)).await;
    assert_eq!(orders["orders"][0]["tickets"], order["tickets"]);
    // The ledger has one ticket per seat.
    assert_eq!(app.count("tickets.tickets").await, 2);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_ticket_admits_once_and_the_second_scan_says_when_and_where(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (_, order) = paid_order(&app, &event, 1).await;
    let code = order["tickets"][0]["code"].as_str().unwrap().to_owned();
    let door = staff(&app, &admin, &event).await;

    // A fan is not door staff.
    let fan = app.fan_token("not-staff@example.com").await;
    assert_error(
        app.post(
            &format!("/v1/events/{event}/scans"),
            Some(&fan),
            &json!({"scans": [scan(&code, "Gate A")]}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let first = scan(&code, "Gate A");
    let admitted = one_scan(&app, &door, &event, first.clone()).await;
    assert_eq!(admitted["result"], "admitted", "{admitted}");
    assert_eq!(admitted["seat_id"], order["tickets"][0]["seat_id"]);
    // The same scan again (a retry) is the same scan: the same answer.
    assert_eq!(one_scan(&app, &door, &event, first).await, admitted);
    // Another scan of the same code is refused, naming the first entry.
    let again = one_scan(&app, &door, &event, scan(&code, "Gate B")).await;
    assert_eq!(again["result"], "already_in", "{again}");
    assert_eq!(again["first_device_id"], "Gate A");
    assert_eq!(again["first_admitted_at"], admitted["first_admitted_at"]);
    // Out, and in again: a re-entry is the next entry.
    let mut out = scan(&code, "Gate A");
    out["direction"] = json!("exit");
    assert_eq!(one_scan(&app, &door, &event, out).await["result"], "exited");
    assert_eq!(
        one_scan(&app, &door, &event, scan(&code, "Gate C")).await["result"],
        "admitted"
    );
    assert_eq!(app.count("tickets.entries").await, 2);
    // The door's hashes outlive the sale's keys (retired when the sale ended), and
    // go a week after the last scan.
    let mut redis = app.redis.clone();
    let event_id: proto::EventId = event.parse().unwrap();
    for key in [app.keys.door(event_id), app.keys.door_scans(event_id)] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let week = proto::scripts::DOOR_RETENTION_SECONDS as i64;
        assert!((week - 60..=week).contains(&ttl), "{key}: ttl {ttl}");
    }

    // The order shows the ticket checked in; the stats count it.
    let order_id = order["order_id"].as_str().unwrap();
    let order: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&admin))
        .await;
    assert_eq!(order["tickets"][0]["state"], "checked_in");
    let stats: Value = app
        .get_json(&format!("/v1/ops/events/{event}/stats"), Some(&admin))
        .await;
    assert_eq!(stats["checked_in"], 1);
    let door_stats: Value = app
        .get_json(&format!("/v1/ops/events/{event}/checkin"), Some(&admin))
        .await;
    assert_eq!(door_stats["checked_in"], 1);
    assert_eq!(door_stats["sold"], 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn scanners_racing_on_one_ticket_admit_it_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (_, order) = paid_order(&app, &event, 1).await;
    let code = order["tickets"][0]["code"].as_str().unwrap().to_owned();
    let door = staff(&app, &admin, &event).await;
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let call = app
                .client
                .post(app.url(&format!("/v1/events/{event}/scans")))
                .bearer_auth(&door)
                .json(&json!({"scans": [scan(&code, &format!("Gate {i}"))]}));
            tokio::spawn(async move {
                let body: Value = call.send().await.expect("scan").json().await.expect("json");
                body["results"][0]["result"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.expect("task"));
    }
    let admitted = results.iter().filter(|r| *r == "admitted").count();
    assert_eq!(admitted, 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|r| *r == "already_in").count(),
        results.len() - 1
    );
    assert_eq!(app.count("tickets.entries").await, 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_ledger_refuses_a_second_entry_when_redis_has_lost_the_door(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (_, order) = paid_order(&app, &event, 1).await;
    let code = order["tickets"][0]["code"].as_str().unwrap().to_owned();
    let door = staff(&app, &admin, &event).await;
    assert_eq!(
        one_scan(&app, &door, &event, scan(&code, "Gate A")).await["result"],
        "admitted"
    );
    // Redis forgets the door (a restart without persistence).
    let mut redis = app.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(app.keys.door(event.parse().unwrap()))
        .query_async(&mut redis)
        .await
        .unwrap();
    let again = one_scan(&app, &door, &event, scan(&code, "Gate B")).await;
    assert_eq!(again["result"], "already_in", "{again}");
    assert_eq!(again["first_device_id"], "Gate A");
    assert_eq!(app.count("tickets.entries").await, 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_exit_that_overtakes_its_entrys_ledger_write_is_sent_again_not_lost(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (_, order) = paid_order(&app, &event, 1).await;
    let code = order["tickets"][0]["code"].as_str().unwrap().to_owned();
    let ticket: proto::TicketId = order["tickets"][0]["ticket_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let door = staff(&app, &admin, &event).await;
    let event_id: proto::EventId = event.parse().unwrap();
    // Gate A's entry is decided in Redis; its ledger write is still on its way.
    let entry = scan(&code, "Gate A");
    let entry_id: uuid::Uuid = entry["scan_id"].as_str().unwrap().parse().unwrap();
    let mut redis = app.redis.clone();
    let (outcome, ..): (String, i32, String, i64, String) = proto::scripts::redeem(
        &app.keys,
        event_id,
        ticket,
        proto::wire::tickets::Direction::Entry,
        entry_id,
        chrono::Utc::now().timestamp_millis(),
        "Gate A",
        "none",
    )
    .invoke_async(&mut redis)
    .await
    .unwrap();
    assert_eq!(outcome, "admitted");

    // Gate B scans the same fan out before that write lands: not answered yet.
    let mut exit = scan(&code, "Gate B");
    exit["direction"] = json!("exit");
    let response = app
        .post(
            &format!("/v1/events/{event}/scans"),
            Some(&door),
            &json!({ "scans": [exit.clone()] }),
        )
        .await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert_eq!(
        app.count("tickets.scans").await,
        0,
        "nothing stored for the exit"
    );

    // Gate A's write lands (its retry), then Gate B's retry: both recorded, in order.
    assert_eq!(
        one_scan(&app, &door, &event, entry).await["result"],
        "admitted"
    );
    assert_eq!(
        one_scan(&app, &door, &event, exit).await["result"],
        "exited"
    );
    let (open,): (bool,) = sqlx::query_as(
        "SELECT exited_at IS NULL FROM tickets.entries WHERE ticket_id = $1 AND entry_no = 1",
    )
    .bind(ticket)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!open, "the ledger has the fan out, as Redis does");
    let record: String = redis::cmd("HGET")
        .arg(app.keys.door(event_id))
        .arg(ticket.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(record.starts_with("out|1|"), "{record}");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_reissue_revokes_the_old_code_online_and_in_the_list(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (token, order) = paid_order(&app, &event, 1).await;
    let ticket = &order["tickets"][0];
    let (id, old) = (
        ticket["ticket_id"].as_str().unwrap(),
        ticket["code"].as_str().unwrap(),
    );
    let door = staff(&app, &admin, &event).await;
    let empty: Value = app
        .get_json(
            &format!("/v1/events/{event}/checkin/revoked?since=0"),
            Some(&door),
        )
        .await;
    assert_eq!(empty, json!({"version": 0, "revoked": []}));

    let reissued = app
        .post(
            &format!("/v1/tickets/{id}/reissue"),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(reissued.status(), StatusCode::OK);
    let reissued: Value = reissued.json().await.unwrap();
    assert_eq!(reissued["version"], 2);
    assert_ne!(reissued["code"], old);

    let refused = one_scan(&app, &door, &event, scan(old, "Gate A")).await;
    assert_eq!(refused["result"], "void", "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("reissued"));
    let list: Value = app
        .get_json(
            &format!("/v1/events/{event}/checkin/revoked?since=0"),
            Some(&door),
        )
        .await;
    assert_eq!(
        list,
        json!({"version": 1, "revoked": [{"ticket_id": id, "version": 1}]})
    );
    let newer: Value = app
        .get_json(
            &format!("/v1/events/{event}/checkin/revoked?since=1"),
            Some(&door),
        )
        .await;
    assert_eq!(newer, json!({"version": 1, "revoked": []}));

    let new = reissued["code"].as_str().unwrap();
    assert_eq!(
        one_scan(&app, &door, &event, scan(new, "Gate A")).await["result"],
        "admitted"
    );
    // In: no more reissues.
    assert_error(
        app.post(
            &format!("/v1/tickets/{id}/reissue"),
            Some(&token),
            &json!({}),
        )
        .await,
        StatusCode::CONFLICT,
        "ticket_checked_in",
    )
    .await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn forged_foreign_and_damaged_codes_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (_, order) = paid_order(&app, &event, 1).await;
    let code = order["tickets"][0]["code"].as_str().unwrap().to_owned();
    let door = staff(&app, &admin, &event).await;

    // Another event's ticket.
    let (_, other_event) = app.opened_event().await;
    let other_door = staff(&app, &admin, &other_event).await;
    let wrong = one_scan(&app, &other_door, &other_event, scan(&code, "Gate A")).await;
    assert_eq!(wrong["result"], "wrong_event", "{wrong}");

    // A seat changed in the payload: the signature no longer verifies.
    let parts: Vec<&str> = code.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["seat"] = json!("Floor-A-9");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    for bad in [forged.as_str(), "not a code", "a.b.c"] {
        let refused = one_scan(&app, &door, &event, scan(bad, "Gate A")).await;
        assert_eq!(refused["result"], "invalid", "{bad}: {refused}");
    }
    // A code signed by a key onsale never made.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let header = B64.encode(br#"{"alg":"EdDSA","kid":"ed25519-stranger"}"#);
    let input = format!("{header}.{}", parts[1]);
    let signature = ed25519_dalek::Signer::sign(&stranger, input.as_bytes());
    let minted = format!("{input}.{}", B64.encode(signature.to_bytes()));
    assert_eq!(
        one_scan(&app, &door, &event, scan(&minted, "Gate A")).await["result"],
        "invalid"
    );

    // Bad batches: refused whole.
    for (body, why) in [
        (json!({"scans": []}), "no scans"),
        (
            // Short scans, so that the body stays under the size limit.
            json!({"scans": (0..101).map(|_| json!({"scan_id": uuid::Uuid::new_v4(), "code": "x",
                "direction": "entry", "scanned_at": "2026-12-07T00:00:00Z", "device_id": "A"}))
                .collect::<Vec<_>>()}),
            "too many",
        ),
        (json!({"scans": [scan(&code, "")]}), "no device"),
        (
            json!({"scans": [scan(&code, &"x".repeat(65))]}),
            "long device",
        ),
    ] {
        let response = app
            .post(&format!("/v1/events/{event}/scans"), Some(&door), &body)
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
    }
    let mut unknown = scan(&code, "Gate A");
    unknown["gate"] = json!("B");
    assert_error(
        app.post(
            &format!("/v1/events/{event}/scans"),
            Some(&door),
            &json!({"scans": [unknown]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    // Nothing came in.
    assert_eq!(app.count("tickets.entries").await, 0);
    // Staff of an event that does not exist; a user that does not exist.
    let nobody = uuid::Uuid::new_v4();
    assert_error(
        app.client
            .put(app.url(&format!("/v1/events/{event}/staff/{nobody}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "user_not_found",
    )
    .await;
    assert_error(
        app.client
            .put(app.url(&format!("/v1/events/{nobody}/staff/{nobody}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "event_not_found",
    )
    .await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn offline_scans_are_folded_in_and_a_double_entry_is_reported(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event, _worker) = open_sale(&app, 120).await;
    let (_, order) = paid_order(&app, &event, 2).await;
    let first = order["tickets"][0]["code"].as_str().unwrap().to_owned();
    let second = order["tickets"][1]["code"].as_str().unwrap().to_owned();
    let door = staff(&app, &admin, &event).await;

    // Gate A, online, admits the first ticket.
    assert_eq!(
        one_scan(&app, &door, &event, scan(&first, "Gate A")).await["result"],
        "admitted"
    );
    // Gate B was offline: it admitted the first ticket too (a copy of it) and the
    // second; it uploads both when back, the later scan first.
    // A device's clock, to the millisecond as a browser's.
    let now = chrono::Utc::now().timestamp_millis();
    let earlier = chrono::DateTime::from_timestamp_millis(now - 180_000).unwrap();
    let mut offline_first = scan(&first, "Gate B");
    offline_first["offline"] = json!(true);
    offline_first["scanned_at"] = json!(earlier + chrono::Duration::minutes(1));
    let mut offline_second = scan(&second, "Gate B");
    offline_second["offline"] = json!(true);
    offline_second["scanned_at"] = json!(earlier);
    let results = scans(
        &app,
        &door,
        &event,
        vec![offline_first.clone(), offline_second.clone()],
    )
    .await;
    // Folded in the order they were scanned.
    assert_eq!(results[0]["scan_id"], offline_second["scan_id"]);
    assert_eq!(results[0]["result"], "admitted");
    assert_eq!(
        results[0]["first_admitted_at"],
        offline_second["scanned_at"]
    );
    assert_eq!(results[1]["result"], "already_in");
    assert_eq!(results[1]["conflict"], true);
    assert_eq!(results[1]["first_device_id"], "Gate A");
    // Uploading again (the device lost the answer) changes nothing.
    assert_eq!(
        scans(&app, &door, &event, vec![offline_first, offline_second]).await,
        results
    );

    // Gate C asked online, got no answer in time (the server had refused the
    // entry) and let the fan in by itself; its upload of the same scan is the
    // conflict the online answer did not show.
    let timed_out = scan(&second, "Gate C");
    let online = one_scan(&app, &door, &event, timed_out.clone()).await;
    assert_eq!(online["result"], "already_in");
    assert!(online.get("conflict").is_none(), "{online}");
    let mut uploaded = timed_out;
    uploaded["offline"] = json!(true);
    let upload = one_scan(&app, &door, &event, uploaded.clone()).await;
    assert_eq!(upload["result"], "already_in");
    assert_eq!(upload["conflict"], true, "{upload}");
    assert_eq!(one_scan(&app, &door, &event, uploaded).await, upload);

    let door_stats: Value = app
        .get_json(&format!("/v1/ops/events/{event}/checkin"), Some(&admin))
        .await;
    assert_eq!(door_stats["checked_in"], 2);
    let conflicts = door_stats["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 2, "{door_stats}");
    assert_eq!(conflicts[0]["device_id"], "Gate C");
    let conflicts = &conflicts[1..];
    assert_eq!(conflicts[0]["kind"], "double_entry");
    assert_eq!(conflicts[0]["device_id"], "Gate B");
    assert_eq!(conflicts[0]["first_device_id"], "Gate A");
    assert_eq!(conflicts[0]["seat_id"], order["tickets"][0]["seat_id"]);
}
