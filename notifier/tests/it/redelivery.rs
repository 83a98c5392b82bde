//! Exactly once as the fan sees it: redelivered records, a notifier that dies
//! between the email and its offset, and one that died in the middle of a send.

use std::time::Duration;

use bus::ConsumerOptions;
use bus::rdkafka::consumer::Consumer;
use bus::rdkafka::{Message, Offset, TopicPartitionList};
use notifier::deliver::Sleep;
use proto::wire::events::Envelope;

use crate::helpers::{WAIT, world};

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_same_envelope_delivered_twice_emails_once(pool: sqlx::PgPool) {
    let world = world(pool, "Twice Told").await;
    let app = world.spawn().await;
    let paid = world.order("order.paid", 2000, "EUR");
    let later = world.order("order.refunded", 2000, "EUR");
    world.produce(&paid).await;
    world.produce(&paid).await;
    world.produce(&later).await;

    // `later` comes after both copies on the same topic's one partition: once it is
    // here, both copies have been dealt with.
    world.sink.wait_for(2, WAIT).await.expect("two emails");
    assert_eq!(world.emails_for(&paid).len(), 1);
    assert_eq!(world.emails_for(&later).len(), 1);
    assert_eq!(world.sink.messages().len(), 2);
    app.stop().await;
}

fn options(group: &str) -> ConsumerOptions {
    ConsumerOptions {
        session_timeout: Duration::from_secs(6),
        ..ConsumerOptions::new(group)
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_graceful_shutdown_commits_the_offset_of_what_was_sent(pool: sqlx::PgPool) {
    let world = world(pool, "Clean Exit").await;
    let app = world.spawn().await;
    let paid = world.order("order.paid", 1500, "EUR");
    world.produce(&paid).await;
    world.sink.wait_for(1, WAIT).await.expect("the email");
    world.row_reaches(&paid, "sent").await;
    app.stop().await;

    let consumer = bus::consumer(&world.kafka, &options(&world.group)).expect("consumer");
    let topic = proto::topics::with_suffix(proto::topics::ORDERS, &world.kafka.topic_suffix);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    let offset = committed.find_partition(&topic, 0).map(|p| p.offset());
    assert_eq!(offset, Some(Offset::Offset(1)));
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_notifier_that_dies_before_storing_its_offset_sends_no_second_email(pool: sqlx::PgPool) {
    let world = world(pool, "Crash Course").await;
    let paid = world.order("order.paid", 3000, "GBP");
    world.produce(&paid).await;

    // The first instance: a member of the group that receives the record, sends the
    // email and writes the log, then dies without storing or committing the offset.
    {
        let config = world.config();
        let consumer = bus::consumer(&world.kafka, &options(&world.group)).expect("consumer");
        let topic = proto::topics::with_suffix(proto::topics::ORDERS, &world.kafka.topic_suffix);
        consumer.subscribe(&[&topic]).expect("subscribe");
        let record = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("the record in time")
            .expect("the record");
        let envelope: Envelope = serde_json::from_slice(record.payload().unwrap()).unwrap();
        assert_eq!(envelope.id, paid.id);
        let notifier = notifier::Notifier::new(&config, world.pool.clone()).expect("notifier");
        assert_eq!(
            notifier.process(&envelope, None, &mut Sleep).await,
            Some(notifier::Done::Sent)
        );
    }
    assert_eq!(
        world.sink.wait_for(1, WAIT).await.expect("the email").len(),
        1
    );

    // The second instance, in the same group, is handed the record again.
    let app = world.spawn().await;
    // On the same topic and partition, so it is consumed after the redelivery.
    let later = world.order("order.paid", 500, "GBP");
    world.produce(&later).await;
    world.sink.wait_for(2, WAIT).await.expect("the next email");
    assert_eq!(
        world.emails_for(&paid).len(),
        1,
        "no second email for the paid order"
    );
    assert_eq!(world.emails_for(&later).len(), 1);
    let (status, attempts, _) = world.row(&paid).await.unwrap();
    assert_eq!((status.as_str(), attempts), ("sent", 1));
    app.stop().await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_send_cut_short_by_a_crash_is_sent_again_under_the_same_message_id(pool: sqlx::PgPool) {
    let world = world(pool, "Second Chance").await;
    let paid = world.order("order.paid", 1000, "EUR");
    // What a crash between the SMTP conversation and the `sent` write leaves behind.
    sqlx::query(
        "INSERT INTO notifier.notifications
             (envelope_id, event_id, request_id, fan_id, kind, recipient, subject, message_id,
              status, attempts, occurred_at)
         VALUES ($1, $2, $3, $4, 'order.paid', $5, 'Your tickets', $6, 'sending', 1, $7)",
    )
    .bind(paid.id)
    .bind(paid.event_id)
    .bind(paid.request_id)
    .bind(world.fan)
    .bind(&world.fan_email)
    .bind(format!("<{}@onsale>", paid.id))
    .bind(paid.occurred_at)
    .execute(&world.pool)
    .await
    .unwrap();

    let app = world.spawn().await;
    world.produce(&paid).await;
    world.sink.wait_for(1, WAIT).await.expect("the email");
    // Sent again rather than assumed sent, under the Message-ID of the first try.
    assert_eq!(world.emails_for(&paid).len(), 1);
    let (_, attempts, _) = world.row_reaches(&paid, "sent").await;
    assert_eq!(attempts, 2);
    app.stop().await;
}
