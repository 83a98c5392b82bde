//! A broker restart that loses every topic (tansu with `memory://` storage): the
//! notifier keeps going, creates its topics again and delivers what comes next. It
//! starts (and kills) a broker of its own: `tansu` must be installed (`deploy/test`
//! installs it).
//!
//! The bundled librdkafka (2.12.1) can die with SIGSEGV in
//! `rd_kafka_metadata_update_op` (a `strcmp` on a NULL topic name) when a consumer
//! that knew the lost topics fetches from the restarted broker
//! (cf. confluentinc/librdkafka#5280); the notifier replaces its consumer when every
//! broker is gone, and the test, like a real restart, lets it notice first.

use std::time::{Duration, Instant};

use bus::rdkafka::producer::FutureRecord;

use crate::helpers::{WAIT, world_on};

/// How many times the notifiers of this process replaced their consumer.
fn consumers_replaced() -> u64 {
    platform::runtime::metrics()
        .render()
        .lines()
        .find(|l| l.starts_with("onsale_notifier_consumers_replaced_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_notifier_survives_a_broker_restart_that_loses_its_topics(pool: sqlx::PgPool) {
    let mut broker = testkit::PrivateBroker::start();
    let world = world_on(pool, "Encore", broker.address()).await;
    let app = world.spawn().await;
    let before = world.order("order.paid", 1000, "EUR");
    world.produce(&before).await;
    world.sink.wait_for(1, WAIT).await.expect("the first email");

    let replaced = consumers_replaced();
    broker.kill();
    let started = Instant::now();
    while consumers_replaced() <= replaced {
        assert!(
            started.elapsed() < WAIT,
            "the notifier never noticed the broker go"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.restart();
    // A fresh producer: the restarted broker knows nothing of the old one. Its record
    // waits in the producer until the topic exists again, which the notifier sees to.
    let producer = bus::producer(&world.kafka).expect("producer");
    let after = world.order("order.paid", 2000, "EUR");
    let topic = proto::topics::with_suffix(proto::topics::ORDERS, &world.kafka.topic_suffix);
    let (key, value) = (
        after.event_id.to_string(),
        serde_json::to_string(&after).unwrap(),
    );
    producer
        .send(
            FutureRecord::to(&topic).key(&key).payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered to the restarted broker");

    world
        .sink
        .wait_for(2, WAIT)
        .await
        .expect("the email after the restart");
    assert_eq!(world.emails_for(&after).len(), 1);
    app.stop().await;
}
