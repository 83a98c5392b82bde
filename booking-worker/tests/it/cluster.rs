//! On a Redis Cluster whose master dies (no replica to take over), only the events
//! whose slot that master owned stop: the others' fans go on joining and finding
//! their requests, and the stopped events take joins again once it is back. With a
//! replica, it takes the dead master's slots and the line goes on where it was.

use std::time::{Duration, Instant};

use proto::UserId;
use sqlx::PgPool;
use testkit::PrivateRedisCluster;

use crate::helpers::{Sale, fast_settings, one_seat_each, sale, start};

/// Waits until the ledger has decided all `requests`, stops the worker, and checks
/// that no seat of the 20 is held twice and that Redis agrees with Postgres.
async fn all_decided_each_seat_once(
    sale: &Sale,
    requests: usize,
    stop: tokio_util::sync::CancellationToken,
    worker: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    sale.wait_for(Duration::from_secs(60), "every request decided", |o| {
        o.values().sum::<i64>() == requests as i64
    })
    .await;
    stop.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");
    sale.assert_no_seat_held_twice(20).await;
    sale.assert_redis_agrees_with_ledger().await;
}

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

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_replica_takes_over_a_dead_master_and_the_line_goes_on(pool: PgPool) {
    let mut cluster = PrivateRedisCluster::start_with_replicas(1);
    let url = cluster.url();
    let mut sale = small_sale(&pool, &url).await;
    // The line moves slowly while the master dies: a worker drains it throughout.
    sale.set_admission(4).await;
    let (stop, worker) = start(sale.worker("failover", fast_settings()));
    let ask = one_seat_each(1).remove(0);
    let mut before = Vec::new();
    for _ in 0..8 {
        before.push(sale.join(UserId::new(), &ask).await.expect("a join"));
    }
    sale.wait_for(Duration::from_secs(20), "a first hold", |o| {
        o.get("held").copied().unwrap_or(0) > 0
    })
    .await;
    let master = cluster.port_of(&sale.keys.sale(sale.event_id));
    // Replication is asynchronous: what a failover may lose is documented
    // (docs/SCALING.md); here every write has reached the replica first.
    cluster.wait_for_replica(master);

    cluster.kill(master);
    let started = Instant::now();
    let after = loop {
        match sale.join(UserId::new(), &ask).await {
            Ok(joined) => break joined,
            Err(error) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "no replica took over the event's slot within 30 s: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let promoted = cluster.port_of(&sale.keys.sale(sale.event_id));
    assert_ne!(promoted, master, "the slot moved to the replica");
    eprintln!(
        "failover: joins answered again {:.1} s after the master was killed",
        started.elapsed().as_secs_f64()
    );

    // The line is as it was: every earlier fan's request with its number, and the
    // new fan behind them all.
    let mut redis = sale.redis.clone();
    for joined in &before {
        let status = platform::reads::request_status(
            &mut redis,
            &sale.keys,
            sale.event_id,
            joined.request_id,
        )
        .await
        .expect("a status")
        .expect("the request survived the failover");
        assert_eq!(status.queue_number, joined.queue_number);
    }
    let last = before.iter().filter_map(|j| j.queue_number).max();
    assert!(
        after.queue_number > last,
        "the new join ({:?}) is numbered behind the earlier ones ({last:?})",
        after.queue_number
    );

    // The worker's drainer lost its master with the line half drained; it (or its
    // successor, once the lease ran out) decides every request, each seat once.
    let joins = before.len() + 1;
    all_decided_each_seat_once(&sale, joins, stop, worker).await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_event_s_slot_moved_to_another_master_mid_sale_loses_nothing(pool: PgPool) {
    let cluster = PrivateRedisCluster::start();
    let url = cluster.url();
    let mut sale = small_sale(&pool, &url).await;
    sale.set_admission(20).await;
    let (stop, worker) = start(sale.worker("resharded", fast_settings()));
    let from = cluster.port_of(&sale.keys.sale(sale.event_id));
    let to = *cluster
        .ports()
        .iter()
        .find(|p| **p != from)
        .expect("another master");

    // Fans join through a joiner, as a gateway's do, and ask again with the same
    // key when a call fails, while the slot moves under them.
    let joiner = waiting_room::joins::Joiner::start(
        sale.pool.clone(),
        sale.redis.clone(),
        sale.keys.clone(),
        None,
    );
    let ask = one_seat_each(1).remove(0);
    let fans = 40;
    let joining = {
        let (joiner, event) = (joiner.clone(), sale.event_id);
        tokio::spawn(async move {
            let mut joined = Vec::new();
            let mut retries = 0;
            for n in 0..fans {
                let (fan, key) = (UserId::new(), format!("reshard-{n}"));
                loop {
                    match joiner.join(event, fan, &ask, Some(&key)).await {
                        Ok(answer) => break joined.push(answer),
                        Err(error) => {
                            retries += 1;
                            assert!(retries < 500, "joins kept failing: {error}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (joined, retries)
        })
    };
    sale.wait_for(Duration::from_secs(20), "a first hold", |o| {
        o.get("held").copied().unwrap_or(0) > 0
    })
    .await;
    let moved = tokio::task::spawn_blocking({
        let key = sale.keys.sale(sale.event_id);
        move || {
            let moved = cluster.move_slot(&key, to);
            (cluster, moved)
        }
    })
    .await
    .expect("the move");
    let (cluster, moved) = moved;
    let (joined, retries) = joining.await.expect("the fans");
    eprintln!("reshard: {moved} keys moved mid-sale; {retries} join calls tried again");
    assert_eq!(
        cluster.port_of(&sale.keys.sale(sale.event_id)),
        to,
        "the slot is on its new master"
    );

    // Every fan has one request with its own number, every request is decided,
    // each seat once, and Redis agrees with Postgres.
    let mut numbers: Vec<u64> = joined.iter().filter_map(|j| j.queue_number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        fans,
        "{fans} fans, {fans} distinct queue numbers"
    );
    all_decided_each_seat_once(&sale, fans, stop, worker).await;
}

/// Joins `fans` new fans through `joiner`, one after another; the queue numbers
/// of those answered, and how many were refused.
async fn join_fans(
    joiner: &waiting_room::joins::Joiner,
    sale: &Sale,
    fans: usize,
) -> (Vec<u64>, usize) {
    let ask = one_seat_each(1).remove(0);
    let (mut numbers, mut refused) = (Vec::new(), 0);
    for _ in 0..fans {
        match joiner.join(sale.event_id, UserId::new(), &ask, None).await {
            Ok(joined) => numbers.push(joined.queue_number.expect("a number after the on-sale")),
            Err(_) => refused += 1,
        }
    }
    (numbers, refused)
}

/// The failover that loses writes: fans join, the event master's replica freezes
/// and is cut off (replication stops; nobody waits for it), more fans join, the master dies and
/// the replica, thawed, takes its slots with the line as it was before the freeze.
/// Then the old master comes back as a replica and more fans join. Returns every
/// queue number a fan was given, in order, and how many joins were refused.
async fn failover_losing_writes(
    pool: &PgPool,
    durability: impl FnOnce(&str) -> waiting_room::joins::Durability,
) -> (Vec<u64>, usize) {
    let mut cluster = PrivateRedisCluster::start_with_replicas(1);
    let url = cluster.url();
    let sale = small_sale(pool, &url).await;
    let joiner = waiting_room::joins::Joiner::start_with(
        sale.pool.clone(),
        sale.redis.clone(),
        sale.keys.clone(),
        None,
        durability(&url),
    );
    let master = cluster.port_of(&sale.keys.sale(sale.event_id));
    let replica = cluster.replica_of(master);

    let (mut given, mut refused) = join_fans(&joiner, &sale, 6).await;
    // Frozen, and cut off: the master's next writes reach no replica (a frozen
    // replica's socket would still take them in and apply them once thawed).
    cluster.pause(replica);
    cluster.cut_replicas_of(master);
    let (numbers, no) = join_fans(&joiner, &sale, 4).await;
    given.extend(numbers);
    refused += no;
    cluster.kill(master);
    cluster.resume(replica);
    // Until the replica has taken the slot (joins refused meanwhile).
    let started = Instant::now();
    while cluster.port_of(&sale.keys.sale(sale.event_id)) == master {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replica never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again(master);
        cluster
    })
    .await
    .expect("the old master is back");
    // Fans join until six are answered (the old master, now a replica, syncs first).
    let started = Instant::now();
    let mut after = Vec::new();
    while after.len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "joins were refused for a minute after the failover"
        );
        let (numbers, no) = join_fans(&joiner, &sale, 1).await;
        after.extend(numbers);
        if no > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    given.extend(after);
    drop(cluster);
    (given, refused)
}

fn duplicates(numbers: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::BTreeSet::new();
    numbers
        .iter()
        .filter(|n| !seen.insert(**n))
        .copied()
        .collect()
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn without_waiting_for_a_replica_a_failover_hands_queue_numbers_out_twice(pool: PgPool) {
    // The hazard, shown: joins told their numbers while the replica was frozen are
    // lost with the master, the counter rolls back, and the next fans get the
    // same numbers.
    let (given, refused) =
        failover_losing_writes(&pool, |_| waiting_room::joins::Durability::default()).await;
    assert_eq!(refused, 0, "nothing waits, nothing is refused");
    assert!(
        !duplicates(&given).is_empty(),
        "the failover lost no number: {given:?}"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn waiting_for_a_replica_no_failover_hands_a_queue_number_out_twice(pool: PgPool) {
    let (given, refused) = failover_losing_writes(&pool, |url| waiting_room::joins::Durability {
        replicas: 1,
        timeout: Duration::from_millis(300),
        store: Some(platform::store::Store::open(url).expect("url")),
    })
    .await;
    // The joins made while the replica was frozen were refused (their fans ask
    // again), and every number told to a fan was told once.
    assert_eq!(refused, 4, "{given:?}");
    assert_eq!(duplicates(&given), Vec::<u64>::new(), "{given:?}");
    assert_eq!(given.len(), 12);
    assert!(
        given.windows(2).all(|w| w[0] < w[1]),
        "numbers in order of joining: {given:?}"
    );
}
