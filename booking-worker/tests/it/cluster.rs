//! On a Redis Cluster whose master dies (no replica to take over), only the events
//! whose slot that master owned stop: the others' fans go on joining and finding
//! their requests, and the stopped events take joins again once it is back.

use std::time::{Duration, Instant};

use proto::UserId;
use sqlx::PgPool;
use testkit::PrivateRedisCluster;

use crate::helpers::{Sale, one_seat_each, sale};

async fn small_sale(pool: &PgPool, url: &str) -> Sale {
    let mut sale = sale(pool.clone(), url, &["A"], 1, 20, 4).await;
    sale.open().await;
    sale
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_dead_master_stops_only_the_events_it_owns(pool: PgPool) {
    let mut cluster = PrivateRedisCluster::start();
    let url = cluster.url();
    let stopped = small_sale(&pool, &url).await;
    let dead = cluster.port_of(&stopped.keys.sale(stopped.event_id));
    // Events until one lives on another master (each event is one slot).
    let mut going = small_sale(&pool, &url).await;
    while cluster.port_of(&going.keys.sale(going.event_id)) == dead {
        going = small_sale(&pool, &url).await;
    }
    let ask = one_seat_each(1).remove(0);

    cluster.kill(dead);
    // Fans of the other event join, and find their requests, while the master is
    // down: the request index of some of them lived on it, the journal answers.
    for _ in 0..10 {
        let joined = going
            .join(UserId::new(), &ask)
            .await
            .expect("a join on a live master");
        let mut redis = going.redis.clone();
        let event = waiting_room::requests::event_of(
            &mut redis,
            &going.keys,
            &going.pool,
            joined.request_id,
        )
        .await
        .expect("the request's event");
        assert_eq!(event, going.event_id);
    }
    assert!(
        stopped.join(UserId::new(), &ask).await.is_err(),
        "a join for an event on the dead master fails"
    );

    cluster.start_again(dead);
    let started = Instant::now();
    loop {
        match stopped.join(UserId::new(), &ask).await {
            Ok(_) => break,
            Err(error) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the event's master is back but joins still fail: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
