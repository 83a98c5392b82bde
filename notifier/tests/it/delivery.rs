//! What the emails say, and that each goes out once.

use crate::helpers::{WAIT, world};

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_order_paid_event_emails_the_fan_once_with_event_seats_and_amount(pool: sqlx::PgPool) {
    let world = world(pool, "Rock <Night> & Day").await;
    let app = world.spawn().await;
    let paid = world.order("order.paid", 1250, "EUR");
    world.produce(&paid).await;

    let caught = world.sink.wait_for(1, WAIT).await.expect("the email");
    assert_eq!(caught.len(), 1);
    let email = &caught[0];
    assert_eq!(email.to, vec![world.fan_email.clone()]);
    assert_eq!(email.from, "tickets@onsale.local");
    assert_eq!(email.message_id(), Some(format!("<{}@onsale>", paid.id)));
    assert_eq!(
        email.subject().as_deref(),
        Some("Your tickets for Rock <Night> & Day")
    );
    assert!(
        email
            .header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        email.data
    );
    let text = email.part("text/plain").expect("a text part");
    let html = email.part("text/html").expect("an html part");
    for needle in [
        "Section Floor, row R3, seat 7",
        "Section Floor, row R3, seat 8",
        "€12.50",
        "4242",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
        assert!(html.contains(needle), "{needle} in {html}");
    }
    assert!(text.contains("Rock <Night> & Day"), "{text}");
    assert!(html.contains("Rock &lt;Night&gt; &amp; Day"), "{html}");
    assert!(!html.contains("<Night>"));
    let link = format!("http://tickets.test/e/{}", world.event_id);
    assert!(text.contains(&link) && html.contains(&link));

    let (status, attempts, error) = world.row_reaches(&paid, "sent").await;
    assert_eq!((status.as_str(), attempts, error), ("sent", 1, None));
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", app.port))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"onsale_emails_total{kind="order.paid",outcome="sent"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("onsale_email_lag_seconds"), "{metrics}");
    let health = reqwest::get(format!("http://127.0.0.1:{}/readyz", app.port))
        .await
        .expect("readyz");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    app.stop().await;
    assert_eq!(world.sink.messages().len(), 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn refund_and_hold_emails_say_what_happened_and_other_events_are_skipped(pool: sqlx::PgPool) {
    let world = world(pool, "Jazz Brunch").await;
    let app = world.spawn().await;
    let held = world.request("request.held");
    let released = world.request("request.released");
    let refunded = world.order("order.refunded", 4599, "USD");
    world.produce(&held).await;
    world.produce(&released).await;
    world.produce(&refunded).await;

    world.sink.wait_for(2, WAIT).await.expect("two emails");
    let held_email = world.emails_for(&held).pop().expect("the hold email");
    let subject = held_email.subject().unwrap();
    assert_eq!(
        subject,
        "Your seats for Jazz Brunch are held until 18:45 UTC on 1 Dec 2026"
    );
    let text = held_email.part("text/plain").unwrap();
    assert!(
        text.contains("held for you until 18:45 UTC on 1 Dec 2026"),
        "{text}"
    );
    assert!(text.contains("Section Balcony, row B, seat 12"), "{text}");
    assert!(
        text.contains(&format!("http://tickets.test/e/{}", world.event_id)),
        "{text}"
    );
    assert!(
        held_email
            .part("text/html")
            .unwrap()
            .contains("18:45 UTC on 1 Dec 2026")
    );

    let refund_email = world.emails_for(&refunded).pop().expect("the refund email");
    assert_eq!(
        refund_email.subject().as_deref(),
        Some("Refund of $45.99 for Jazz Brunch")
    );
    for part in ["text/plain", "text/html"] {
        let body = refund_email.part(part).unwrap();
        assert!(body.contains("refunded the full amount"), "{body}");
        assert!(body.contains("$45.99"), "{body}");
        assert!(
            body.contains("after your hold on the seats had ended"),
            "{body}"
        );
        assert!(body.contains("not sold to you"), "{body}");
    }

    let (_, attempts, _) = world.row_reaches(&released, "skipped").await;
    assert_eq!(attempts, 0);
    assert!(world.emails_for(&released).is_empty());
    app.stop().await;
}
