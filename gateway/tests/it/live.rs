//! The live socket, `GET /v1/events/{id}/live`, through the gateway against the real
//! farm: positions in order, snapshots on reconnect, seat deltas, refusals.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::support::helpers::{assert_error, minted_fan_token, spawn_app};

use crate::support::live::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn positions_arrive_in_order_and_never_go_up(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    app.set_rate(&admin, &event, 8).await;
    // A line of 24 fans for 30 seats, one seat each; the last one watches.
    let mut last = (String::new(), String::new());
    for _ in 0..24 {
        let token = minted_fan_token();
        let request = app.join(&event, &token, json!({"quantity": 1})).await;
        last = (token, request);
    }
    let (token, request) = last;
    let mut socket = app.live(&event, &token, Some(&request)).await;
    let first = snapshot(&mut socket, true).await;
    let start = first
        .iter()
        .find(|m| m["type"] == "position")
        .expect("a queued request starts with its position");
    assert_eq!(start["queue_number"], 24);
    assert_eq!(start["position"], 24);
    assert_eq!(start["seats_left"], 30);

    let (stop, worker) = app.start_worker();
    let mut positions = vec![start["position"].as_u64().unwrap()];
    let held = loop {
        let message = next(&mut socket).await;
        match message["type"].as_str() {
            Some("position") => {
                assert_eq!(message["request_id"], request.as_str());
                positions.push(message["position"].as_u64().unwrap());
                assert!(message["eta_seconds"].is_u64(), "{message}");
            }
            Some("request") if message["state"] != "queued" => break message,
            _ => {}
        }
    };
    stop.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");
    assert!(
        positions.windows(2).all(|w| w[1] <= w[0]),
        "positions went up: {positions:?}"
    );
    assert!(
        positions.len() >= 3,
        "the line moved in steps, not at once: {positions:?}"
    );
    assert_eq!(held["state"], "held", "{held}");
    assert_eq!(held["seats"].as_array().map(Vec::len), Some(1));
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_reconnect_starts_with_a_snapshot_of_what_changed_meanwhile(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let token = minted_fan_token();
    let request = app.join(&event, &token, json!({"quantity": 2})).await;

    // Without a request id the socket follows the fan's live request.
    let mut socket = app.live(&event, &token, None).await;
    let before = snapshot(&mut socket, true).await;
    assert_eq!(before[0]["state"], "open");
    assert_eq!(before[1]["request_id"], request.as_str());
    assert_eq!(before[1]["state"], "queued");
    let version_before = before.last().unwrap()["version"].as_u64().unwrap();
    socket.close(None).await.expect("closed");

    // While this tab is away, the farm holds the fan's seats; another tab of the
    // same fan sees it happen.
    let mut other_tab = app.live(&event, &token, Some(&request)).await;
    snapshot(&mut other_tab, true).await;
    let (stop, worker) = app.start_worker();
    let status = next_of(&mut other_tab, "request").await;
    assert_eq!(status["state"], "held");
    stop.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");

    let mut socket = app.live(&event, &token, Some(&request)).await;
    let after = snapshot(&mut socket, true).await;
    assert_eq!(after[1]["state"], "held", "{after:?}");
    assert_eq!(after[1]["seats"], status["seats"]);
    assert!(after[1]["hold_expires_at"].is_string());
    assert!(
        !after.iter().any(|m| m["type"] == "position"),
        "a held request has no position: {after:?}"
    );
    // The seat version in a snapshot is the one deltas have been sent up to: the
    // hold's delta is either in it or is the next seat message.
    let mut version_after = after.last().unwrap()["version"].as_u64().unwrap();
    if version_after <= version_before {
        let delta = next_of(&mut socket, "seats").await;
        version_after = delta["version"].as_u64().unwrap();
        let seats: Vec<&Value> = delta["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["seat_id"])
            .collect();
        for seat in status["seats"].as_array().unwrap() {
            assert!(seats.contains(&seat), "{delta}");
        }
    }
    assert!(
        version_after > version_before,
        "the hold moved the seat version: {version_before} → {version_after}"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn another_fans_hold_arrives_as_a_seat_delta_matching_the_seat_map(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let watcher = minted_fan_token();
    let mut socket = app.live(&event, &watcher, None).await;
    let start = snapshot(&mut socket, false).await;
    let version = start.last().unwrap()["version"].as_u64().unwrap();

    let buyer = minted_fan_token();
    app.join(&event, &buyer, json!({"seats": ["Floor-A-3", "Floor-A-4"]}))
        .await;
    let (stop, worker) = app.start_worker();
    let delta = next_of(&mut socket, "seats").await;
    stop.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");

    assert!(delta["version"].as_u64().unwrap() > version, "{delta}");
    let mut changes: Vec<(String, String)> = delta["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["seat_id"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("Floor-A-3".to_owned(), "held".to_owned()),
            ("Floor-A-4".to_owned(), "held".to_owned())
        ]
    );

    // The seat map names its version; once it shows the hold, it is at least the
    // delta's (it may lag by up to its refresh interval, never lead wrongly).
    let mut seen = 0;
    for _ in 0..100 {
        let response = app.get(&format!("/v1/events/{event}/seats"), None).await;
        seen = response
            .headers()
            .get("onsale-seats-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("the seat map names its version");
        let seats: Vec<Value> = response.json().await.expect("json");
        let held = seats
            .iter()
            .filter(|s| s["seat_id"] == "Floor-A-3" || s["seat_id"] == "Floor-A-4")
            .all(|s| s["state"] == "held");
        if held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen >= delta["version"].as_u64().unwrap());
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_paused_sale_is_pushed_and_the_fan_keeps_the_place(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (admin, event) = app.opened_event().await;
    let token = minted_fan_token();
    let request = app.join(&event, &token, json!({"quantity": 1})).await;
    let mut socket = app.live(&event, &token, Some(&request)).await;
    let start = snapshot(&mut socket, true).await;
    let position = start.iter().find(|m| m["type"] == "position").unwrap()["position"].clone();

    let paused = app
        .post(
            &format!("/v1/ops/events/{event}/pause"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(paused.status(), StatusCode::OK);
    let sale = next_of(&mut socket, "sale").await;
    assert_eq!(sale["state"], "paused");
    let status: Value = app
        .get(&format!("/v1/requests/{request}"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "queued");
    assert_eq!(status["position"], position);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn refusals_are_plain_http_answers_with_codes(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let owner = minted_fan_token();
    let request = app.join(&event, &owner, json!({"quantity": 1})).await;

    let (status, body) = app.refused(app.live_url(&event, ""), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );

    let (status, body) = app
        .refused(app.live_url(&event, "access_token=not.a.token"), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    // The signature's first character carries six whole bits of its first byte, so
    // changing it always changes the signature (its last one carries only four, and a
    // swap there can leave the decoded bytes as they were).
    let genuine = minted_fan_token();
    let forged = {
        let token = &genuine;
        let signature = token.rfind('.').expect("a JWT has three parts") + 1;
        let first = &token[signature..=signature];
        let swapped = if first == "A" { "B" } else { "A" };
        format!(
            "{}{swapped}{}",
            &token[..signature],
            &token[signature + 1..]
        )
    };
    assert_ne!(
        forged, genuine,
        "the forged token differs from the minted one"
    );
    let (status, body) = app.refused(app.live_url(&event, ""), Some(&forged)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app
        .refused(
            app.live_url(&unknown.to_string(), &format!("access_token={owner}")),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("event_not_found"))
    );

    let stranger = minted_fan_token();
    let (status, body) = app
        .refused(
            app.live_url(
                &event,
                &format!("access_token={stranger}&request_id={request}"),
            ),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    let (status, body) = app
        .refused(
            app.live_url(
                &event,
                &format!("access_token={owner}&request_id={unknown}"),
            ),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("request_not_found"))
    );

    let (status, body) = app
        .refused(
            app.live_url(&event, &format!("access_token={owner}&request_id=nope")),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );

    // A plain GET, not an upgrade.
    let response = app
        .get(&format!("/v1/events/{event}/live"), Some(&owner))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "not_a_websocket").await;

    // The REST fallback answers the same facts, with the same refusals.
    let response = app
        .get(
            &format!("/v1/events/{event}/live/snapshot?request_id={request}"),
            Some(&stranger),
        )
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let snapshot: Value = app
        .get(
            &format!("/v1/events/{event}/live/snapshot?request_id={request}"),
            Some(&owner),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["sale"]["state"], "open");
    assert_eq!(snapshot["request"]["state"], "queued");
    assert_eq!(snapshot["position"]["position"], 1);
    assert!(snapshot["seats_version"].is_u64());
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn bad_frames_get_an_error_and_a_close_code(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let token = minted_fan_token();

    // A text message: told, and the socket stays open.
    let mut socket = app.live(&event, &token, None).await;
    snapshot(&mut socket, false).await;
    socket
        .send(Message::text("{\"type\":\"hello\"}"))
        .await
        .unwrap();
    let error = next_of(&mut socket, "error").await;
    assert_eq!(error["code"], "invalid_message");
    socket
        .send(Message::Ping(Bytes::from_static(b"still there?")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(&pong[..], b"still there?");

    // A binary frame: told, then closed with 1003.
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let error = next_of(&mut socket, "error").await;
    assert_eq!(error["code"], "unsupported_frame");
    assert_eq!(close_code(&mut socket).await, CloseCode::Unsupported);

    // An oversized frame: closed with 1009.
    let mut socket = app.live(&event, &token, None).await;
    snapshot(&mut socket, false).await;
    socket
        .send(Message::text("x".repeat(64 * 1024)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, CloseCode::Size);
}

/// Reads until the server's Close frame and returns its code.
async fn close_code(socket: &mut Socket) -> CloseCode {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code,
                Some(Ok(Message::Close(None))) => panic!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("socket failed before its close frame: {error}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    })
    .await
    .expect("a close frame in time")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_peer_that_never_answers_a_ping_is_dropped(pool: PgPool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = crate::support::helpers::spawn_app_with(pool, |config| {
        config.live.refresh_seconds = 1;
        config.live.pings_every = 1;
        config.live.idle_seconds = 2;
    })
    .await;
    let (_admin, event) = app.opened_event().await;
    let token = minted_fan_token();
    // A raw connection: after the handshake it reads bytes but never answers a
    // ping (a WebSocket library would answer on its own).
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let handshake = format!(
        "GET /v1/events/{event}/live?access_token={token} HTTP/1.1\r\nHost: {address}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server never dropped the silent peer");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // Server frames are unmasked: a ping is 0x89, a close 0x88 with its code first.
    let body = &received[text.find("\r\n\r\n").unwrap() + 4..];
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= body.len() {
        let (opcode, len) = (body[at] & 0x0f, usize::from(body[at + 1] & 0x7f));
        let (len, header) = match len {
            126 => (
                usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]])),
                4,
            ),
            127 => panic!("no frame here is that large"),
            n => (n, 2),
        };
        frames.push((opcode, body[at + header..at + header + len].to_vec()));
        at += header + len;
    }
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "pinged first: {frames:?}"
    );
    let (_, close) = frames.last().expect("frames");
    assert_eq!(frames.last().unwrap().0, 0x8, "ends with a close frame");
    assert_eq!(
        u16::from_be_bytes([close[0], close[1]]),
        1008,
        "policy: no pong"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_account_holds_a_few_sockets_and_a_chatty_peer_is_closed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let token = minted_fan_token();

    // Ten sockets for one account (the default), each counted while it lives.
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut socket = app.live(&event, &token, None).await;
        snapshot(&mut socket, false).await;
        open.push(socket);
    }
    let (status, body) = app.refused(app.live_url(&event, ""), Some(&token)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{body}"
    );
    // Another account is not held back.
    let mut other = app.live(&event, &minted_fan_token(), None).await;
    snapshot(&mut other, false).await;
    // One closed, one may open again.
    let mut closing = open.pop().expect("a socket");
    closing.close(None).await.expect("close");
    while closing.next().await.is_some() {}
    let mut again = tokio::time::timeout(PATIENCE, async {
        loop {
            let ticket: Value = app
                .post(
                    &format!("/v1/events/{event}/live/ticket"),
                    Some(&token),
                    &json!({}),
                )
                .await
                .json()
                .await
                .expect("ticket");
            let url = app.live_url(
                &event,
                &format!("ticket={}", ticket["ticket"].as_str().expect("ticket")),
            );
            if let Ok((socket, _)) = tokio_tungstenite::connect_async(url).await {
                return socket;
            }
            // The server counts the closed socket out as its task ends.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot freed by the closed socket");
    snapshot(&mut again, false).await;

    // A peer that keeps talking is told once, then closed (1008), not answered.
    let first = &mut again;
    for _ in 0..61 {
        first
            .send(Message::text("{\"type\":\"hello\"}"))
            .await
            .unwrap();
    }
    let mut errors = 0;
    let code = tokio::time::timeout(PATIENCE, async {
        loop {
            match first.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).expect("json");
                    if message["type"] == "error" {
                        errors += 1;
                    }
                }
                Some(Ok(Message::Close(Some(frame)))) => return frame.code,
                Some(Ok(_)) => continue,
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!((code, errors), (CloseCode::Policy, 1));
}
