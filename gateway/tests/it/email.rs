//! From a checkout to the fan's inbox, end to end: the gateway, a booking worker,
//! the outbox relay, a real Kafka-protocol broker (`KAFKA_BROKERS`), the notifier
//! and an SMTP sink, all in this process on the test's own database and topics.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::helpers::*;
use crate::support::mail::*;
use crate::support::sale::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_paid_checkout_sends_one_confirmation_with_its_seats_and_amount(pool: PgPool) {
    let app = spawn_app(pool).await;
    let pipeline = pipeline(&app, &brokers()).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (email, token, request, status) =
        registered_fan_holding(&app, &event, &json!({"quantity": 2, "section": "Balcony"})).await;
    let seats: Vec<String> = status["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| s.as_str().expect("seat").to_owned())
        .collect();

    let order: Value = pay(&app, &token, &request, PAID, Some("pay")).await;
    assert_eq!(order["state"], "paid");
    let (confirmation, _) = wait_for_mail(&pipeline.sink, &email, "your tickets").await;
    let text = confirmation.part("text/plain").expect("a text part");
    let html = confirmation.part("text/html").expect("an html part");
    for body in [&text, &html] {
        assert!(body.contains("Test Show"), "the event is named: {body}");
        for seat in &seats {
            // "Balcony-A-1" reads "Section Balcony, row A, seat 1".
            let mut parts = seat.splitn(3, '-');
            let (section, row, number) = (parts.next(), parts.next(), parts.next());
            let named = format!(
                "Section {}, row {}, seat {}",
                section.unwrap_or_default(),
                row.unwrap_or_default(),
                number.unwrap_or_default()
            );
            assert!(body.contains(&named), "seat {seat} is named: {body}");
        }
        assert!(
            body.contains("198.00"),
            "the amount (2 × 99.00) is stated: {body}"
        );
    }
    // The hold's email came first; each is sent once, whatever Kafka redelivers.
    wait_until_quiet(&app).await;
    let messages = pipeline.sink.messages();
    assert_eq!(mails_to(&messages, &email, "your tickets").len(), 1);
    assert_eq!(
        messages.iter().filter(|m| m.to.contains(&email)).count(),
        2,
        "held, then paid"
    );
    let sold: Value = app.get_json(&format!("/v1/events/{event}"), None).await;
    assert!(sold["sold"].as_u64().is_some_and(|n| n >= 2), "{sold}");

    // Each ticket is in the email as an inline QR (referenced from the HTML) that
    // reads back, with an independent decoder, as the ticket's code; the door
    // admits that code.
    let order_id = order["order_id"].as_str().expect("order id");
    let order: Value = app
        .get_json(&format!("/v1/orders/{order_id}"), Some(&token))
        .await;
    let mut codes: Vec<String> = order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["code"].as_str().expect("code").to_owned())
        .collect();
    let images = confirmation.binary_parts("image/png");
    assert_eq!(images.len(), 2, "a QR per ticket");
    let mut read: Vec<String> = images
        .iter()
        .map(|(cid, png)| {
            let cid = cid.as_deref().expect("an inline image has a Content-ID");
            assert!(html.contains(&format!("cid:{cid}")), "the HTML shows {cid}");
            testkit::qr::decode_png(png).expect("the QR reads back")
        })
        .collect();
    codes.sort();
    read.sort();
    assert_eq!(read, codes);
    assert!(text.contains(&codes[0]), "the text part carries the codes");
    let admin = app.admin_token().await;
    let scanned: Value = app
        .post(
            &format!("/v1/events/{event}/scans"),
            Some(&admin),
            &json!({"scans": [{"scan_id": uuid::Uuid::new_v4(), "code": read[0],
                "direction": "entry", "scanned_at": chrono::Utc::now(), "device_id": "Gate A"}]}),
        )
        .await
        .json()
        .await
        .expect("scan results");
    assert_eq!(scanned["results"][0]["result"], "admitted", "{scanned}");

    // The invoice rides along as a PDF that a PDF reader reads as this order's.
    let invoice: Value = app
        .get_json(&format!("/v1/orders/{order_id}/invoice"), Some(&token))
        .await;
    let number = invoice["invoice_number"].as_str().expect("invoice number");
    let pdfs = confirmation.binary_parts("application/pdf");
    assert_eq!(pdfs.len(), 1, "the invoice is attached");
    let attached = crate::money::pdf_text(&pdfs[0].1);
    assert!(attached.contains(number), "{number} in:\n{attached}");
    assert!(attached.contains("198.00"), "the total in:\n{attached}");

    // An operator refunds the ticket that did not come in: the fan's email says how
    // much comes back and attaches the credit note.
    let other = order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .find(|t| t["code"] != read[0].as_str())
        .expect("the other ticket")["ticket_id"]
        .clone();
    let refunded = app
        .post(
            &format!("/v1/ops/orders/{order_id}/refunds"),
            Some(&admin),
            &json!({"reason": "seat view blocked", "ticket_ids": [other]}),
        )
        .await;
    assert_eq!(refunded.status(), reqwest::StatusCode::ACCEPTED);
    let refund: Value = refunded.json().await.expect("refund");
    let note = refund["credit_note_number"]
        .as_str()
        .expect("a credit note");
    let (refund_mail, _) = wait_for_mail(&pipeline.sink, &email, "refund of").await;
    let text = refund_mail.part("text/plain").expect("a text part");
    assert!(text.contains("99.00") && text.contains(note), "{text}");
    let pdfs = refund_mail.binary_parts("application/pdf");
    assert_eq!(pdfs.len(), 1, "the credit note is attached");
    let attached = crate::money::pdf_text(&pdfs[0].1);
    assert!(
        attached.contains(note) && attached.contains(number),
        "{attached}"
    );
    stop.cancel();
    pipeline.stop.cancel();
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_late_webhook_after_expiry_sends_a_refund_email(pool: PgPool) {
    // The refund under test is the late webhook's: the reconciler, which would void
    // the pending charge first and take another path, stays out of the way. The hold
    // is long enough to start paying on a loaded machine (a 2 s hold once ran out
    // between "held" and the checkout).
    let app = spawn_app_with(pool, |config| {
        config.payments.paying_grace_seconds = 1;
        config.payments.reconcile_after_seconds = 3600;
    })
    .await;
    let pipeline = pipeline(&app, &brokers()).await;
    let (_, event, stop) = open_sale(&app, 8).await;
    let (email, token, request, _) =
        registered_fan_holding(&app, &event, &json!({"quantity": 1, "section": "Floor"})).await;
    let order: Value = pay(&app, &token, &request, PENDING, None).await;
    assert_eq!(order["state"], "pending", "{order}");
    wait_for_state(&app, &token, &request, &["expired"]).await;
    let order_id = order["order_id"].as_str().expect("order_id");
    let late = webhook(
        &app,
        &json!({"id": "wh_late", "type": "payment.succeeded", "order_id": order_id}),
        WEBHOOK_SECRET,
        chrono::Utc::now().timestamp(),
    )
    .await;
    assert_eq!(late.status(), StatusCode::OK);

    let (refund, _) = wait_for_mail(&pipeline.sink, &email, "refund").await;
    let text = refund.part("text/plain").expect("a text part");
    assert!(text.contains("45.00"), "how much comes back: {text}");
    wait_until_quiet(&app).await;
    let messages = pipeline.sink.messages();
    assert_eq!(mails_to(&messages, &email, "refund").len(), 1);
    assert!(
        mails_to(&messages, &email, "your tickets").is_empty(),
        "nothing was sold"
    );
    stop.cancel();
    pipeline.stop.cancel();
}

/// `onsale_notifier_consumers_replaced_total` as the process's metrics have it.
async fn consumers_replaced(app: &TestApp) -> u64 {
    let text = app.metrics().await;
    text.lines()
        .find(|l| l.starts_with("onsale_notifier_consumers_replaced_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_broker_restarts_between_the_outbox_write_and_the_publish_and_the_email_arrives_once(
    pool: PgPool,
) {
    let mut broker = testkit::PrivateBroker::start();
    let app = spawn_app(pool).await;
    let pipeline = pipeline(&app, &broker.address()).await;
    let (_, event, stop) = open_sale(&app, 600).await;
    let (email, token, request, _) =
        registered_fan_holding(&app, &event, &json!({"quantity": 1, "section": "Floor"})).await;
    // The relay and the notifier work: the hold's email arrives.
    wait_for_mail(&pipeline.sink, &email, "held").await;

    // The broker dies; the sale is written to the outbox meanwhile and cannot leave.
    let replaced_before = consumers_replaced(&app).await;
    broker.kill();
    let order: Value = pay(&app, &token, &request, PAID, Some("pay")).await;
    assert_eq!(
        order["state"], "paid",
        "checkout does not wait for the broker"
    );
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox.messages WHERE request_id = $1::uuid AND published_at IS NULL",
    )
    .bind(&request)
    .fetch_one(&app.pool)
    .await
    .expect("outbox");
    assert_eq!(
        waiting, 2,
        "request.confirmed and order.paid wait in the outbox"
    );

    // The notifier has noticed (it replaces its consumer, see notifier::consumer),
    // as it would during any real restart, which takes longer than this.
    let started = tokio::time::Instant::now();
    while consumers_replaced(&app).await <= replaced_before {
        assert!(
            started.elapsed() < WAIT,
            "the notifier never noticed the broker go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It comes back empty (its topics were in memory): the relay makes them again,
    // publishes, and the notifier, which was consuming before, mails once.
    broker.restart();
    let (confirmation, _) = wait_for_mail(&pipeline.sink, &email, "your tickets").await;
    assert!(
        confirmation
            .part("text/plain")
            .is_some_and(|t| t.contains("45.00"))
    );
    wait_until_quiet(&app).await;
    let messages = pipeline.sink.messages();
    assert_eq!(mails_to(&messages, &email, "your tickets").len(), 1);
    assert_eq!(
        mails_to(&messages, &email, "held").len(),
        1,
        "the hold's email was not sent again"
    );
    stop.cancel();
    pipeline.stop.cancel();
}
