//! The outbox relay against the real Postgres (a database per test) and a real
//! Kafka-protocol broker (`KAFKA_BROKERS`, topics of the test's own).

use std::collections::BTreeMap;
use std::time::Duration;

use bus::ConsumerOptions;
use bus::rdkafka::Message;
use bus::rdkafka::consumer::Consumer;
use platform::outbox::{self, Message as OutboxMessage};
use platform::settings::KafkaSettings;
use proto::wire::events::{Envelope, EventType};
use proto::{EventId, RequestId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn kafka() -> KafkaSettings {
    KafkaSettings {
        brokers: std::env::var("KAFKA_BROKERS").expect(
            "KAFKA_BROKERS must name a Kafka-protocol broker; run the tests through deploy/test",
        ),
        topic_suffix: format!("test{}", uuid::Uuid::new_v4().simple()),
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_relay_publishes_each_sales_events_in_order_once_and_marks_them(pool: PgPool) {
    platform::runtime::init_test_tracing();
    let kafka = kafka();
    // Three sales' events, interleaved, written in many transactions as the
    // services write them: 300 records on the bookings topic.
    let events: Vec<EventId> = (0..3).map(|_| EventId::new()).collect();
    let mut written: BTreeMap<EventId, Vec<u32>> = BTreeMap::new();
    for batch in 0..30u32 {
        let mut tx = pool.begin().await.expect("tx");
        let messages: Vec<OutboxMessage> = (0..10u32)
            .map(|i| {
                let n = batch * 10 + i;
                let event = events[(n % 3) as usize];
                written.entry(event).or_default().push(n);
                OutboxMessage::new(
                    EventType::RequestHeld,
                    event,
                    Some(RequestId::new()),
                    &serde_json::json!({"n": n}),
                )
            })
            .collect();
        outbox::write(&mut tx, &messages).await.expect("outbox");
        tx.commit().await.expect("commit");
    }

    let stop = CancellationToken::new();
    let relay = tokio::spawn(payments::relay::run(
        pool.clone(),
        kafka.clone(),
        stop.clone(),
    ));
    let consumer = bus::consumer(
        &kafka,
        &ConsumerOptions {
            session_timeout: Duration::from_secs(6),
            ..ConsumerOptions::new(format!("group-{}", kafka.topic_suffix))
        },
    )
    .expect("consumer");
    let topic = proto::topics::with_suffix(proto::topics::BOOKINGS, &kafka.topic_suffix);
    // The relay creates the topics; subscribing to one not there yet is retried.
    let started = tokio::time::Instant::now();
    let mut received: BTreeMap<EventId, Vec<u32>> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    consumer.subscribe(&[&topic]).expect("subscribe");
    while received.values().map(Vec::len).sum::<usize>() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "received {received:?}"
        );
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let Ok(message) = message else { continue };
        let envelope: Envelope =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("an envelope");
        assert_eq!(
            message.key(),
            Some(envelope.event_id.to_string().as_bytes()),
            "keyed by the sale"
        );
        assert_eq!(envelope.kind, "request.held");
        assert_eq!(envelope.schema_version, 1);
        assert!(envelope.request_id.is_some());
        assert!(ids.insert(envelope.id), "{} delivered twice", envelope.id);
        let n = envelope.payload["n"].as_u64().expect("n") as u32;
        received.entry(envelope.event_id).or_default().push(n);
    }
    assert_eq!(
        received, written,
        "each sale's events arrive in the order written"
    );
    // Every record is marked published, once the batch's acknowledgements are in.
    let started = tokio::time::Instant::now();
    loop {
        let unpublished = payments::relay::backlog(&pool).await.expect("backlog");
        if unpublished == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{unpublished} unpublished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    relay.await.expect("relay");
}

/// How many backends wait for a lock while writing the outbox.
async fn outbox_writers_waiting(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO outbox.messages%'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

/// Writes `message` in a transaction of its own and commits, in a task; then waits
/// until that task has committed or waits for a lock (one writer more than the
/// `waiting` before it). True when it committed.
async fn commit_beside(
    pool: &PgPool,
    messages: Vec<OutboxMessage>,
    waiting: i64,
) -> (bool, tokio::task::JoinHandle<()>) {
    let task = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.expect("tx");
            outbox::write(&mut tx, &messages).await.expect("outbox");
            tx.commit().await.expect("commit");
        }
    });
    let started = std::time::Instant::now();
    loop {
        if task.is_finished() {
            return (true, task);
        }
        if outbox_writers_waiting(pool).await > waiting {
            return (false, task);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second writer neither committed nor waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn one_orders_records_are_numbered_in_the_order_their_transactions_commit(pool: PgPool) {
    let event = EventId::new();
    let order = Some(RequestId::new());
    let record = |n: u32, request: Option<RequestId>| {
        OutboxMessage::new(
            EventType::RequestHeld,
            event,
            request,
            &serde_json::json!({"n": n}),
        )
    };
    // The first transaction writes its record and is slow to commit; a second one,
    // for the same order, writes meanwhile.
    let mut first = pool.begin().await.expect("tx");
    outbox::write(&mut first, &[record(1, order)])
        .await
        .expect("outbox");
    let (committed_first, second) = commit_beside(&pool, vec![record(2, order)], 0).await;
    assert!(
        !committed_first,
        "the second record of the order committed before the first: the relay would publish it first"
    );
    // A record of another order does not wait.
    let (other_committed, other) =
        commit_beside(&pool, vec![record(3, Some(RequestId::new()))], 1).await;
    assert!(other_committed, "a record of another order waited");
    other.await.expect("other");
    first.commit().await.expect("commit");
    second.await.expect("second");

    // The relay reads by seq: the order's records in the order they committed.
    let by_seq: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload->>'n')::bigint FROM outbox.messages WHERE request_id = $1 ORDER BY seq",
    )
    .bind(order)
    .fetch_all(&pool)
    .await
    .expect("outbox");
    assert_eq!(by_seq, [1, 2]);

    // A write of many orders at once (a sale closed on its whole pre-queue) locks
    // the event whole: it waits for the order written meanwhile, and is not refused
    // for want of lock slots.
    let mut small = pool.begin().await.expect("tx");
    outbox::write(&mut small, &[record(4, order)])
        .await
        .expect("outbox");
    let many: Vec<OutboxMessage> = (0..2_000)
        .map(|_| record(5, Some(RequestId::new())))
        .collect();
    let (bulk_committed, bulk) = commit_beside(&pool, many, 0).await;
    assert!(
        !bulk_committed,
        "the bulk write did not wait for the order's"
    );
    small.commit().await.expect("commit");
    bulk.await.expect("bulk");
    let last_of_order: i64 =
        sqlx::query_scalar("SELECT max(seq) FROM outbox.messages WHERE request_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .expect("seq");
    let first_of_bulk: i64 =
        sqlx::query_scalar("SELECT min(seq) FROM outbox.messages WHERE payload->>'n' = '5'")
            .fetch_one(&pool)
            .await
            .expect("seq");
    assert!(last_of_order < first_of_bulk);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn delivered_records_and_old_webhook_ids_are_purged_after_the_retention(pool: PgPool) {
    let event = EventId::new();
    let mut tx = pool.begin().await.expect("tx");
    let records: Vec<OutboxMessage> = (0..4u32)
        .map(|n| {
            OutboxMessage::new(
                EventType::RequestHeld,
                event,
                None,
                &serde_json::json!({"n": n}),
            )
        })
        .collect();
    outbox::write(&mut tx, &records).await.expect("outbox");
    tx.commit().await.expect("commit");
    // #0 published eight days ago, #1 an hour ago, #2 never (for eight days), #3 never.
    sqlx::query(
        "UPDATE outbox.messages SET
             published_at = CASE payload->>'n' WHEN '0' THEN now() - interval '8 days'
                                              WHEN '1' THEN now() - interval '1 hour' END,
             occurred_at = now() - interval '8 days'
         WHERE event_id = $1",
    )
    .bind(event)
    .execute(&pool)
    .await
    .expect("age");
    sqlx::query(
        "INSERT INTO payments.webhooks (webhook_id, order_id, kind, received_at)
         VALUES ('old', gen_random_uuid(), 'payment.succeeded', now() - interval '8 days'),
                ('new', gen_random_uuid(), 'payment.succeeded', now() - interval '1 hour')",
    )
    .execute(&pool)
    .await
    .expect("webhooks");

    let purged = payments::retention::purge(&pool, Duration::from_secs(7 * 86_400))
        .await
        .expect("purge");
    assert_eq!(
        purged,
        payments::retention::Purged {
            outbox: 1,
            webhooks: 1
        }
    );
    let left: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload->>'n')::bigint FROM outbox.messages WHERE event_id = $1 ORDER BY seq",
    )
    .bind(event)
    .fetch_all(&pool)
    .await
    .expect("outbox");
    assert_eq!(left, [1, 2, 3], "only the record delivered long ago goes");
    let webhooks: Vec<String> =
        sqlx::query_scalar("SELECT webhook_id FROM payments.webhooks ORDER BY webhook_id")
            .fetch_all(&pool)
            .await
            .expect("webhooks");
    assert_eq!(webhooks, ["new"]);
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_relay_stops_at_once_when_no_broker_answers(pool: PgPool) {
    // Nothing listens on port 1: the admin client would wait for its own timeouts,
    // and a stop (SIGTERM) must not wait with it.
    let kafka = KafkaSettings {
        brokers: "127.0.0.1:1".into(),
        topic_suffix: String::new(),
    };
    let stop = CancellationToken::new();
    let relay = tokio::spawn(payments::relay::run(pool, kafka, stop.clone()));
    // Time for the relay to be inside its topic check, which (unreachable broker)
    // would not return for tens of seconds; what is asserted is how soon it stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), relay)
        .await
        .expect("the relay stopped within 3 s of its stop")
        .expect("the relay task");
}
