//! The farm keeps going round: past an event it cannot drain, with an honest
//! readiness answer, and past a dead-lettered request whose fan may ask again.

#[allow(unused_imports, reason = "the promises share one set of imports")]
use super::*;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_worker_that_cannot_drain_an_event_keeps_going_round(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 4, 4).await;
    sale.open().await;
    // Blocking reads get their own connection; this worker cannot open one.
    let worker = booking_worker::Worker {
        store: platform::store::Store::open("redis://127.0.0.1:1").expect("url"),
        ..sale.worker("w", fast_settings())
    };
    let health = worker.health.clone();
    let (stop, task) = start(worker);
    eventually(Duration::from_secs(30), "five discovery rounds", || {
        let rounds = health.rounds();
        async move { (rounds >= 5).then_some(()) }
    })
    .await;
    assert!(
        !task.is_finished(),
        "the worker loop ended on one event's failure"
    );
    assert!(
        health
            .since_last_tick()
            .is_some_and(|since| since < Duration::from_secs(5))
    );
    stop.cancel();
    task.await.expect("join").expect("worker");
}

#[tokio::test]
async fn readiness_fails_with_503_and_says_why() {
    let ops = platform::runtime::OpsServer::bind("127.0.0.1:0".parse().expect("addr"), "test")
        .await
        .expect("bind")
        .with_readiness(|| Box::pin(async { Err("redis: connection refused".to_owned()) }));
    let port = ops.port();
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(ops.run(stop.clone().cancelled_owned()));
    let client = reqwest::Client::new();
    let live = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status(), 200);
    let ready = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["message"], "redis: connection refused");
    stop.cancel();
    served.await.expect("join").expect("served");
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_dead_lettered_request_ends_rejected_and_its_fan_may_ask_again(pool: PgPool) {
    let mut sale = sale(pool, &redis_url(), &["Floor"], 1, 10, 4).await;
    sale.open().await;
    let fan = UserId::new();
    let poisoned = sale
        .join(fan, &best(1, None))
        .await
        .expect("join")
        .request_id;
    let _: () = redis::cmd("HSET")
        .arg(sale.keys.request(sale.event_id, poisoned))
        .arg("qty")
        .arg("many")
        .query_async(&mut sale.redis)
        .await
        .expect("poison");
    let (stop, task) = start(sale.worker("w", fast_settings()));
    sale.wait_for(Duration::from_secs(30), "the poisoned request ended", |o| {
        o.get("rejected").copied().unwrap_or(0) == 1
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("worker");
    assert_eq!(
        ledger_row(&sale, poisoned).await,
        Some(("rejected".into(), Some("dead_letter".into())))
    );
    let seen = status(&sale, poisoned).await;
    assert_eq!(
        (seen.state, seen.reason.as_deref()),
        (RequestState::Rejected, Some("dead_letter"))
    );
    // The fan is no longer bound to it.
    sale.join(fan, &best(1, None))
        .await
        .expect("the fan joins again");
}
