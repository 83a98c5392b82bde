//! SMTP down for a while, down for longer than the alert time (nothing is lost),
//! and refusing one recipient for good.

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
async fn smtp_down_past_the_alert_time_loses_no_email_and_says_it_is_stuck(pool: sqlx::PgPool) {
    let world = world(pool, "Long Night").await;
    world.sink.set_mode(Mode::Refuse);
    let mut config = world.config();
    config.retry.alert_after_seconds = 1;
    let app = world.spawn_with(config).await;
    let first = world.order("order.paid", 1250, "EUR");
    // Same topic, one partition: `second` waits behind `first`.
    let second = world.order("order.paid", 990, "EUR");
    world.produce(&first).await;
    world.produce(&second).await;

    // Well past the alert time, the paid confirmation is still being tried (it
    // used to be written off as dead here), and the notifier says it is stuck.
    let metrics_url = format!("http://127.0.0.1:{}/metrics", app.port);
    let started = std::time::Instant::now();
    loop {
        let metrics = reqwest::get(&metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let stuck = metrics
            .lines()
            .find_map(|l| l.strip_prefix("onsale_email_stuck_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if stuck >= 2.0 {
            break;
        }
        assert!(started.elapsed() < WAIT, "never reported stuck: {metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM notifier.notifications WHERE envelope_id = $1")
            .bind(first.id)
            .fetch_optional(&world.pool)
            .await
            .expect("row");
    assert_ne!(
        status.as_deref(),
        Some("dead"),
        "written off during an outage"
    );
    assert!(world.sink.messages().is_empty());

    // SMTP is back: both go out, in order, once each, and the alarm clears.
    world.sink.set_mode(Mode::Accept);
    let caught = world.sink.wait_for(2, WAIT).await.expect("both emails");
    assert_eq!(
        caught[0].message_id(),
        Some(format!("<{}@onsale>", first.id))
    );
    assert_eq!(
        caught[1].message_id(),
        Some(format!("<{}@onsale>", second.id))
    );
    let (_, attempts, _) = world.row_reaches(&first, "sent").await;
    assert!(attempts > 2, "attempts = {attempts}");
    world.row_reaches(&second, "sent").await;
    let metrics = reqwest::get(&metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l == "onsale_email_stuck_seconds 0"),
        "{metrics}"
    );
    app.stop().await;
    assert_eq!(world.emails_for(&first).len(), 1);
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
