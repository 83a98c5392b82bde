//! The node's live messages ride one sharded subscription: however many events a
//! node follows, Redis sees one subscription connection (per shard), each channel
//! is subscribed on the shard that owns the event, a lost connection comes back by
//! itself, and a channel nobody follows is let go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::store::{Redis, Store};
use proto::wire::live::Published;
use proto::{EventId, Keys};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::slow_reader::event;

fn hub(pool: &PgPool, store: Store, redis: Redis) -> Arc<realtime::Hub> {
    realtime::Hub::new(
        store,
        redis,
        pool.clone(),
        Keys::new(format!("test:{}", uuid::Uuid::new_v4().simple())),
        realtime::Settings::default(),
    )
}

/// Waits (at most 10 s) until `check` holds, asking again every 20 ms.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the feed's line shows `served`.
async fn sees_served(line: &mut watch::Receiver<realtime::feed::Line>, served: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while line.borrow_and_update().served < served {
            line.changed().await.expect("the feed is running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the feed never saw served = {served}"));
}

async fn publish(redis: &mut Redis, keys: &Keys, event: EventId, served: u64) -> i64 {
    Published::Batch {
        served,
        decided: Vec::new(),
    }
    .publish(keys, event)
    .query_async(redis)
    .await
    .expect("SPUBLISH")
}

async fn connected_clients(redis: &mut Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(redis)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients")
}

/// The node's shard channels; none while the connection is being made again.
async fn shard_channels(redis: &mut Redis) -> Vec<String> {
    redis::cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .query_async(redis)
        .await
        .unwrap_or_default()
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_node_follows_many_events_on_one_connection_and_lets_them_go(pool: PgPool) {
    // A Redis of its own: its client count is this test's alone.
    let server = testkit::PrivateRedis::start();
    let store = Store::open(&server.url()).expect("url");
    let redis = store.shared().await.expect("redis");
    let hub = hub(&pool, store, redis.clone());
    let mut probe = Redis::connect(&server.url()).await.expect("probe");
    let before = connected_clients(&mut probe).await;

    let mut events = Vec::new();
    for _ in 0..25 {
        events.push(event(&pool).await);
    }
    let mut feeds = Vec::new();
    for &event in &events {
        feeds.push(hub.feed(event).await.expect("a feed"));
    }
    // 25 events: every channel subscribed (each feed's task subscribes as it
    // starts), on one more connection than before (before: the hub's shared
    // connection and this probe).
    eventually("25 channels subscribed", || {
        let mut probe = probe.clone();
        async move { shard_channels(&mut probe).await.len() == 25 }
    })
    .await;
    assert_eq!(
        connected_clients(&mut probe).await,
        before + 1,
        "one subscription connection for every feed"
    );

    // A message reaches its feed, and only its feed.
    let keys = hub.keys().clone();
    let (mut first, mut second) = (feeds[0].line(), feeds[1].line());
    assert_eq!(publish(&mut probe, &keys, events[0], 7).await, 1);
    sees_served(&mut first, 7).await;
    assert_eq!(second.borrow_and_update().served, 0);

    // Feeds nobody holds end, and their channels are unsubscribed.
    drop((first, second));
    feeds.truncate(5);
    eventually("20 channels let go", || {
        let mut probe = probe.clone();
        async move { shard_channels(&mut probe).await.len() == 5 }
    })
    .await;
    feeds.clear();
    eventually("every channel let go", || {
        let mut probe = probe.clone();
        async move { shard_channels(&mut probe).await.is_empty() }
    })
    .await;
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_subscription_comes_back_after_redis_restarts_and_the_sockets_resync(pool: PgPool) {
    let mut server = testkit::PrivateRedis::start();
    let store = Store::open(&server.url()).expect("url");
    let redis = store.shared().await.expect("redis");
    let hub = hub(&pool, store, redis.clone());
    let keys = hub.keys().clone();
    let event = event(&pool).await;
    let feed = hub.feed(event).await.expect("a feed");
    let mut line = feed.line();
    let resync_before = line.borrow_and_update().resync;
    let mut probe = Redis::connect(&server.url()).await.expect("probe");
    let channel = keys.live(event);
    eventually("the channel subscribed", || {
        let (mut probe, channel) = (probe.clone(), channel.clone());
        async move { shard_channels(&mut probe).await.contains(&channel) }
    })
    .await;

    // Every connection cut at once.
    server.stop();
    server.start_again();

    // The subscription comes back by itself.
    eventually("the channel subscribed again", || {
        let (mut probe, channel) = (probe.clone(), channel.clone());
        async move { shard_channels(&mut probe).await.contains(&channel) }
    })
    .await;
    assert_eq!(publish(&mut probe, &keys, event, 11).await, 1);
    sees_served(&mut line, 11).await;
    // Messages may have been lost while it was down: every socket re-read.
    assert!(
        line.borrow().resync > resync_before,
        "the sockets were told to resync"
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_events_messages_stay_on_the_shard_that_owns_it(pool: PgPool) {
    let cluster = testkit::PrivateRedisCluster::start();
    let store = Store::open(&cluster.url()).expect("url");
    let mut redis = store.shared().await.expect("redis");
    let hub = hub(&pool, store, redis.clone());
    let keys = hub.keys().clone();
    let event = event(&pool).await;
    let feed = hub.feed(event).await.expect("a feed");
    let mut line = feed.line();

    let channel = keys.live(event);
    let owner = cluster.port_of(&channel);
    let on_owner = Redis::connect(&format!("redis://127.0.0.1:{owner}"))
        .await
        .expect("owner");
    eventually("the channel subscribed", || {
        let (mut node, channel) = (on_owner.clone(), channel.clone());
        async move { shard_channels(&mut node).await.contains(&channel) }
    })
    .await;
    for &port in cluster.ports() {
        let mut node = Redis::connect(&format!("redis://127.0.0.1:{port}"))
            .await
            .expect("node");
        let channels = shard_channels(&mut node).await;
        assert_eq!(
            channels.contains(&channel),
            port == owner,
            "node {port} (owner {owner}) has {channels:?}"
        );
    }
    // Published through the cluster connection (routed to the owner), heard.
    assert_eq!(publish(&mut redis, &keys, event, 5).await, 1);
    sees_served(&mut line, 5).await;
}
