//! SMTP down for a while, down for good, and refusing one recipient for good.

use crate::helpers::{WAIT, world};
use notifier::sink::Mode;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn smtp_refusing_for_a_while_delays_the_email_and_it_arrives_once(pool: sqlx::PgPool) {
    let world = world(pool, "Patience").await;
    world.sink.set_mode(Mode::Refuse);
    let app = world.spawn().await;
    let paid = world.order("order.paid", 1250, "EUR");
    world.produce(&paid).await;

    world
        .sink
        .wait_for_refusals(3, WAIT)
        .await
        .expect("the notifier keeps trying");
    assert!(world.sink.messages().is_empty());
    world.sink.set_mode(Mode::Accept);

    world.sink.wait_for(1, WAIT).await.expect("the email");
    let (status, attempts, error) = world.row_reaches(&paid, "sent").await;
    assert_eq!(status, "sent");
    assert!(attempts > 1, "attempts = {attempts}");
    assert_eq!(error, None);
    app.stop().await;
    assert_eq!(world.emails_for(&paid).len(), 1);
    assert_eq!(world.sink.messages().len(), 1);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn smtp_down_past_the_give_up_time_writes_a_dead_letter_and_moves_on(pool: sqlx::PgPool) {
    let world = world(pool, "Lost Cause").await;
    world.sink.set_mode(Mode::Refuse);
    let mut config = world.config();
    config.retry.give_up_after_seconds = 2;
    let app = world.spawn_with(config).await;
    let first = world.order("order.paid", 1250, "EUR");
    // Same topic, one partition: `second` waits behind `first`.
    let second = world.order("order.paid", 990, "EUR");
    world.produce(&first).await;
    world.produce(&second).await;

    let (_, attempts, error) = world.row_reaches(&first, "dead").await;
    assert!(attempts > 1, "attempts = {attempts}");
    let error = error.expect("the last error");
    assert!(error.contains("421") || error.contains("451"), "{error}");
    world.sink.set_mode(Mode::Accept);

    let caught = world.sink.wait_for(1, WAIT).await.expect("the next email");
    assert_eq!(
        caught[0].message_id(),
        Some(format!("<{}@onsale>", second.id))
    );
    world.row_reaches(&second, "sent").await;
    app.stop().await;
    assert!(world.emails_for(&first).is_empty());
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_permanent_refusal_writes_a_dead_letter_at_once(pool: sqlx::PgPool) {
    let world = world(pool, "No Such Box").await;
    world.sink.set_mode(Mode::Reject);
    let app = world.spawn().await;
    let first = world.order("order.paid", 1250, "EUR");
    world.produce(&first).await;

    let (_, attempts, error) = world.row_reaches(&first, "dead").await;
    assert_eq!(attempts, 1, "a 5xx is not retried");
    assert!(
        error.as_deref().unwrap_or_default().contains("550"),
        "{error:?}"
    );

    world.sink.set_mode(Mode::Accept);
    let second = world.order("order.paid", 990, "EUR");
    world.produce(&second).await;
    let caught = world.sink.wait_for(1, WAIT).await.expect("the next email");
    assert_eq!(
        caught[0].message_id(),
        Some(format!("<{}@onsale>", second.id))
    );
    app.stop().await;
}
